"""The front door refuses or serves classify requests itself and passes everything else behind it.

The real server's behaviour (sheds never reach BentoML's request metrics) is tested in
test_overload_and_openapi.py; here the ASGI app is driven directly, between two Starlette apps:
`direct` (the API routes) and `behind` (BentoML's stack).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from vitserve.service.flow.errors import Answer
from vitserve.service.web.door import FrontDoor, Scope, hold_s

FULL = Answer(429, {"error": "overloaded", "message": "no room"}, {"Retry-After": "3"})
GUARDED = frozenset({"/classify"})


class Keeper:
    """The direct endpoint around `app` and the request log in one: refuses when `refuse(in_progress)`
    says so; records what it is told."""

    def __init__(self, refuse: Callable[[int], Answer | None] = lambda n: None) -> None:
        self.refuse = refuse
        self.app: Any = None
        self.done: list[tuple[str, int]] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    def refusal(self, path: str, requests_in_progress: int) -> Answer | None:
        return self.refuse(requests_in_progress)

    def request_done(self, scope: Scope, status: int, seconds: float) -> None:
        assert seconds >= 0
        self.done.append((scope["path"], status))


def door_around(
    direct: object, keeper: Keeper | None, behind: object = None, timeout_s: float = 60
) -> FrontDoor:
    door = FrontDoor(timeout_s).in_front_of(behind or direct)  # type: ignore[arg-type]
    if keeper is not None:
        keeper.app = direct
        door.open(GUARDED, keeper, keeper)
    return door


def make_app(full: bool, seen: list[str]) -> FrontDoor:
    def endpoint(name: str):  # type: ignore[no-untyped-def]
        async def answer(request: Request) -> JSONResponse:
            seen.append(f"{name} {request.method} {request.url.path}")
            return JSONResponse({"served": name})

        return answer

    def app(name: str) -> Starlette:
        paths = ("/classify", "/other")
        return Starlette(routes=[Route(p, endpoint(name), methods=["GET", "POST"]) for p in paths])

    keeper = Keeper(lambda _: FULL if full else None)
    return door_around(app("direct"), keeper, behind=app("behind"))


def call(app: FrontDoor, method: str, path: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://door") as client:
            return await client.request(method, path, content=b"x" * 1000)

    return asyncio.run(go())


def test_a_refused_post_is_answered_without_reaching_either_app() -> None:
    seen: list[str] = []
    door = make_app(True, seen)
    response = call(door, "POST", "/classify")
    assert response.status_code == 429
    assert response.json() == {"error": "overloaded", "message": "no room"}
    assert response.headers["retry-after"] == "3"
    assert response.headers["content-type"] == "application/json"
    assert seen == []
    assert door.log.done == [("/classify", 429)]  # type: ignore[union-attr]


def test_everything_else_goes_behind() -> None:
    seen: list[str] = []
    app = make_app(True, seen)
    assert call(app, "GET", "/classify").json() == {"served": "behind"}  # only POSTs are guarded
    assert call(app, "POST", "/other").json() == {"served": "behind"}  # not a guarded path
    assert seen == ["behind GET /classify", "behind POST /other"]
    assert app.log.done == []  # type: ignore[union-attr]


def test_room_means_served_directly_and_recorded() -> None:
    seen: list[str] = []
    door = make_app(False, seen)
    assert call(door, "POST", "/classify").status_code == 200
    assert seen == ["direct POST /classify"]
    assert door.log.done == [("/classify", 200)]  # type: ignore[union-attr]


def test_before_the_service_exists_everything_goes_behind() -> None:
    seen: list[str] = []
    door = make_app(True, seen)
    door.direct = None  # as between BentoML building the app and the service instance opening the door
    assert call(door, "POST", "/classify").json() == {"served": "behind"}


def test_a_direct_request_that_answers_nothing_in_time_gets_504() -> None:
    async def stuck(scope: object, receive, send) -> None:  # type: ignore[no-untyped-def]
        await asyncio.sleep(10)

    keeper = Keeper()
    response = call(door_around(stuck, keeper, timeout_s=0.05), "POST", "/classify")
    assert response.status_code == 504
    assert keeper.done == [("/classify", 504)]


def test_requests_let_in_are_counted_until_they_finish() -> None:
    counts: list[int] = []
    release = asyncio.Event()
    waiting: list[object] = []

    async def slow(scope: object, receive, send: object) -> None:  # type: ignore[no-untyped-def]
        while (await receive()).get("more_body"):
            pass  # the body is in after this: from here on the request counts
        waiting.append(scope)
        await release.wait()
        await JSONResponse({"served": True})(scope, receive, send)  # type: ignore[arg-type]

    def refuse(in_progress: int) -> Answer | None:
        counts.append(in_progress)
        return FULL if in_progress >= 2 else None

    door = door_around(slow, Keeper(refuse))

    async def go() -> list[int]:
        transport = httpx.ASGITransport(app=door)
        async with httpx.AsyncClient(transport=transport, base_url="http://door") as client:
            first = [asyncio.create_task(client.post("/classify")) for _ in range(2)]
            while len(waiting) < 2:  # both let in and holding their place
                await asyncio.sleep(0)
            third = await client.post("/classify")  # two in progress: refused
            release.set()
            statuses = [r.status_code for r in await asyncio.gather(*first)]
            fourth = await client.post("/classify")  # both finished: room again
            return [*statuses, third.status_code, fourth.status_code]

    assert asyncio.run(go()) == [200, 200, 429, 200]
    assert counts == [0, 1, 2, 0]
    assert door.in_progress == 0


def test_a_request_leaves_the_count_before_its_last_bytes_are_sent() -> None:
    # A client that answers each response with its next request at once must find its place free.
    door = door_around(ok_app, Keeper())
    seen_by_server: list[tuple[str, int]] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:  # what reaches the server's transport, and when
        seen_by_server.append((message["type"], door.in_progress))

    scope = {"type": "http", "method": "POST", "path": "/classify", "headers": []}
    asyncio.run(door(scope, receive, send))  # type: ignore[arg-type]
    assert seen_by_server == [("http.response.start", 1), ("http.response.body", 0)]
    assert door.in_progress == 0


async def ok_app(scope: object, receive, send) -> None:  # type: ignore[no-untyped-def]
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_a_body_still_arriving_is_not_counted() -> None:
    # A client trickling its body must not hold one of the worker's places.
    seen: list[int] = []
    door: FrontDoor

    async def reads_in_parts(scope: object, receive, send) -> None:  # type: ignore[no-untyped-def]
        while (await receive()).get("more_body"):
            seen.append(door.in_progress)
        seen.append(door.in_progress)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    door = door_around(reads_in_parts, Keeper())
    parts = iter([b"a", b"b", b"c"])

    async def receive() -> dict:
        part = next(parts)
        return {"type": "http.request", "body": part, "more_body": part != b"c"}

    async def send(message: dict) -> None:
        pass

    scope = {"type": "http", "method": "POST", "path": "/classify", "headers": []}
    asyncio.run(door(scope, receive, send))  # type: ignore[arg-type]
    assert seen == [0, 0, 1]
    assert door.in_progress == 0


def test_a_request_counts_from_the_door_until_it_waits_for_its_body() -> None:
    # Between the door and the route's first read (BentoML's middlewares) the request is counted;
    # while it waits for a body that is not there yet it is not; once the body is in, it is again.
    seen: list[int] = []
    door: FrontDoor
    body = asyncio.Queue[dict]()

    async def app(scope: object, receive, send) -> None:  # type: ignore[no-untyped-def]
        seen.append(door.in_progress)  # crossing the middlewares
        read = asyncio.create_task(receive())
        await asyncio.sleep(0.01)
        seen.append(door.in_progress)  # waiting for a body that has not arrived
        await body.put({"type": "http.request", "body": b"x", "more_body": False})
        await read
        seen.append(door.in_progress)  # body in
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    door = door_around(app, Keeper())

    async def send(message: dict) -> None:
        pass

    scope = {"type": "http", "method": "POST", "path": "/classify", "headers": []}
    asyncio.run(door(scope, body.get, send))  # type: ignore[arg-type]
    assert seen == [1, 0, 1]
    assert door.in_progress == 0


def test_refusals_are_held_for_spread_out_times_around_the_delay() -> None:
    # One fixed hold sent every client refused together back together: the holds must differ.
    holds = [hold_s(1.0) for _ in range(2000)]
    assert min(holds) >= 0.5 and max(holds) <= 1.5
    assert max(holds) - min(holds) > 0.9  # spread over most of the range, not one value
    assert len(set(holds)) > 1900
