"""bench/triton_client.py's load client: each of its gRPC channels is a connection of its own."""

from __future__ import annotations

import asyncio

import psutil

from vitserve.bench.triton_client import _client
from vitserve.harness.servers import running_server


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
