"""A request that has sent nothing within its timeout gets 504, without a timer that outlives it.

BentoML's own TimeoutMiddleware (bentoml 1.4.40) arms a `loop.call_later(timeout, ...)` per request and
never cancels it: the timer holds the request's context for the full timeout, 60 s by default, after the
request is long answered. Under a flood the collector's oldest generation filled with them, and every
full collection walked them all, stopping the event loop (docs/reliability.md). `asyncio.timeout` here
cancels its timer as soon as the response starts or the request ends. The front door uses this for
classify requests; service/bento/request_timeout.py makes BentoML's middleware use it for the rest.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import JSONResponse


async def respond_within(app: Any, scope: Any, receive: Any, send: Any, timeout_s: float) -> None:
    """Run the ASGI `app`; if its response has not started after timeout_s, cancel it and answer 504.

    The app runs in the calling task under `asyncio.timeout`, whose one timer is disarmed when the
    response starts: no task, future or wait set per request (the classify hot path crosses this).
    """
    started = False
    deadline = asyncio.timeout(timeout_s)

    async def send_and_disarm(message: Any) -> None:
        nonlocal started
        if not started:
            started = True
            deadline.reschedule(None)  # a response that has started is never cut
        await send(message)

    try:
        async with deadline:
            await app(scope, receive, send_and_disarm)
        return
    except TimeoutError:
        if started or not deadline.expired():
            raise  # the app's own TimeoutError, not the deadline's
    body = {"error": f"Not able to process the request in {timeout_s} seconds"}
    await JSONResponse(body, status_code=504)(scope, receive, send)
