"""SIGTERM under load: readiness fails first, requests in flight complete, no sent request is lost."""

from __future__ import annotations

from tests.reliability.drain import sigterm_under_load
from tests.support import SAMPLES_DIR, ServerProcess

# The listener keeps serving this long after SIGTERM with /readyz failing: the balancer (polling every
# 50 ms) must see the failure within it, however busy the machine.
SHUTDOWN_DELAY_S = 5


def test_sigterm_under_load_loses_nothing() -> None:
    payload = sorted(SAMPLES_DIR.glob("*.png"))[0].read_bytes()
    server = ServerProcess(env={"VITSERVE_SHUTDOWN_DELAY_S": str(SHUTDOWN_DELAY_S)}).start()
    try:
        report = sigterm_under_load(server, payload, concurrency=16, answered_before=200)
    finally:
        server.stop()
    print("\n".join(report.lines()))
    log = server.log()
    assert report.lost == {}, f"requests lost during shutdown: {report.lost}\n{log}"
    assert report.in_flight_at_sigterm > 0, (
        "SIGTERM landed while nothing was in flight: the test proved nothing"
    )
    # Readiness fails at once, while the listener still serves: the balancer notices before anything breaks.
    assert report.readiness_failed_after_s < SHUTDOWN_DELAY_S
    assert report.exit_code is not None
    assert report.exited_after_s < SHUTDOWN_DELAY_S + 60  # drained and gone, not hung
