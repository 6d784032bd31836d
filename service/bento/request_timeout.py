"""Patch: BentoML's TimeoutMiddleware answers 504 through service/web/deadline.py, whose timer is cancelled.

bentoml 1.4.40 (pinned) arms a timer per request in `TimeoutMiddleware.__call__` and never cancels
it (service/web/deadline.py says what that cost). Classify requests no longer cross the middleware (the
front door serves them), but /explain, /model and the probes still do. Same status and body as
BentoML's. bentoml has no hook for this: `cancel_request_timers()` replaces the method, once, at
start-up.
"""

from __future__ import annotations

from typing import Any

from bentoml._internal.server.http import traffic

from vitserve.service.bento.pinned import require_bentoml
from vitserve.service.web.deadline import respond_within

_PATCHED = "__vitserve_cancels_timer__"


async def _call(self: traffic.TimeoutMiddleware, scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] not in ("http", "websocket"):
        await self.app(scope, receive, send)
        return
    await respond_within(self.app, scope, receive, send, self.timeout)


def cancel_request_timers() -> None:
    """Replace TimeoutMiddleware.__call__ in this process (idempotent)."""
    require_bentoml("service/bento/request_timeout.py")
    middleware = traffic.TimeoutMiddleware
    if "__call__" not in vars(middleware) or not hasattr(middleware, "_set_timer_out"):
        raise RuntimeError(
            "bentoml's TimeoutMiddleware changed shape; re-check service/bento/request_timeout.py"
        )
    if getattr(middleware, _PATCHED, False):
        return
    middleware.__call__ = _call  # type: ignore[method-assign]
    setattr(middleware, _PATCHED, True)
