"""Graceful shutdown: on SIGTERM readiness fails first, in-flight requests finish, then the worker exits.

BentoML's arbiter (circus) answers SIGTERM by sending SIGTERM to every worker at once, and each
worker's uvicorn then stops accepting and waits for its open requests. Left at that, two things go
wrong: readiness never reports the shutdown (the listener simply stops answering), and (with several API
workers) the model server shuts its socket while the API workers still have admitted images to send it,
which fails those accepted requests with 503. So each worker wraps uvicorn's SIGTERM handler:

- API worker: readiness fails at once; it keeps serving for `shutdown_delay_s` (time for a load
  balancer to see that), then hands the signal on to uvicorn, which drains the requests in flight.
- Model server: keeps serving until no API worker is left (they exit only once drained), bounded
  by a deadline, then hands the signal on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import psutil

log = logging.getLogger(__name__)

SignalHandler = Callable[[int, FrameType | None], Any]


class GracefulShutdown:
    """Delays a worker's SIGTERM until `ready_to_stop()` holds, or `deadline_s` has passed."""

    def __init__(self, what: str, ready_to_stop: Callable[[], bool], deadline_s: float) -> None:
        self.what = what
        self.ready_to_stop = ready_to_stop
        self.deadline_s = deadline_s
        self.draining = False

    def install(self) -> None:
        """Wrap the SIGTERM handler uvicorn installed; call from the worker's event loop."""
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (not the case in a worker)
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return  # no uvicorn handler to hand the signal to: keep the default behaviour

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if self.draining:
                previous(signum, frame)  # a second SIGTERM: stop waiting
                return
            self.draining = True
            loop.call_soon_threadsafe(lambda: loop.create_task(self._drain(previous, signum)))

        signal.signal(signal.SIGTERM, on_sigterm)

    async def _drain(self, previous: SignalHandler, signum: int) -> None:
        started = time.monotonic()
        log.info("SIGTERM: %s is draining (readiness fails from now on)", self.what)
        while not self.ready_to_stop() and time.monotonic() - started < self.deadline_s:
            await asyncio.sleep(0.1)
        log.info("%s stops accepting after %.1f s of draining", self.what, time.monotonic() - started)
        previous(signum, None)


def after_delay(delay_s: float) -> Callable[[], bool]:
    """True once delay_s has passed since the first call (the moment SIGTERM arrived)."""
    started: list[float] = []

    def elapsed() -> bool:
        if not started:
            started.append(time.monotonic())
        return time.monotonic() - started[0] >= delay_s

    return elapsed


def api_workers_gone(api_service_name: str) -> Callable[[], bool]:
    """True once the arbiter has no API worker child left (each exits only after its requests finish)."""
    arbiter = psutil.Process(os.getppid())
    marker = ["--service-name", api_service_name]

    def gone() -> bool:
        for child in arbiter.children():
            try:
                args = child.cmdline()
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            if any(args[i : i + 2] == marker for i in range(len(args) - 1)):
                return False
        return True

    return gone
