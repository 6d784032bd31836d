"""Admission and refusal, in one place for every kind of request: overload is shed, not queued.

Without a bound, excess images would queue in the batcher until max_latency_ms answers them 503 many
seconds later; with it, they get 429 + Retry-After and the admitted ones keep their latency. Every
refusal is counted once, where its answer is rendered (`Flow.error_answer`, `Flow.item_error`,
`Flow.refusal`), so vitserve_requests_rejected adds up whichever way a request was refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from vitserve.service.flow.errors import Answer, ApiError, error_answer

if TYPE_CHECKING:
    from vitserve.service.observe.metrics import ServiceMetrics


class Gauge(Protocol):
    """vitserve_in_flight_images, or anything that counts up and down the same way."""

    def inc(self, amount: int, /) -> None: ...

    def dec(self, amount: int, /) -> None: ...


class Admission:
    """Counts admitted images. Only touched from the worker's event loop, so no lock is needed."""

    def __init__(self, limit: int, gauge: Gauge) -> None:
        self.limit = limit
        self.in_flight = 0
        self._gauge = gauge

    def full(self) -> bool:
        """No room for even one more image."""
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


class Flow:
    """What every kind of request shares: the worker's one admission, refusals and error answers.

    ClassifyFlow and ExplainFlow are Flows over the same Admission, so an explanation's image counts
    against the same limit as a classified one.
    """

    def __init__(self, admission: Admission, metrics: ServiceMetrics, retry_after_s: int) -> None:
        self.admission = admission
        self.metrics = metrics
        self.retry_after_s = retry_after_s
        # The door's refusal, rendered once per renderer: under a flood it is most of what the loop
        # sends, and its status, body and headers never change for this worker's limit.
        self._refusals: dict[Callable[[ApiError], Answer], Answer] = {}

    def overloaded(self, why: str | None = None) -> ApiError:
        why = why or f"this worker is at its limit of {self.admission.limit} images in flight"
        return ApiError("overloaded", f"{why}; retry after the Retry-After seconds", self.retry_after_s)

    def refusal(
        self, requests_in_progress: int, render: Callable[[ApiError], Answer] = error_answer
    ) -> Answer | None:
        """The front door's question, asked before a request's body is read; None lets it in.

        Every request carries at least one image, so requests in progress count against the image
        limit too; `admitted` then still bounds the images of the ones let in.
        """
        if self.has_room(requests_in_progress):
            return None
        answer = self._refusals.get(render)
        if answer is None:
            rendered = render(self.overloaded())
            answer = self._refusals[render] = dataclasses.replace(rendered, body=rendered.content())
        self.metrics.rejected("overloaded")
        return answer

    def has_room(self, requests_in_progress: int) -> bool:
        """`refusal`'s test alone, for a protocol that answers a refusal its own way (gRPC)."""
        return requests_in_progress < self.admission.limit and not self.admission.full()

    def admitted(self, images: int) -> Admitted:
        """`async with flow.admitted(n)`: places for n images while the block runs, or ApiError 429."""
        return Admitted(self, images)

    def error_answer(self, exc: ApiError, render: Callable[[ApiError], Answer] = error_answer) -> Answer:
        """A refused request's answer (vitserve's body, or `render`'s for another protocol), counted in
        vitserve_requests_rejected."""
        self.metrics.rejected(exc.reason)
        return render(exc)

    def item_error(self, exc: ApiError) -> dict[str, str]:
        """One refused image's entry inside a request that is answered 200 (`/classify_batch`), counted."""
        self.metrics.rejected(exc.reason)
        return exc.body()


class Admitted:
    """The places of one request's images; a class rather than a generator: it is on every request's path."""

    __slots__ = ("flow", "images")

    def __init__(self, flow: Flow, images: int) -> None:
        self.flow = flow
        self.images = images

    async def __aenter__(self) -> None:
        if not self.flow.admission.try_acquire(self.images):
            raise self.flow.overloaded()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.flow.admission.release(self.images)
