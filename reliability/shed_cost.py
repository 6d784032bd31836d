"""What one shed request costs the server: the front door alone behind uvicorn, flooded with 429s.

    .venv/bin/python -m reliability.shed_cost [--rates 500 1000] [--seconds 5]

Serves the front door (`service/web/door.py`) around an app that must never be reached, with a refusal for
every request, from uvicorn (uvloop + httptools, as the workers run) pinned to CPU 0; the load
generator (harness/load.py) runs pinned to CPU 1. Prints the server's CPU per request: the
floor under what a rejection costs an API worker, for comparison with a served request.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import sys
import time
from typing import Any

import psutil
import uvicorn
import uvloop

from vitserve.bench.processes import free_port
from vitserve.harness.load import open_loop
from vitserve.service.flow.errors import Answer
from vitserve.service.web.door import FrontDoor, Scope

FULL = Answer(
    429,
    {"error": "overloaded", "message": "this worker is at its limit of 128 images in flight"},
    {"Retry-After": "1"},
)


class AlwaysFull:
    """A direct endpoint with no room, ever, and a request log that keeps nothing."""

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        raise AssertionError("the door let a classify request through")

    def refusal(self, path: str, requests_in_progress: int) -> Answer:
        return FULL

    def request_done(self, scope: Scope, status: int, seconds: float) -> None:
        pass


async def behind_the_door(scope: Any, receive: Any, send: Any) -> None:
    """Answers the load generator's connection-opening GETs; a classify POST must never get here."""
    if scope["type"] == "http" and scope["method"] == "POST":
        raise AssertionError("the door let a classify request through")
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def serve(port: int) -> None:
    os.sched_setaffinity(0, {0})
    door = FrontDoor(timeout_s=60).in_front_of(behind_the_door)
    door.open(frozenset({"/classify"}), AlwaysFull(), AlwaysFull())
    uvicorn.run(door, host="127.0.0.1", port=port, log_level="warning", http="httptools", loop="uvloop")


def wait_listening(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {port} after {timeout_s} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", nargs="+", type=float, default=[500.0, 1000.0], help="requests/s offered")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        parser.error("needs two CPUs: one for the server, one for the load generator")
    port = free_port()
    server = multiprocessing.Process(target=serve, args=(port,), daemon=True)
    server.start()
    try:
        wait_listening(port)
        os.sched_setaffinity(0, {1})
        proc = psutil.Process(server.pid)
        payload = b"\x89PNG" + bytes(400)  # never decoded: the door answers before the body is read
        for rate in args.rates:
            before, started = proc.cpu_times(), time.monotonic()
            result = uvloop.run(open_loop(f"http://127.0.0.1:{port}", payload, rate, args.seconds))
            after, elapsed = proc.cpu_times(), time.monotonic() - started
            cpu_s = (after.user + after.system) - (before.user + before.system)
            shed = result.with_status(429)
            print(
                f"offered {rate:.0f}/s: {result.counts()}; server {cpu_s / elapsed:.2f} cores, "
                f"{1000 * cpu_s / len(result.outcomes):.3f} ms of CPU per request, "
                f"p99 {1000 * result.quantile(shed, 0.99):.1f} ms"
            )
            if len(shed) != len(result.outcomes):
                print("FAIL  not every request was shed")
                return 1
    finally:
        server.terminate()
        server.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
