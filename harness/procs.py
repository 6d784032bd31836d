"""The server's workers, their memory over time and their TCP connections, for the reliability checks.

The supervisor (one API worker) or BentoML's arbiter (several) starts each worker in a session of its
own, so the server's process group holds only the supervising process; its workers are found as its
descendants instead (bench/processes.py's process_tree).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from vitserve.bench.processes import process_tree, tree_rss_mib
from vitserve.service.supervisor import WORKER_MODULE

PROC = Path("/proc")


def descendants(root: int) -> list[int]:
    """root and every process below it, at this instant."""
    return [p.pid for p in process_tree(root)]


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB; 0 once it has exited."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0  # a zombie has no VmRSS line


def cmdline(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def worker_pids(root: int, service_name: str) -> list[int]:
    """BentoML workers of one service (`vitserve` for the API, `vitserve-model` for the model server)."""
    marks = (WORKER_MODULE, f"--service-name {service_name} ")
    return [pid for pid in descendants(root) if all(mark in cmdline(pid) + " " for mark in marks)]


@dataclass
class RssSample:
    at_s: float
    rss_mib: float


class RssSampler:
    """Samples the whole server's RSS in a thread; `peak_mib` and `samples` afterwards."""

    def __init__(self, root: int, interval_s: float = 0.2) -> None:
        self.root = root
        self.interval_s = interval_s
        self.samples: list[RssSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(RssSample(time.monotonic() - self._started, tree_rss_mib(self.root)))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return max(s.rss_mib for s in self.samples)


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in (PROC / str(pid) / "fd").iterdir():
            try:
                target = fd.readlink().as_posix()
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except (FileNotFoundError, PermissionError):
        pass
    return inodes


def tcp_peers(root: int) -> list[tuple[int, int]]:
    """(local port, remote port) of every connected IPv4/IPv6 TCP socket the server's processes hold."""
    inodes = set().union(*(_socket_inodes(pid) for pid in descendants(root)))
    peers = []
    for table in ("tcp", "tcp6"):
        for line in (PROC / "net" / table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
            if inode in inodes and state != "0A":  # 0A = LISTEN
                peers.append((int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)))
    return peers
