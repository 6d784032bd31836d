"""A running server made N times slower, for real and without changing it: its whole process tree is
paused (SIGSTOP) for a share of every short period, as a CPU quota would.

The load-test gate's own check: a server slowed 2x must miss its SLOs (docs/loadtest.md).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

from vitserve.harness.procs import descendants

REFRESH_PERIODS = 50  # periods between two looks for processes the server started meanwhile


class Throttle(threading.Thread):
    """Runs the tree under `root` 1/slowdown of each `period_s`; resumes it for good on stop()."""

    def __init__(self, root: int, slowdown: float, period_s: float = 0.02) -> None:
        if slowdown < 1:
            raise ValueError(f"slowdown must be >= 1, got {slowdown}")
        super().__init__(daemon=True)
        self.root, self.period_s = root, period_s
        self.running_s = period_s / slowdown
        self._halt = threading.Event()

    def _signal(self, pids: list[int], sig: signal.Signals) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                os.kill(pid, sig)

    def run(self) -> None:
        periods = 0
        pids: list[int] = []
        while not self._halt.is_set():
            if periods % REFRESH_PERIODS == 0:  # walking /proc each period would cost the host CPU
                pids = descendants(self.root)
            periods += 1
            self._signal(pids, signal.SIGSTOP)
            paused = self._halt.wait(self.period_s - self.running_s)
            self._signal(pids, signal.SIGCONT)
            if paused:
                break
            self._halt.wait(self.running_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self._signal(descendants(self.root), signal.SIGCONT)

    def __enter__(self) -> Throttle:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
