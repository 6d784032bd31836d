"""The overload experiment: measure capacity, offer a multiple of it open-loop, then check recovery.

The Python generator of tests/reliability/test_overload.py (seconds). The overload benchmark
(reliability/overload.py, `vitserve bench flood`) floods from h2load instead: bench/flood.py.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass

import uvloop

from vitserve.bench.processes import tree_cpu_s, tree_rss_mib
from vitserve.harness.load import LoadResult, closed_loop, open_loop
from vitserve.harness.procs import RssSampler

SHED = (429, 503)
WARM_UP_S = 3.0  # closed-loop seconds before capacity is measured, and again before recovery is


@dataclass(frozen=True)
class OverloadReport:
    max_in_flight: int
    capacity_rps: float
    capacity_p99_s: float
    offered_rps: float
    overload_s: float
    sent: int
    accepted: int
    shed: int
    other: dict[str, int]  # statuses that are neither 200 nor a shed, e.g. 5xx or dropped connections
    shed_without_retry_after: int
    shed_p99_s: float
    accepted_p99_s: float
    accepted_rps: float
    server_cpu_cores: float  # CPU the server's processes used during the flood / its length
    client_cpu_cores: float  # the same for this load generator, which shares the machine
    rss_before_mib: float
    rss_peak_mib: float
    rss_after_mib: float
    recovered_first_s_rps: float  # the first WARM_UP_S after the flood, while its connections close
    recovered_rps: float  # after that, measured like capacity was (which also followed a warm-up)
    recovered_p99_s: float
    recovered_statuses: dict[str, int]  # every answer after the flood, at the bound: all should be 200

    def lines(self) -> list[str]:
        return [f"{key:26s} {value}" for key, value in asdict(self).items()]


def capacity(url: str, payload: bytes, concurrency: int, seconds: float) -> LoadResult:
    """Closed loop at the admission bound: the most the server does while nothing is shed."""
    return asyncio.run(closed_loop(url, payload, concurrency, seconds))


def run_overload(
    url: str,
    root_pid: int,
    payload: bytes,
    max_in_flight: int,
    factor: float,
    capacity_s: float,
    overload_s: float,
    recovery_s: float,
) -> OverloadReport:
    # Warm-up: the first seconds after start-up train BentoML's batching cost model.
    capacity(url, payload, max_in_flight, WARM_UP_S)
    at_capacity = capacity(url, payload, max_in_flight, capacity_s)
    base = at_capacity.with_status(200)
    assert len(base) == len(at_capacity.outcomes), f"errors at capacity: {at_capacity.counts()}"
    capacity_rps = at_capacity.throughput()
    rss_before = tree_rss_mib(root_pid)
    offered = factor * capacity_rps
    server_cpu, client_cpu = tree_cpu_s(root_pid), time.process_time()
    with RssSampler(root_pid, interval_s=0.5) as rss:
        # uvloop: this generator shares the machine with the server; the cheaper it is, the less it
        # takes from what it measures.
        flood = uvloop.run(open_loop(url, payload, offered, overload_s))
    server_cpu, client_cpu = tree_cpu_s(root_pid) - server_cpu, time.process_time() - client_cpu
    accepted = flood.with_status(200)
    shed = flood.with_status(*SHED)
    other = {k: v for k, v in flood.counts().items() if k not in ("200", "429", "503")}
    recovery = capacity(url, payload, max_in_flight, WARM_UP_S + recovery_s)
    settling = LoadResult(WARM_UP_S, [o for o in recovery.outcomes if o.started_s < WARM_UP_S])
    recovered = LoadResult(
        recovery.duration_s - WARM_UP_S, [o for o in recovery.outcomes if o.started_s >= WARM_UP_S]
    )
    return OverloadReport(
        max_in_flight=max_in_flight,
        capacity_rps=round(capacity_rps, 1),
        capacity_p99_s=round(LoadResult.quantile(base, 0.99), 3),
        offered_rps=round(offered, 1),
        overload_s=overload_s,
        sent=len(flood.outcomes),
        accepted=len(accepted),
        shed=len(shed),
        other=other,
        shed_without_retry_after=sum(1 for o in shed if not o.retry_after),
        shed_p99_s=round(LoadResult.quantile(shed, 0.99), 3),
        accepted_p99_s=round(LoadResult.quantile(accepted, 0.99), 3),
        accepted_rps=round(len(accepted) / flood.duration_s, 1),
        server_cpu_cores=round(server_cpu / flood.duration_s, 2),
        client_cpu_cores=round(client_cpu / flood.duration_s, 2),
        rss_before_mib=round(rss_before),
        rss_peak_mib=round(rss.peak_mib),
        rss_after_mib=round(tree_rss_mib(root_pid)),
        recovered_first_s_rps=round(settling.throughput(), 1),
        recovered_rps=round(recovered.throughput(), 1),
        recovered_p99_s=round(LoadResult.quantile(recovered.with_status(200), 0.99), 3),
        recovered_statuses=recovery.counts(),
    )
