"""SIGTERM under load, with the load generator acting as a load balancer that polls /readyz.

Clients send back to back while the balancer routes to the server; SIGTERM lands mid-load; once
/readyz stops answering 200 the balancer stops routing and clients send nothing new. Every request
that was sent must still be answered 200: that count of failures is the number of requests lost.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass

import httpx

from vitserve.harness.load import LoadResult, closed_loop
from vitserve.harness.servers import ServerProcess


@dataclass(frozen=True)
class ShutdownReport:
    sent: int
    answered_200: int
    lost: dict[str, int]  # every outcome other than 200, by status or error
    in_flight_at_sigterm: int  # sent before SIGTERM, answered after it
    readiness_failed_after_s: float  # from SIGTERM to the first /readyz answer other than 200
    readiness_failed_with: str  # that answer's status, or the error when none came (listener gone)
    last_request_sent_after_s: float  # from SIGTERM
    exit_code: int | None
    exited_after_s: float

    def lines(self) -> list[str]:
        return [f"{key:26s} {value}" for key, value in asdict(self).items()]


class Balancer(threading.Thread):
    """Polls /readyz every poll_s; `routing` turns False for good at the first non-200 answer."""

    def __init__(self, url: str, poll_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.url, self.poll_s = url, poll_s
        self.routing = True
        self.failed_at: float | None = None
        self.failed_with = ""

    def run(self) -> None:
        # A generous timeout: a slow answer on a busy machine is not a failed probe in this test.
        with httpx.Client(timeout=10) as client:
            while self.routing:
                try:
                    answer = str(client.get(f"{self.url}/readyz").status_code)
                except httpx.HTTPError as exc:
                    answer = type(exc).__name__
                if answer != "200":
                    self.failed_at = time.monotonic()
                    self.failed_with = answer
                    self.routing = False
                time.sleep(self.poll_s)


def sigterm_under_load(
    server: ServerProcess, payload: bytes, concurrency: int, answered_before: int, timeout_s: float = 120
) -> ShutdownReport:
    """SIGTERM lands once `answered_before` requests have been answered: mid-load on any machine, since
    the closed loop keeps `concurrency` requests outstanding from then until the balancer stops routing."""
    assert server.proc is not None
    balancer = Balancer(server.url)
    balancer.start()
    began = time.monotonic()
    sigterm_at: list[float] = []
    result = LoadResult(timeout_s)

    def terminate() -> None:
        while len(result.outcomes) < answered_before:
            time.sleep(0.01)
        sigterm_at.append(time.monotonic())
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGTERM)  # the supervising process, as Kubernetes would

    threading.Thread(target=terminate, daemon=True).start()
    asyncio.run(
        closed_loop(
            server.url, payload, concurrency, timeout_s, keep_going=lambda: balancer.routing, result=result
        )
    )
    assert sigterm_at, f"the load ended after {len(result.outcomes)} answers, before SIGTERM was due"
    exit_code = server.proc.wait(timeout=timeout_s)
    exited = time.monotonic()
    balancer.routing = False
    term = sigterm_at[0] - began
    lost: dict[str, int] = {k: v for k, v in result.counts().items() if k != "200"}
    return ShutdownReport(
        sent=len(result.outcomes),
        answered_200=len(result.with_status(200)),
        lost=lost,
        in_flight_at_sigterm=sum(
            1 for o in result.outcomes if o.started_s < term < o.started_s + o.latency_s
        ),
        readiness_failed_after_s=round((balancer.failed_at or float("nan")) - sigterm_at[0], 3),
        readiness_failed_with=balancer.failed_with,
        last_request_sent_after_s=round(max(o.started_s for o in result.outcomes) - term, 3),
        exit_code=exit_code,
        exited_after_s=round(exited - sigterm_at[0], 2),
    )
