"""Overload, briefly: 5x the measured capacity for 10 s from a Python generator. reliability/overload.py
(h2load, bench/flood.py) measures floods and open loop at 2x-10x with the server's and its own CPU.

Asserted here is what must hold on any machine: nothing accepted fails, every shed request is told when
to retry, memory stays bounded, and once the flood is over the server answers everything at its bound
again (no admission slot leaked, nothing shed). Throughput and latency ratios depend on how many cores
the server has to itself, and on what else the machine runs meanwhile; they are recorded by the script
and quoted in docs/reliability.md, not asserted.
"""

from __future__ import annotations

from tests.reliability.overload import run_overload
from tests.support import SAMPLES_DIR, running_server
from vitserve.harness.metrics import scrape

MAX_IN_FLIGHT = 16


def test_five_times_capacity_is_shed_with_retry_after_and_service_recovers() -> None:
    payload = sorted(SAMPLES_DIR.glob("*.png"))[0].read_bytes()
    with running_server(env={"VITSERVE_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT)}) as server:
        assert server.proc is not None
        report = run_overload(
            server.url,
            server.proc.pid,
            payload,
            MAX_IN_FLIGHT,
            factor=5,
            capacity_s=5,
            overload_s=10,
            recovery_s=5,
        )
        after = scrape(server.url)
    print("\n".join(report.lines()))
    # The precondition, asserted rather than assumed: this one process really offered well over capacity.
    assert report.sent / report.overload_s >= 2 * report.capacity_rps, "the flood never reached 2x capacity"
    assert report.other == {}, f"accepted requests failed or connections dropped: {report.other}"
    assert report.shed > 0, "more than capacity was offered and nothing was shed"
    assert report.shed_without_retry_after == 0
    # Every 429 the clients got is one the server counted, as the dashboards read it.
    shed = after.get('vitserve_requests_total{code="429",route="/classify"}', 0)
    assert shed == report.shed == after['vitserve_requests_rejected_total{reason="overloaded"}']
    assert report.rss_peak_mib - report.rss_before_mib < 200
    assert set(report.recovered_statuses) == {"200"}, (
        f"not all served after the flood: {report.recovered_statuses}"
    )
    # One API worker holds the model itself: no channel to a model server, so nothing is ever resent.
    assert after["vitserve_inference_retries_total"] == 0
