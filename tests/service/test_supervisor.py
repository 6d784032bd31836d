"""service/supervisor.py: one API worker's supervisor stays small, replaces a worker that dies after it
was ready, gives up on one that never was, and takes its worker down with it however it stops."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.support import DEFAULT_MODEL_DIR
from vitserve.bench.processes import free_port
from vitserve.harness.servers import running_server

# A worker that is not BentoML's, so that the supervisor's own rules are what is tested: it counts its
# starts in a file, tells the supervisor it is ready, dies at once the first time, and then waits for
# SIGTERM, noting that it got it.
WORKER = textwrap.dedent(
    """
    import signal, sys
    from pathlib import Path
    from vitserve.service.supervisor import tell_supervisor_ready

    folder = Path(sys.argv[1])
    starts = folder / "starts"
    starts.write_text(starts.read_text() + "x" if starts.exists() else "x")
    tell_supervisor_ready()
    if len(starts.read_text()) == 1:
        sys.exit(3)

    def stop(signum, frame):
        (folder / "stopped").write_text(signal.Signals(signum).name)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    (folder / "waiting").write_text(str(__import__("os").getpid()))
    signal.pause()
    """
)
SUPERVISE = (
    "import os, sys; from vitserve.service.supervisor import Supervisor; "
    "sys.exit(Supervisor([sys.executable, *sys.argv[1:]], dict(os.environ), ()).run())"
)


def wait_for(done: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.05)


def supervise(folder: Path) -> subprocess.Popen[bytes]:
    script = folder / "worker.py"
    script.write_text(WORKER)
    return subprocess.Popen(
        [sys.executable, "-c", SUPERVISE, str(script), str(folder)], start_new_session=True
    )


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_worker_that_dies_once_ready_is_replaced_and_a_stop_signal_reaches_the_next(
    tmp_path: Path, stop: signal.Signals
) -> None:
    supervisor = supervise(tmp_path)
    try:
        wait_for((tmp_path / "waiting").exists, "the second worker waiting")
        assert (tmp_path / "starts").read_text() == "xx", "the first worker's death was not met by a second"
        supervisor.send_signal(stop)
        assert supervisor.wait(timeout=60) == 0
        assert (tmp_path / "stopped").read_text() == "SIGTERM"  # handed on as SIGTERM whatever came
    finally:
        supervisor.kill()


def test_a_killed_supervisor_takes_its_worker_with_it(tmp_path: Path) -> None:
    supervisor = supervise(tmp_path)
    try:
        wait_for((tmp_path / "waiting").exists, "the second worker waiting")
        worker = psutil.Process(int((tmp_path / "waiting").read_text()))
        supervisor.kill()
        supervisor.wait(timeout=60)
        worker.wait(timeout=60)
        assert (tmp_path / "stopped").read_text() == "SIGTERM"
    finally:
        supervisor.kill()


def test_a_worker_that_never_gets_ready_ends_vitserve_serve_with_an_error(tmp_path: Path) -> None:
    model_dir = tmp_path / "broken"
    shutil.copytree(DEFAULT_MODEL_DIR, model_dir, ignore=shutil.ignore_patterns("samples", "*.onnx"))
    (model_dir / "model.onnx").write_bytes(b"not an ONNX model")
    env = {
        **os.environ,
        "VITSERVE_MODEL_DIR": str(model_dir),
        "VITSERVE_PORT": str(free_port()),
        "VITSERVE_GRPC_PORT": "0",
    }
    command = [sys.executable, "-m", "vitserve", "serve"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "before it was ready; not restarting it" in result.stderr, result.stderr[-3000:]
    assert result.stderr.count("worker 1 started") == 1 and "worker 2 started" not in result.stderr


def test_vitserve_serve_runs_one_worker_under_a_supervisor_that_imports_no_framework() -> None:
    with running_server() as server:
        supervisor = psutil.Process(server.pid)
        (worker,) = supervisor.children()
        assert "vitserve.service.supervisor" in supervisor.cmdline()
        assert "--service-name" in worker.cmdline()
    heavy = ["bentoml", "circus", "fastapi", "pydantic", "numpy", "onnxruntime", "vitserve.service.settings"]
    code = f"import sys, vitserve.service.supervisor; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
