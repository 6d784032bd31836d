"""Servers as child processes: a free loopback port, readiness, and stopping the whole process tree.

The one home of these for `vitserve bench` (which starts vitserve, the naive server and the peers) and
for the repository's tests, load tests and reliability scripts (harness/servers.py builds on it).

Each server runs in a session of its own. vitserve's supervisor and BentoML's arbiter (circus) start
every worker in yet another session, so a signal to the server's process group reaches only the
supervising process: the workers are found as its descendants, and whatever of the tree outlives the
stop is killed by pid.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Self, TypeVar

import httpx
import psutil

STARTUP_TIMEOUT_S = 300  # a cold BentoML start on a busy 2-core machine; Ray and Triton are slower still


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_tree(root: int) -> list[psutil.Process]:
    """root and every process below it, at this instant; [] once root has exited."""
    try:
        parent = psutil.Process(root)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu_s(root: int) -> float:
    """User + system CPU seconds used so far by root's live tree (children that exited are lost)."""
    total = 0.0
    for proc in process_tree(root):
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue  # it exited between the listing and the read
        total += times.user + times.system
    return total


def wait_quiet(root: int, cores: float = 0.2, window_s: float = 0.25, timeout_s: float = 10.0) -> float:
    """Wait until root's tree uses under `cores` CPUs over a window; the seconds waited.

    A load generator that stops closes its connections with requests still in flight, and most servers
    finish those anyway: measured straight after, that work would be billed to the next run's images
    and its answers never counted. Gives up (returns) after timeout_s: a server busy at rest is
    measured as it is.
    """
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        before = tree_cpu_s(root)
        time.sleep(window_s)
        if tree_cpu_s(root) - before < cores * window_s:
            break
    return time.perf_counter() - started


def tree_rss_mib(root: int) -> float:
    """Resident memory of root's live tree, MiB."""
    total = 0
    for proc in process_tree(root):
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def wait_ready(
    url: str, timeout_s: float, exited: Callable[[], str | None] = lambda: None, poll_s: float = 0.3
) -> None:
    """Poll `url` until it answers 200. `exited` returns why the server is gone (then give up at once)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reason = exited()
        if reason is not None:
            raise RuntimeError(reason)
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(poll_s)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s:g} s")


Command = Callable[[int], Sequence[str]]  # port -> argv


def vitserve_command(port: int) -> list[str]:
    """`vitserve serve` of this interpreter's installation on `port`."""
    return [sys.executable, "-m", "vitserve", "serve", "--host", "127.0.0.1", "--port", str(port)]


BIND_FAILURES = ("Could not bind", "Address already in use")  # in a server's log: a port race lost


class ServerProcess:
    """One server on a free loopback port: started, probed until ready, stopped with its whole tree."""

    def __init__(
        self,
        command: Command = vitserve_command,
        env: Mapping[str, str] | None = None,
        ready_path: str = "/readyz",
        log_path: Path | None = None,
        name: str = "server",
    ) -> None:
        self.command = command
        self.env = {**os.environ, **(env or {})}
        self.ready_path = ready_path
        self.name = name
        self._fixed_log = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._use_port(free_port())

    def _use_port(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = self._fixed_log or Path(tempfile.gettempdir()) / f"vitserve-{self.name}-{port}.log"

    @property
    def pid(self) -> int:
        """The server's own process (the root of its tree)."""
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S, attempts: int = 3) -> Self:
        """Start (or restart, on the same port) and wait until ready."""
        for attempt in range(attempts):
            with self.log_path.open("wb") as log:
                self.proc = subprocess.Popen(
                    list(self.command(self.port)),
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                self.wait_ready(timeout_s)
                return self
            except RuntimeError:
                # Another process may take a free port between the probe and the bind: ours, or one
                # the server picks itself (BentoML's arbiter binds a control socket on one); a flood
                # just before leaves thousands of loopback ports in TIME_WAIT.
                if not any(s in self.log() for s in BIND_FAILURES) or attempt + 1 == attempts:
                    raise
                self._use_port(free_port())
        raise AssertionError("unreachable")

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        def exited() -> str | None:
            assert self.proc is not None
            if self.proc.poll() is None:
                return None
            return f"{self.name} exited with {self.proc.returncode}:\n{self.log()}"

        try:
            wait_ready(self.url + self.ready_path, timeout_s, exited)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}:\n{self.log()}") from None

    def log(self, chars: int = 5000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def pids(self) -> list[int]:
        """The server and every process below it."""
        return [] if self.proc is None else [p.pid for p in process_tree(self.proc.pid)]

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int | None:
        """Signal the server's process group and wait; then SIGKILL whatever of its tree is left."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        family = process_tree(self.proc.pid)
        os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout=10)
        finally:
            # Workers of their own session (BentoML's), daemons that ignored the signal (Ray's): by pid,
            # at once after a kill, else after a grace. psutil checks each one's start time, so a pid
            # reused since is never hit.
            grace_s = 0 if sig == signal.SIGKILL else 5
            _, alive = psutil.wait_procs(family[1:], timeout=grace_s)
            for proc in alive:
                with suppress(psutil.Error):
                    proc.kill()
            psutil.wait_procs(alive, timeout=10)


ServerT = TypeVar("ServerT", bound=ServerProcess)


@contextmanager
def running(server: ServerT, timeout_s: float = STARTUP_TIMEOUT_S) -> Iterator[ServerT]:
    """Started on entry, stopped (tree and all) on exit, whatever happened in between."""
    try:
        yield server.start(timeout_s)
    finally:
        server.stop()
