"""bench/triton_client.py's load client: each of its gRPC channels is a connection of its own, and the
control (aiohttp on /classify) counts only answers that hold the top 5 as served."""

from __future__ import annotations

import asyncio

import psutil

from vitserve.bench.triton_client import _client, run_triton_client
from vitserve.bench.wrk import Upload
from vitserve.harness.servers import SAMPLES_DIR, running_server


def test_each_grpc_channel_of_the_load_client_is_a_connection_of_its_own() -> None:
    with running_server() as server:
        port = int(server.env["VITSERVE_GRPC_PORT"])
        url = f"127.0.0.1:{port}"

        async def connections(own: int, default: int) -> int:
            clients = [_client("grpc", url, own_connection=True) for _ in range(own)]
            clients += [_client("grpc", url) for _ in range(default)]
            try:
                for client in clients:
                    assert await client.is_server_live()
                return sum(
                    1
                    for c in psutil.Process().net_connections("tcp")
                    if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
                )
            finally:
                for client in clients:
                    await client.close()

        assert asyncio.run(connections(own=3, default=0)) == 3
        # Without the local pool, channels to one address share one connection (why the bench needs it).
        assert asyncio.run(connections(own=0, default=2)) == 1


def test_the_control_counts_answers_and_refusals_apart() -> None:
    image = (SAMPLES_DIR / "0_0000.png").read_bytes()
    upload = Upload.multipart("image", "0_0000.png", image, "image/png")
    with running_server() as server:
        url = f"127.0.0.1:{server.port}"
        served = run_triton_client(
            "classify", url, "", upload.body, (1,), 2, 1.0, content_type=upload.content_type
        )
        assert served.requests > 0 and served.failed == 0
        # Bytes that are no image: /classify answers 400, which the control must not count as served.
        junk = Upload.multipart("image", "junk.png", b"not an image", "image/png")
        refused = run_triton_client(
            "classify", url, "", junk.body, (1,), 2, 1.0, content_type=junk.content_type
        )
        assert refused.requests > 0 and refused.failed == refused.requests
