"""A closed-loop load generator built on Triton's own async client (tritonclient.http.aio, .grpc.aio).

`concurrency` tasks, each sending its next inference request as soon as its last is answered: one
encoded image as a BYTES tensor, the top 5 asked for through the classification extension on the
`probabilities` output, every answer checked to hold 5 classes. It runs as a process of its own
(`python -m vitserve.bench.triton_client ...`, started by `run_triton_client`), so that its CPU is
read from the kernel apart from the server's, and prints wrk's summary (bench/wrk.py) as one JSON line.

The `classify` protocol is the control: the same loop on aiohttp, the HTTP library under
tritonclient.http.aio, posting a request body as given to vitserve's /classify and checking its JSON
answer's top 5. A Python client takes a share of the server's cores that wrk does not; against the
control, the v2 routes are compared with /classify under a client of like cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitserve.bench.wrk import WrkResult, parse_summary, run_generator

TOP_K = 5
OUTPUT = "probabilities"
PROTOCOLS = ("http", "grpc", "classify")
CLASSIFY_PATH = f"/classify?top_k={TOP_K}"


@dataclass
class Tally:
    latencies_us: list[float] = field(default_factory=list)
    status: int = 0  # answered with an error, or with an answer of the wrong shape
    read: int = 0  # no answer: the connection failed


class _Classify:
    """The control's client: an aiohttp session posting one body to /classify, answering like `infer`."""

    def __init__(self, url: str, body: bytes, content_type: str) -> None:
        import aiohttp

        self.url, self.body = f"http://{url}{CLASSIFY_PATH}", body
        self.headers = {"Content-Type": content_type}
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024))

    async def infer(self) -> bool:
        async with self.session.post(self.url, data=self.body, headers=self.headers) as response:
            answer = await response.read()
            return response.status == 200 and len(json.loads(answer)["top_k"]) == TOP_K

    async def close(self) -> None:
        await self.session.close()


def _client(protocol: str, url: str, own_connection: bool = False) -> Any:
    if protocol == "http":
        import tritonclient.http.aio as thttp

        return thttp.InferenceServerClient(url, conn_limit=1024)
    import tritonclient.grpc.aio as tgrpc
    from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE

    if not own_connection:
        return tgrpc.InferenceServerClient(url)
    # Channels to one address otherwise share grpc's global subchannel pool, and so one connection.
    sizes = [(f"grpc.max_{way}_message_length", MAX_GRPC_MESSAGE_SIZE) for way in ("send", "receive")]
    return tgrpc.InferenceServerClient(url, channel_args=[*sizes, ("grpc.use_local_subchannel_pool", 1)])


def _request(protocol: str, image: bytes, shape: list[int]) -> tuple[list[Any], list[Any]]:
    """The request's inputs and outputs, built once and sent unchanged by every call."""
    if protocol == "http":
        import tritonclient.http.aio as thttp

        http_input = thttp.InferInput("image", shape, "BYTES")
        http_input.set_data_from_numpy(np.array([image], dtype=np.object_).reshape(shape), binary_data=True)
        return [http_input], [thttp.InferRequestedOutput(OUTPUT, binary_data=False, class_count=TOP_K)]
    import tritonclient.grpc.aio as tgrpc

    grpc_input = tgrpc.InferInput("image", shape, "BYTES")
    grpc_input.set_data_from_numpy(np.array([image], dtype=np.object_).reshape(shape))
    return [grpc_input], [tgrpc.InferRequestedOutput(OUTPUT, class_count=TOP_K)]


