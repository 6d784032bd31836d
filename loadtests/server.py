"""A `vitserve serve` process on a free loopback port, for the runner to load-test and then stop.

BentoML starts an API worker and an inference worker beside the arbiter; stopping the server must
stop them too, or they keep the port and the cores for the next measurement.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


class ServerError(RuntimeError):
    """The server under test did not start, or died."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(
    url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise ServerError(f"the server exited with {proc.returncode} before it was ready:\n{tail}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet: keep polling until the deadline
        time.sleep(0.5)
    raise ServerError(f"{url}/readyz did not answer 200 within {timeout_s:.0f} s")


@contextmanager
def local_server(
    model_dir: Path, env: Mapping[str, str], log_path: Path, timeout_s: float = 300
) -> Iterator[str]:
    """Start `vitserve serve` with VITSERVE_* overrides `env`; yield its URL; stop every worker after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environ = {**os.environ, "VITSERVE_MODEL_DIR": str(model_dir), **env}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vitserve", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_ready(url, timeout_s, proc, log_path)
            yield url
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """SIGTERM the server and wait; SIGKILL whatever of it is left after `timeout_s`."""
    if proc.poll() is not None:
        return
    # BentoML's arbiter starts each worker in a process group of its own, so the group kill below
    # reaches only the arbiter; remember the workers to kill them by pid if the arbiter cannot.
    workers = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    _, alive = psutil.wait_procs(workers, timeout=timeout_s)
    for worker in alive:
        try:
            worker.kill()
        except psutil.NoSuchProcess:
            continue  # it exited between the wait and the kill: what we wanted
