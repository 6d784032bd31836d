"""A request that has sent nothing within its timeout gets 504, without a timer that outlives it.

BentoML's own TimeoutMiddleware (bentoml 1.4.40) arms a `loop.call_later(timeout, ...)` per request
and never cancels it: the timer holds the request's context for the full timeout, 60 s by default,
after the request is long answered. Under a 5x flood the collector's oldest generation held 105k such
objects after 29 s, and every full collection walked them, stopping the event loop for 31-93 ms every
few seconds (docs/reliability.md). `asyncio.wait(..., timeout=)` cancels its timer as soon as the
request answers. The front door uses this for classify requests; service/request_timeout.py makes
BentoML's middleware use it for the rest.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import JSONResponse


async def respond_within(app: Any, scope: Any, receive: Any, send: Any, timeout_s: float) -> None:
    """Run the ASGI `app`; if its response has not started after timeout_s, cancel it and answer 504."""
    loop = asyncio.get_running_loop()
    started: asyncio.Future[None] = loop.create_future()

    async def send_and_mark(message: Any) -> None:
        if not started.done():
            started.set_result(None)
        await send(message)

    task = asyncio.ensure_future(app(scope, receive, send_and_mark))
    # Done when the response starts or the app returns, whichever comes first; else the timeout.
    done, _ = await asyncio.wait({started, task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        started.cancel()
    if not done and task.cancel():
        body = {"error": f"Not able to process the request in {timeout_s} seconds"}
        await JSONResponse(body, status_code=504)(scope, receive, send)
        return
    await task
