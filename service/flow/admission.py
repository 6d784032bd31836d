"""Admission control: a bound on images in flight per API worker, so overload is shed, not queued.

Without it, excess images would queue in the batcher until max_latency_ms answers them 503 many seconds
later; with it, they get 429 + Retry-After and the admitted ones keep their latency.
"""

from __future__ import annotations

from typing import Any


class Admission:
    """Counts admitted images. Only touched from the worker's event loop, so no lock is needed."""

    def __init__(self, limit: int, gauge: Any) -> None:
        self.limit = limit
        self.in_flight = 0
        self._gauge = gauge

    def full(self) -> bool:
        """No room for even one more image: shed before reading the request."""
        return self.in_flight >= self.limit

    def try_acquire(self, n: int) -> bool:
        if n <= 0:
            return True
        # One oversized request is still admitted into an empty worker, or it could never be served.
        if self.in_flight and self.in_flight + n > self.limit:
            return False
        self.in_flight += n
        self._gauge.inc(n)
        return True

    def release(self, n: int) -> None:
        if n <= 0:
            return
        self.in_flight -= n
        self._gauge.dec(n)
