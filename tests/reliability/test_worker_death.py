"""SIGKILL the inference worker under load: it is replaced, the failure shows in metrics and logs, and
a folder scored through the client SDK's retries comes out complete, every file exactly once."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import running_server
from tests.reliability.crash import kill_inference_while_scoring


def test_killed_inference_worker_is_replaced_and_scoring_completes(tmp_path: Path) -> None:
    with running_server() as server:
        report = kill_inference_while_scoring(
            server, tmp_path / "images", tmp_path / "results.jsonl", copies=600, kill_after_requests=40
        )
        log = server.log_path.read_text(errors="replace")
    print("\n".join(report.lines()))
    assert report.replacement_pid is not None, "the killed inference worker was not replaced"
    assert report.rows == report.unique_rows == report.files, report
    assert report.error_rows == 0 and report.failed == 0, report
    assert report.worker_starts == 2, "the restart is invisible in vitserve_inference_worker_starts_total"
    # In the log: the replacement's start-up (and, if calls were in flight on the dead worker, their
    # retries, counted in vitserve_inference_retries_total).
    assert log.count("Service vitserve-inference initialized") == 2, "the restart is not in the log"
