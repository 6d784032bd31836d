"""One way to run a storage server the tests start (moto, fake-gcs-server, Azurite): its own process
group on a free loopback port, a log file, readiness by polling, and a stop that cannot hang."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from tests.gate import wait_for
from vitserve.bench.processes import free_port

E = TypeVar("E", bound="EmulatorProcess")


class EmulatorProcess:
    """A server process; subclasses give its `command()` and the `env` a client needs to use it."""

    name = "server"
    ready_path = "/"  # GET here answers once the server takes requests

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env: dict[str, str] = {}
        self.log_path = Path(tempfile.gettempdir()) / f"vitserve-{self.name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> EmulatorProcess:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self._answers, f"{self.name} on {self.url} (log: {self.log_path})", timeout_s=60)
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
        try:
            return httpx.get(self.url + self.ready_path, timeout=2).status_code < 500
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # Azurite waits for idle keep-alive connections to close
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


@contextmanager
def running(server: E) -> Iterator[E]:
    """`server` started, and stopped however the block ends."""
    try:
        server.start()
        yield server
    finally:
        server.stop()


def point_at(server: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point this process at `server` through its standard variables; the environment for children."""
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    return {**os.environ, **server.env}
