"""BentoML's request timeout with our timer fix: same answers, and nothing of a request outlives it."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref

from bentoml._internal.server.http.traffic import TimeoutMiddleware

from vitserve.service.bento.request_timeout import cancel_request_timers

cancel_request_timers()
REQUEST_STATE: contextvars.ContextVar[object] = contextvars.ContextVar("request_state")


class State:
    """Stands for what BentoML's outer middlewares put in a request's context (its trace span)."""


async def serve(app: object, timeout: float) -> list[dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    await TimeoutMiddleware(app, timeout=timeout)(scope, receive, send)  # type: ignore[arg-type]
    return sent


async def ok_app(scope: object, receive: object, send) -> None:  # type: ignore[no-untyped-def]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_an_answered_request_leaves_nothing_behind() -> None:
    async def one_request() -> weakref.ref[State]:
        state = State()
        REQUEST_STATE.set(state)  # the request's context now holds it, as OTel's span is held
        sent = await serve(ok_app, timeout=60)
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
        return weakref.ref(state)

    async def main() -> bool:
        # A task of its own, like a request: its context is dropped when it ends, unless a timer keeps it.
        ref = await asyncio.create_task(one_request())
        await asyncio.sleep(0)
        gc.collect()
        return ref() is None  # asked while the loop still runs: closing it would drop any timer

    assert asyncio.run(main()), "the request's context outlived it (a 60 s timer still holds it)"


def test_a_request_that_sends_nothing_in_time_gets_504() -> None:
    async def stuck(scope: object, receive: object, send: object) -> None:
        await asyncio.sleep(10)

    sent = asyncio.run(serve(stuck, timeout=0.05))
    assert sent[0]["status"] == 504
    assert b"Not able to process the request in 0.05 seconds" in sent[1]["body"]


def test_a_slow_body_after_a_prompt_start_is_not_cut() -> None:
    async def streams(scope: object, receive: object, send) -> None:  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.1)  # past the timeout, but the response has started
        await send({"type": "http.response.body", "body": b"late"})

    sent = asyncio.run(serve(streams, timeout=0.05))
    assert [m.get("status") for m in sent] == [200, None]
    assert sent[1]["body"] == b"late"
