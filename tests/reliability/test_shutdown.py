"""SIGTERM under load: readiness fails first, requests in flight complete, no sent request is lost."""

from __future__ import annotations

from tests.support import SAMPLES_DIR, ServerProcess
from vitserve.harness.drain import sigterm_under_load

# The listener keeps serving this long after SIGTERM with /readyz failing: time for the balancer (polling
# every 50 ms) to see the failure.
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
    # Readiness failed with an answer, so while the listener still served: the balancer noticed before
    # anything broke. (A listener that closed first fails the probe with a connection error instead.)
    assert report.readiness_failed_with == "503", log
    assert report.exit_code is not None
    assert report.exited_after_s < SHUTDOWN_DELAY_S + 60  # drained and gone, not hung
