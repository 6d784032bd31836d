"""The front door answers refused requests itself and passes everything else through untouched.

The real server's behaviour (sheds never reach BentoML's request metrics) is tested in
test_overload_and_openapi.py; here the ASGI wrapper is driven directly around a Starlette app.
"""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from vitserve.service.front_door import FrontDoor, Refusal

FULL = Refusal(429, {"error": "overloaded", "message": "no room"}, {"Retry-After": "3"})


def make_app(refuse_when: set[str], seen: list[str]) -> FrontDoor:
    async def endpoint(request: Request) -> JSONResponse:
        seen.append(f"{request.method} {request.url.path}")
        return JSONResponse({"served": True})

    inner = Starlette(routes=[Route(p, endpoint, methods=["GET", "POST"]) for p in ("/classify", "/other")])
    return FrontDoor(inner, frozenset({"/classify"}), lambda path, _: FULL if path in refuse_when else None)


def call(app: FrontDoor, method: str, path: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://door") as client:
            return await client.request(method, path, content=b"x" * 1000)

    return asyncio.run(go())


def test_a_refused_post_is_answered_without_reaching_the_app() -> None:
    seen: list[str] = []
    response = call(make_app({"/classify"}, seen), "POST", "/classify")
    assert response.status_code == 429
    assert response.json() == {"error": "overloaded", "message": "no room"}
    assert response.headers["retry-after"] == "3"
    assert response.headers["content-type"] == "application/json"
    assert seen == []


def test_everything_else_passes_through() -> None:
    seen: list[str] = []
    app = make_app({"/classify"}, seen)
    assert call(app, "GET", "/classify").json() == {"served": True}  # only POSTs are refused
    assert call(app, "POST", "/other").json() == {"served": True}  # not a guarded path
    assert seen == ["GET /classify", "POST /other"]


def test_room_means_served() -> None:
    seen: list[str] = []
    assert call(make_app(set(), seen), "POST", "/classify").status_code == 200
    assert seen == ["POST /classify"]


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

    def refuse(path: str, in_progress: int) -> Refusal | None:
        counts.append(in_progress)
        return FULL if in_progress >= 2 else None

    door = FrontDoor(slow, frozenset({"/classify"}), refuse)

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
    door = FrontDoor(ok_app, frozenset({"/classify"}), lambda path, _: None)  # type: ignore[arg-type]
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

    door = FrontDoor(reads_in_parts, frozenset({"/classify"}), lambda path, _: None)  # type: ignore[arg-type]
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

    door = FrontDoor(app, frozenset({"/classify"}), lambda path, _: None)  # type: ignore[arg-type]

    async def send(message: dict) -> None:
        pass

    scope = {"type": "http", "method": "POST", "path": "/classify", "headers": []}
    asyncio.run(door(scope, body.get, send))  # type: ignore[arg-type]
    assert seen == [1, 0, 1]
    assert door.in_progress == 0
