"""BentoML's request timeout, without the timer that outlives every request.

bentoml 1.4.40 (pinned) answers 504 when a request has sent nothing within `traffic.timeout`, but
its TimeoutMiddleware arms a `loop.call_later(timeout, ...)` per request and never cancels it. The
timer holds the request's context (OpenTelemetry span, futures) for the full timeout, 60 s by
default, after the request is long answered: under a 5x flood the collector's oldest generation
held 105k such objects after 29 s, and every full collection walked them, stopping the event loop
for 31-93 ms every few seconds (docs/reliability.md). This keeps the behaviour (same status and
body) and waits with `asyncio.wait(..., timeout=)`, which cancels its timer as soon as the request
answers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bentoml._internal.server.http import traffic
from starlette.responses import JSONResponse

_PATCHED = "__vitserve_cancels_timer__"


async def _call(self: traffic.TimeoutMiddleware, scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] not in ("http", "websocket"):
        await self.app(scope, receive, send)
        return
    loop = asyncio.get_running_loop()
    started: asyncio.Future[None] = loop.create_future()

    async def send_and_mark(message: Any) -> None:
        if not started.done():
            started.set_result(None)
        await send(message)

    app = asyncio.ensure_future(self.app(scope, receive, send_and_mark))
    # Done when the response starts or the app returns, whichever comes first; else the timeout.
    done, _ = await asyncio.wait({started, app}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        started.cancel()
    if not done and app.cancel():
        body = {"error": f"Not able to process the request in {self.timeout} seconds"}
        await JSONResponse(body, status_code=504)(scope, receive, send)
        return
    await app


def cancel_request_timers() -> None:
    """Replace TimeoutMiddleware.__call__ in this process (idempotent)."""
    middleware = traffic.TimeoutMiddleware
    if "__call__" not in vars(middleware) or not hasattr(middleware, "_set_timer_out"):
        raise RuntimeError("bentoml's TimeoutMiddleware changed shape; re-check service/request_timeout.py")
    if getattr(middleware, _PATCHED, False):
        return
    middleware.__call__ = _call  # type: ignore[method-assign]
    setattr(middleware, _PATCHED, True)
