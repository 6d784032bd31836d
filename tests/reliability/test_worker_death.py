"""SIGKILL the process that holds the model under load: it is replaced, the failure shows in metrics and
logs, and a folder scored through the client SDK's retries comes out complete, every file exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.crash import kill_model_worker_while_scoring
from tests.support import running_server

# (API workers, the BentoML service whose worker holds the model)
SHAPES = [
    (1, "vitserve"),  # the default: the model runs in the one API worker, which is killed
    (2, "vitserve-model"),  # several API workers: the model server is killed, the API workers live on
]


@pytest.mark.parametrize(("api_workers", "model_service"), SHAPES, ids=["one-api-worker", "model-server"])
def test_killed_model_worker_is_replaced_and_scoring_completes(
    tmp_path: Path, api_workers: int, model_service: str
) -> None:
    with running_server(env={"VITSERVE_API_WORKERS": str(api_workers)}) as server:
        report = kill_model_worker_while_scoring(
            server,
            model_service,
            tmp_path / "images",
            tmp_path / "results.jsonl",
            copies=600,
            kill_after_requests=40,
        )
        log = server.log_path.read_text(errors="replace")
    print("\n".join(report.lines()))
    assert 0 <= report.rows_at_kill < report.files, "the worker was killed after the scoring, not during it"
    assert report.replacement_pid is not None, "the killed worker was not replaced"
    assert report.rows == report.unique_rows == report.files, report
    assert report.error_rows == 0 and report.failed == 0, report
    assert report.worker_starts == 2, "the restart is invisible in vitserve_inference_worker_starts_total"
    assert log.count(f"Service {model_service} initialized") == 2, "the restart is not in the log"