async def closed_loop(args: argparse.Namespace) -> dict[str, int]:
    from tritonclient.utils import InferenceServerException

    # aiohttp opens a connection per request in flight; gRPC multiplexes a channel's calls on one.
    channels = 1 if args.protocol != "grpc" else max(1, args.channels)
    lost: tuple[type[Exception], ...] = (OSError,)
    if args.protocol != "grpc":
        import aiohttp

        lost = (OSError, aiohttp.ClientError)
    body = args.image.read_bytes()
    if args.protocol == "classify":
        clients: list[Any] = [_Classify(args.url, body, args.content_type)]

        async def infer(client: Any) -> bool:
            return bool(await client.infer())

    else:
        clients = [_client(args.protocol, args.url, channels > 1) for _ in range(channels)]
        inputs, outputs = _request(args.protocol, body, args.shape)

        async def infer(client: Any) -> bool:
            result = await client.infer(args.model, inputs, outputs=outputs)
            return bool(result.as_numpy(OUTPUT).shape[-1] == TOP_K)

    tally = Tally()
    deadline = time.perf_counter() + args.duration_s

    async def user(client: Any) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                ok = await infer(client)
            except InferenceServerException:
                ok = False
            except lost:
                tally.read += 1
                continue
            finished = time.perf_counter()
            if finished > deadline:
                return  # answered after the end: not counted, as wrk does not
            if ok:
                tally.latencies_us.append(1e6 * (finished - started))
            else:
                tally.status += 1

    started, cpu_started = time.perf_counter(), time.process_time()
    users = [asyncio.ensure_future(user(clients[i % channels])) for i in range(args.concurrency)]
    try:
        # At the end the requests still out are abandoned, as wrk abandons them: waiting for their
        # answers would bill the server's CPU for images the run does not count.
        await asyncio.wait(users, timeout=max(0.0, deadline - time.perf_counter()))
    finally:
        for task in users:
            task.cancel()
        await asyncio.gather(*users, return_exceptions=True)
    duration_us = 1e6 * min(time.perf_counter() - started, args.duration_s)
    cpu_us = 1e6 * (time.process_time() - cpu_started)  # every thread's, grpc's own included
    for client in clients:
        await client.close()
    latencies = np.array(tally.latencies_us or [0.0])
    return {
        "requests": len(tally.latencies_us) + tally.status,
        "duration_us": round(duration_us),
        "connect": 0,
        "read": tally.read,
        "write": 0,
        "status": tally.status,
        "timeout": 0,
        "p50_us": round(float(np.percentile(latencies, 50))),
        "p99_us": round(float(np.percentile(latencies, 99))),
        "max_us": round(float(latencies.max())),
        "cpu_us": round(cpu_us),
    }


def run_triton_client(
    protocol: str,
    url: str,
    model: str,
    image: bytes,
    shape: tuple[int, ...],
    concurrency: int,
    duration_s: float,
    channels: int = 1,
    content_type: str = "",
) -> WrkResult:
    """`concurrency` closed-loop users of tritonclient's `protocol` client on `url` (host:port), a
    gRPC client's users spread over `channels` connections; for `classify`, `image` is the request
    body posted to /classify, of `content_type`."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    with tempfile.TemporaryDirectory(prefix="vitserve-tc-") as tmp:
        path = Path(tmp) / "image"
        path.write_bytes(image)
        command = [sys.executable, "-m", "vitserve.bench.triton_client", protocol, url, model, str(path)]
        command += ["--shape", *map(str, shape), "--concurrency", str(concurrency)]
        command += ["--duration-s", f"{duration_s:g}"]
        command += ["--channels", str(channels), "--content-type", content_type]
        out, cpu_s = run_generator(command, dict(os.environ), f"tritonclient ({protocol})")
    return parse_summary(out, concurrency, cpu_s, f"tritonclient ({protocol})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("protocol", choices=PROTOCOLS)
    parser.add_argument("url", help="host:port")
    parser.add_argument("model", help="its name (ignored by classify)")
    parser.add_argument("image", type=Path, help="an encoded image, sent as is (classify: the request body)")
    parser.add_argument("--shape", type=int, nargs="+", default=[1], help="of the BYTES input")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration-s", type=float, default=1.0)
    parser.add_argument("--channels", type=int, default=1, help="gRPC: connections the users share")
    parser.add_argument("--content-type", default="", help="classify: the request body's")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(closed_loop(args))))


if __name__ == "__main__":
    main()
