"""Shared fixtures: a real vitserve server (BentoML, ONNX Runtime) on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
# The shipped default model; VITSERVE_TEST_MODEL_DIR points the suite at another export of the same shape.
DEFAULT_MODEL_DIR = Path(os.environ.get("VITSERVE_TEST_MODEL_DIR", REPO / "models" / "digits-vit"))
SAMPLES_DIR = DEFAULT_MODEL_DIR / "samples"
STARTUP_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """`vitserve serve` in its own process group, so that teardown stops every BentoML worker."""

    def __init__(self, env: dict[str, str] | None = None, model_dir: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        model_dir = model_dir or DEFAULT_MODEL_DIR
        self.env = {**os.environ, "VITSERVE_MODEL_DIR": str(model_dir), **(env or {})}
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"vitserve-test-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vitserve", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"server not ready after {timeout_s}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout=10)


@contextmanager
def running_server(
    env: dict[str, str] | None = None, model_dir: Path | None = None
) -> Iterator[ServerProcess]:
    server = ServerProcess(env, model_dir)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vitserve_server() -> Iterator[str]:
    """Base URL of a real server on the shipped default model, shared by the whole session."""
    with running_server() as server:
        yield server.url
