"""Start `vitserve serve` as a child process and wait for readiness: for tests, benchmarks, load tests.

The server runs in its own process group, so that stopping it reaches every BentoML worker.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Self

import httpx

STARTUP_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """One `vitserve serve` on a free loopback port, configured through VITSERVE_* variables."""

    def __init__(
        self,
        model_dir: Path,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "VITSERVE_MODEL_DIR": str(model_dir), **(env or {})}
        # "{port}" in a custom command (e.g. a baseline server for benchmarks) becomes the chosen port.
        template = command or [sys.executable, "-m", "vitserve", "serve", "--port", "{port}"]
        self.command = [part.replace("{port}", str(self.port)) for part in template]
        self.log_path = Path(tempfile.gettempdir()) / f"vitserve-server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S, attempts: int = 3) -> Self:
        for attempt in range(attempts):
            with self.log_path.open("wb") as log:
                self.proc = subprocess.Popen(
                    self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            try:
                self.wait_ready(timeout_s)
                return self
            except RuntimeError:
                # Another process may take the free port between our probe and the server's bind.
                if "Could not bind" not in self.log() or attempt + 1 == attempts:
                    raise
                self._move_to(free_port())
        raise AssertionError("unreachable")

    def _move_to(self, port: int) -> None:
        old = str(self.port)
        self.command = [part.replace(old, str(port)) if part == old else part for part in self.command]
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = Path(tempfile.gettempdir()) / f"vitserve-server-{port}.log"

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
                pass  # not listening yet
            time.sleep(0.3)
        raise TimeoutError(f"server not ready after {timeout_s}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def pids(self) -> list[int]:
        """The server and every process below it (BentoML starts each worker in its own group)."""
        if self.proc is None:
            return []
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                # Field 4 of /proc/PID/stat is the parent pid; the name in field 2 may hold spaces.
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # the process ended while we looked
            children.setdefault(ppid, []).append(int(entry.name))
        found, frontier = [], [self.proc.pid]
        while frontier:
            pid = frontier.pop()
            found.append(pid)
            frontier.extend(children.get(pid, []))
        return found

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        family = self.pids()
        os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return self.proc.wait(timeout=10)
        finally:
            # Workers left behind (the arbiter killed hard, or a worker that ignored SIGTERM) die here.
            for pid in family:
                with suppress(OSError):
                    # Only our own workers: a pid freed by a clean exit may already belong to another.
                    if b"bentoml" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        os.kill(pid, signal.SIGKILL)


@contextmanager
def running_server(
    model_dir: Path, env: dict[str, str] | None = None, command: list[str] | None = None
) -> Iterator[ServerProcess]:
    server = ServerProcess(model_dir, env, command)
    try:
        yield server.start()
    finally:
        server.stop()
