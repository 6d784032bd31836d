"""Shed overload at the front door: before BentoML's per-request stack, not after it.

BentoML builds the worker's ASGI app with its own middlewares outermost (metrics, OpenTelemetry,
access log, timeout), and a service's own middlewares and mounted apps run inside them. A 429 given
from our FastAPI routes therefore still paid for a traced span, an access-log line, BentoML's
metrics and FastAPI's routing: 1.5-2.5 ms of CPU per rejection, against 7-10 ms for a served
request, measured under a flood (docs/reliability.md). At 5x capacity the rejections alone took the
worker's event loop, and the admitted requests queued behind them. Here the answer to a request the
worker has no room for is two ASGI messages, sent before anything else looks at the request.

The door also counts the classify requests it let in, until their answer goes out, except while
their body is still arriving. Image admission (service/admission.py) counts a request only once
its body is parsed, so under a flood a whole wave of requests got past a door that asked about
admitted images alone, each then paying for the full stack to be refused after parsing.

What stays true: the body (`{"error": "overloaded", ...}` + Retry-After) and the
`vitserve_requests_rejected{reason="overloaded"}` count are the routes' own. What a shed request
no longer reaches: BentoML's access log and its `bentoml_service_request_*` metrics.

bentoml (1.4.40, pinned) gives no hook outside its middleware stack, so `install` wraps
`Service.to_asgi` for one service; the check below fails loudly if that method changes shape.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_WRAPPED = "__vitserve_front_door__"


@dataclass(frozen=True)
class Refusal:
    """What to answer instead of serving: status, JSON body, extra headers."""

    status: int
    body: Mapping[str, str]
    headers: Mapping[str, str]


# refuse(path, requests in progress behind the door) -> None to let the request in.
Refuse = Callable[[str, int], Refusal | None]


class FrontDoor:
    """ASGI wrapper for POSTs to `paths`: a Refusal is answered on the spot, the rest are counted in."""

    def __init__(self, app: ASGIApp, paths: frozenset[str], refuse: Refuse) -> None:
        self.app = app
        self.paths = paths
        self.refuse = refuse
        self.in_progress = 0  # let in, answer not out, body not pending; touched from the event loop only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        refusal = self.refuse(scope["path"], self.in_progress)
        if refusal is not None:
            await _answer(send, refusal)
            return
        # Counted from the door on, so that a wave of requests arriving while this one crosses
        # BentoML's middlewares (its timeout runs the app as a new task) sees it. Once the route
        # starts reading the body, the count waits for the whole body: a client trickling its body,
        # or sending none, is not counted, so slow clients cannot fill the worker's places
        # (VITSERVE_BODY_TIMEOUT_S answers them 408). A fast client's body is already buffered, so
        # it is counted again before anything else runs on the loop.
        self.in_progress += 1
        counted, body_in = True, False

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
            nonlocal counted
            # Out of the count before the last bytes go out: a client that answers its response with
            # its next request at once must find the place free, as admission's images already are.
            if counted and message["type"] == "http.response.body" and not message.get("more_body"):
                counted = False
                self.in_progress -= 1
            await send(message)

        try:
            await self.app(scope, receive_and_count, send_and_release)
        finally:
            if counted:
                self.in_progress -= 1


async def _answer(send: Send, refusal: Refusal) -> None:
    body = json.dumps(dict(refusal.body)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in refusal.headers.items()),
    ]
    # The request body is never read: uvicorn discards what arrives of it and keeps the connection.
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install(service: Any, paths: frozenset[str], refuse: Refuse) -> None:
    """Serve `service` (a bentoml Service) behind a FrontDoor; other services are left alone."""
    cls = type(service)
    original = getattr(cls.to_asgi, _WRAPPED, cls.to_asgi)
    if not callable(original) or "is_main" not in inspect.signature(original).parameters:
        raise RuntimeError("bentoml's Service.to_asgi changed shape; re-check service/front_door.py")
    doors: dict[int, tuple[frozenset[str], Refuse]] = getattr(cls.to_asgi, "doors", {})
    doors[id(service)] = (paths, refuse)

    def to_asgi(self: Any, is_main: bool = True) -> ASGIApp:
        app = original(self, is_main)
        door = doors.get(id(self))
        return app if door is None else FrontDoor(app, *door)

    setattr(to_asgi, _WRAPPED, original)
    to_asgi.doors = doors  # type: ignore[attr-defined]
    cls.to_asgi = to_asgi
