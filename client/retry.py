"""When to send a request: whether to try again, how long to wait first, how many at once; pure."""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass

from vitserve.client.errors import (
    ConnectionFailed,
    ServerError,
    ServiceOverloaded,
    Timeout,
    VitserveError,
)

# Gateways in front of the service answer these while it restarts; a 500 from the service itself
# is more likely a bug triggered by this request, and repeating it would only repeat the bug.
_RETRIED_SERVER_STATUSES = frozenset({502, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Retries for failures that say nothing about the request: connection, timeout, overload."""

    retries: int = 3  # attempts after the first; 0 disables retrying
    backoff: float = 0.5  # seconds before the first retry; doubles each time
    max_backoff: float = 10.0  # cap on one wait, whether from our backoff or the server's Retry-After
    jitter: float = 0.25  # +-fraction added to our own backoff so that clients do not retry in step

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0 or not 0 <= self.jitter <= 1:
            raise ValueError(f"invalid retry policy {self}")

    def delay(self, attempt: int, error: VitserveError) -> float | None:
        """Seconds to wait before retry number `attempt` (0-based) after `error`; None: give up."""
        if attempt >= self.retries or not is_retryable(error):
            return None
        if isinstance(error, ServiceOverloaded) and error.retry_after is not None:
            return min(error.retry_after, self.max_backoff)  # the server knows its queue best
        base = min(self.backoff * 2**attempt, self.max_backoff)
        return base * (1 + self.jitter * (2 * random.random() - 1))


def is_retryable(error: VitserveError) -> bool:
    """Whether the same request can succeed later: true for transport trouble and overload."""
    if isinstance(error, ConnectionFailed | Timeout | ServiceOverloaded):
        return True
    return isinstance(error, ServerError) and error.status in _RETRIED_SERVER_STATUSES


class OverloadGate:
    """Shared by all requests of one client: after a Retry-After, nobody sends until it has passed.

    Without it, each of N concurrent requests would find out about the overload on its own and the
    server would answer N more 429s; with it, one answer pauses the whole client.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._not_before = 0.0  # time.monotonic() before which no request should start

    def hold(self, seconds: float) -> None:
        with self._lock:
            self._not_before = max(self._not_before, time.monotonic() + seconds)

    def wait_time(self) -> float:
        """Seconds to wait before sending now; 0.0 when the gate is open."""
        with self._lock:
            return max(0.0, self._not_before - time.monotonic())


class AdaptiveLimit:
    """How many requests a client may have in flight: unlimited until the server says it is
    overloaded, then halved, then grown by one per window of successes (TCP's AIMD).

    The gate above makes everyone wait out a Retry-After; this keeps the client from sending the
    same burst again afterwards, so that it settles at what the server admits instead of
    alternating between a burst of 429s and a pause. One overload halves the limit once: answers
    to requests sent before the last cut (the rest of the same burst) do not cut it again.
    """

    def __init__(self, ceiling: float = 1024.0) -> None:
        self.ceiling = ceiling  # growth stops here, so a long quiet run cannot build an absurd window
        self.limit = math.inf
        self.in_flight = 0
        self._epoch = 0  # bumped at each cut; a request remembers the epoch it was sent in

    def can_send(self) -> bool:
        return self.in_flight < self.limit

    def start(self) -> int:
        """Count a request as sent; returns its ticket for `finish`."""
        self.in_flight += 1
        return self._epoch

    def finish(self, ticket: int, overloaded: bool) -> None:
        if overloaded and ticket == self._epoch:
            self.limit = max(1.0, min(self.limit, self.in_flight) / 2)
            self._epoch += 1
        elif not overloaded and math.isfinite(self.limit):
            self.limit = min(self.ceiling, self.limit + 1 / self.limit)
        self.in_flight -= 1
