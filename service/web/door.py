"""The API worker's outermost ASGI app: classify requests are shed or served here, in front of BentoML.

BentoML builds a worker's app with its own middlewares outermost (Prometheus request metrics,
OpenTelemetry tracing, access log, request timeout), and a service's mounted apps run inside them.
Crossing that stack cost a classify request more than the rest of its serving did (docs/benchmarks.md,
"Where the time goes", says how to profile it). So the door takes POSTs to the classify paths itself:

- no room (`direct.refusal`, which asks the flow, says so): answered 429 + Retry-After, body unread, after
  `shed_delay_s`: a connection that resends at once then costs one refusal per delay, not one per
  loop turn, and the loop stays with the admitted requests;
- room: handed straight to `direct` (service/web/endpoints.py, a plain ASGI app), under the same
  request timeout, and recorded (`RequestLog`: metrics and access log) on the way out.

Everything else (/explain, /model, probes, /metrics, /docs.json) goes through BentoML's app.

The door also counts the classify requests it let in, until their answer goes out, except while their
body is still arriving: admission counts images only once a body is parsed, so under a flood a whole
wave of requests would get past a door that asked about admitted images alone, each then paying for
parsing to be refused.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Container, MutableMapping
from typing import Any, Protocol

from starlette.responses import Response

from vitserve.service.flow.errors import OVERLOADED, Answer
from vitserve.service.web.deadline import respond_within

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


HOLD_SPREAD = (0.5, 1.5)  # a refusal's hold, as multiples of shed_delay_s


class Endpoint(Protocol):
    """What the door serves directly: an ASGI app that also answers the door's question for its paths,
    by asking its flow (service/flow/admission.py's `Flow.refusal`) and rendering in its protocol."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...

    def refusal(self, path: str, requests_in_progress: int) -> Answer | None:
        """None lets the request in; else the refusal's answer, already counted."""
        ...


class Records(Protocol):
    """Where an answered request is recorded (service/observe/logs.py's `RequestLog`)."""

    def request_done(self, scope: Scope, status: int, seconds: float) -> None: ...


class FrontDoor:
    """ASGI app: POSTs to `paths` are refused or served by `direct`; everything else goes `behind`.

    Until `open` hands it the paths, `direct` and the request log (the service instance exists),
    everything goes behind.
    """

    def __init__(self, timeout_s: float, shed_delay_s: float = 0.0) -> None:
        self.direct: Endpoint | None = None
        self.paths: Container[str] = frozenset()
        self.timeout_s = timeout_s
        self.shed_delay_s = shed_delay_s
        self.behind: ASGIApp | None = None
        self.log: Records | None = None
        self.in_progress = 0  # let in, answer not out, body not pending; touched from the event loop only

    def in_front_of(self, behind: ASGIApp) -> FrontDoor:
        self.behind = behind
        return self

    def open(self, paths: Container[str], direct: Endpoint, log: Records) -> None:
        self.paths = paths
        self.log = log
        self.direct = direct

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        direct, log = self.direct, self.log
        assert self.behind is not None, "FrontDoor.in_front_of was never called"
        if (
            direct is None
            or log is None
            or scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] not in self.paths
        ):
            await self.behind(scope, receive, send)
            return
        started = time.perf_counter()
        refusal = direct.refusal(scope["path"], self.in_progress)
        if refusal is not None:
            # The request body is never read: uvicorn discards what arrives of it and keeps the connection.
            await self._hold(refusal.status)
            await send_answer(send, refusal)
            log.request_done(scope, refusal.status, time.perf_counter() - started)
            return
        # Counted from the door on. Once the route starts reading the body, the count waits for the
        # whole body: a client trickling its body, or sending none, is not counted, so slow clients
        # cannot fill the worker's places (VITSERVE_BODY_TIMEOUT_S answers them 408). A fast client's
        # body is already buffered, so it is counted again before anything else runs on the loop.
        self.in_progress += 1
        counted, body_in = True, False
        status = 500

        async def receive_and_count() -> Message:
            nonlocal counted, body_in
            if counted and not body_in:
                counted = False
                self.in_progress -= 1
            message = await receive()
            if not body_in and message["type"] == "http.request" and not message.get("more_body"):
                body_in = counted = True
                self.in_progress += 1
            return message

        async def send_and_release(message: Message) -> None:
            nonlocal counted, status
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == OVERLOADED and counted and self.shed_delay_s > 0:
                    # Refused after its body was read (its images found no room): held like the door's
                    # own refusals, its place given back first.
                    counted = False
                    self.in_progress -= 1
                await self._hold(status)
            # Out of the count before the last bytes go out: a client that answers its response with
            # its next request at once must find the place free, as admission's images already are.
            elif counted and message["type"] == "http.response.body" and not message.get("more_body"):
                counted = False
                self.in_progress -= 1
            await send(message)

        try:
            await respond_within(direct, scope, receive_and_count, send_and_release, self.timeout_s)
        finally:
            if counted:
                self.in_progress -= 1
            log.request_done(scope, status, time.perf_counter() - started)

    async def _hold(self, status: int) -> None:
        if status == OVERLOADED:
            await hold_refusal(self.shed_delay_s)


async def hold_refusal(shed_delay_s: float) -> None:
    """An overload refusal, on any protocol, waits about shed_delay_s before it goes out.

    Each hold is drawn from HOLD_SPREAD x the delay: with one fixed delay, clients refused together
    came back together, one herd per delay that found the few free places taken in its first
    milliseconds, and the server idled until the next (docs/reliability.md).
    """
    if shed_delay_s > 0:
        await asyncio.sleep(hold_s(shed_delay_s))


def hold_s(shed_delay_s: float) -> float:
    return shed_delay_s * random.uniform(*HOLD_SPREAD)


def response_of(answer: Answer) -> Response:
    """An Answer as a Starlette Response, for a route that reached FastAPI."""
    return Response(answer.content(), answer.status, dict(answer.headers), answer.media_type)


async def send_answer(send: Send, answer: Answer) -> None:
    """An Answer as the two ASGI messages of a response."""
    body = answer.content()
    headers = [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", answer.media_type.encode("latin-1")),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items()),
    ]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
