"""A loopback load generator: closed-loop (N clients back to back) or open-loop (a fixed arrival rate).

Open loop is what overload means: arrivals do not slow down when the server does. Each request's
outcome is kept, so callers can split accepted from shed and read latency quantiles of each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from vitserve.harness.uploads import multipart

# Outcome.status for a request that got no HTTP response: refused, reset or timed out.
NO_RESPONSE = 0


@dataclass(frozen=True)
class Outcome:
    started_s: float  # since the run began
    latency_s: float
    status: int
    retry_after: str | None = None
    error: str = ""  # the exception's type when status is NO_RESPONSE


@dataclass
class LoadResult:
    duration_s: float
    outcomes: list[Outcome] = field(default_factory=list)

    def with_status(self, *statuses: int) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in statuses]

    def throughput(self, status: int = 200) -> float:
        return len(self.with_status(status)) / self.duration_s

    @staticmethod
    def quantile(outcomes: list[Outcome], q: float) -> float:
        latencies = sorted(o.latency_s for o in outcomes)
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for o in self.outcomes:
            key = str(o.status) if o.status != NO_RESPONSE else f"no-response:{o.error}"
            counts[key] = counts.get(key, 0) + 1
        return counts


@dataclass(frozen=True)
class Upload:
    """One multipart/form-data body, encoded once and sent as it is by every request.

    This generator shares the machine's cores with the server under test: CPU it spends building an
    aiohttp FormData per request is CPU the server does not get.
    """

    body: bytes
    headers: dict[str, str]

    @classmethod
    def image(cls, payload: bytes) -> Upload:
        body, content_type = multipart([("image", "digit.png", payload, "image/png")])
        return cls(body, {"Content-Type": content_type})


async def _send(
    session: aiohttp.ClientSession, url: str, upload: Upload, began: float, timeout_s: float
) -> Outcome:
    started = time.monotonic()
    try:
        async with session.post(
            f"{url}/classify",
            data=upload.body,
            headers=upload.headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            await response.read()
            return Outcome(
                started - began,
                time.monotonic() - started,
                response.status,
                response.headers.get("Retry-After"),
            )
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Outcome(started - began, time.monotonic() - started, NO_RESPONSE, error=type(exc).__name__)


def _session(connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections, force_close=False))


async def _open(session: aiohttp.ClientSession, url: str) -> None:
    async with session.get(f"{url}/livez") as response:
        await response.read()


async def closed_loop(
    url: str,
    payload: bytes,
    concurrency: int,
    duration_s: float,
    timeout_s: float = 30.0,
    keep_going: Callable[[], bool] = lambda: True,
    result: LoadResult | None = None,
) -> LoadResult:
    """`concurrency` clients, each sending its next request when the last one is answered.

    Outcomes go into `result` as they come when the caller passes one (to act on progress meanwhile).
    """
    began = time.monotonic()
    result = LoadResult(duration_s) if result is None else result
    upload = Upload.image(payload)
    async with _session(concurrency) as session:

        async def client() -> None:
            while time.monotonic() - began < duration_s and keep_going():
                result.outcomes.append(await _send(session, url, upload, began, timeout_s))

        await asyncio.gather(*(client() for _ in range(concurrency)))
    result.duration_s = time.monotonic() - began
    return result


async def open_loop(
    url: str,
    payload: bytes,
    rate_per_s: float,
    duration_s: float,
    timeout_s: float = 30.0,
    max_outstanding: int = 4096,
    connected: int = 32,
) -> LoadResult:
    """Start a request every 1/rate seconds whatever the server does, for duration_s.

    `connected` keep-alive connections are opened before the clock starts, as a fleet of clients
    already talking to the service would have them; more are opened whenever none is idle. Without
    them the flood began as a storm of new connections from this one generator process, whose own
    event loop then lagged by up to a second: latency the server never caused.
    """
    pending: set[asyncio.Task[Outcome]] = set()
    upload = Upload.image(payload)
    async with _session(max_outstanding) as session:
        await asyncio.gather(*(_open(session, url) for _ in range(connected)))
        began = time.monotonic()
        result = LoadResult(duration_s)
        sent = 0
        while (now := time.monotonic() - began) < duration_s:
            due = int(now * rate_per_s) + 1
            for _ in range(due - sent):
                task = asyncio.create_task(_send(session, url, upload, began, timeout_s))
                pending.add(task)
                task.add_done_callback(pending.discard)
                task.add_done_callback(lambda t: result.outcomes.append(t.result()))
            sent = max(sent, due)
            await asyncio.sleep(0.002)
        if pending:
            await asyncio.wait(pending)
    return result
