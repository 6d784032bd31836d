"""A bound on how long BentoML's adaptive batcher deliberately holds a request to grow its batch.

BentoML's CorkDispatcher (bentoml 1.4.40, pinned) learns `Optimizer.wait` as the mean time past batches
waited before dispatch, and holds each new request about that long while the batch is not full. That
mean includes time spent blocked behind the previous batch, so after one busy spell every later request
is held for roughly a full batch time: at concurrency 1 we measured ~100 ms of pure waiting in front of
a model that runs in ~5 ms. Capping the learned wait turns it into a real batching window.
"""

from __future__ import annotations

from bentoml._internal.marshal import dispatcher

_PATCHED = "__vitserve_wait_cap_s__"


def cap_batching_wait(seconds: float) -> None:
    """Clamp every dispatcher's learned wait to `seconds` from its next parameter refresh on."""
    optimizer = dispatcher.Optimizer
    if not callable(getattr(optimizer, "trigger_refresh", None)):
        raise RuntimeError("bentoml's Optimizer changed shape; re-check service/batching.py")
    original = getattr(optimizer.trigger_refresh, "__wrapped__", optimizer.trigger_refresh)

    def trigger_refresh(self: dispatcher.Optimizer) -> None:
        original(self)
        self.wait = min(self.wait, seconds)  # type: ignore[assignment]

    trigger_refresh.__wrapped__ = original  # type: ignore[attr-defined]
    optimizer.trigger_refresh = trigger_refresh  # type: ignore[method-assign]
    setattr(optimizer, _PATCHED, seconds)


def batching_wait_cap() -> float | None:
    return getattr(dispatcher.Optimizer, _PATCHED, None)
