"""Client and AsyncClient over real HTTP against a scripted stdlib server: retries, Retry-After, errors."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from vitserve.client import (
    AsyncClient,
    Client,
    ConnectionFailed,
    InvalidImage,
    ServerError,
    ServiceOverloaded,
    Timeout,
)

IMAGE = b"\x89PNG\r\n\x1a\nnot really"


def overloaded(retry_after: str) -> tuple[int, dict[str, str], object]:
    return (429, {"Retry-After": retry_after}, {"error": "overloaded", "message": "queue full"})


def test_client_waits_retry_after_then_succeeds(
    stub_server: Callable[..., Any], prediction_body: Callable[..., Any]
) -> None:
    server = stub_server([overloaded("1"), (200, {}, prediction_body("3"))])
    with Client(server.url, retries=2) as client:
        prediction = client.classify(IMAGE, top_k=2)
    assert prediction.label == "3"
    # The retry came no sooner than the server's 1 s (the client's own backoff would be 0.5 s); the
    # exact sleep each Retry-After gives is pinned without a clock in test_client_protocol.py.
    first, second = server.recorded.arrived
    assert second - first >= 1.0
    assert server.recorded.paths == ["/classify", "/classify"]
    assert b'name="top_k"' in server.recorded.bodies[1] and IMAGE in server.recorded.bodies[1]


def test_async_client_waits_retry_after_then_succeeds(
    stub_server: Callable[..., Any], prediction_body: Callable[..., Any]
) -> None:
    server = stub_server([overloaded("1"), (200, {}, prediction_body("8"))])

    async def run() -> list[Any]:
        async with AsyncClient(server.url, retries=2) as client:
            first = asyncio.create_task(client.classify(IMAGE))
            # Until the 429 has come back and closed the client's gate (the gate has no public face).
            while not first.done() and client._gate.wait_time() == 0.0:
                await asyncio.sleep(0.01)
            assert len(server.recorded.paths) == 1
            # These two never got a 429 themselves, yet wait for the gate instead of adding load.
            others = await asyncio.gather(client.classify(IMAGE), client.classify(IMAGE))
            return [await first, *others]

    results = asyncio.run(run())
    assert [p.label for p in results] == ["8", "8", "8"]
    assert len(server.recorded.paths) == 4  # one 429, then one success each
    # No request reached the server inside the 429's 1 s: the two others waited for the gate too.
    refused_at = server.recorded.arrived[0]
    assert all(t - refused_at >= 1.0 for t in server.recorded.arrived[1:])


def test_overload_that_persists_is_raised_with_retry_after(stub_server: Callable[..., Any]) -> None:
    server = stub_server([overloaded("0")])
    with Client(server.url, retries=2) as client, pytest.raises(ServiceOverloaded) as raised:
        client.classify(IMAGE)
    assert raised.value.retry_after == 0.0 and raised.value.status == 429
    assert len(server.recorded.paths) == 3


def test_invalid_image_is_raised_at_once(stub_server: Callable[..., Any]) -> None:
    server = stub_server([(400, {}, {"error": "invalid_image", "message": "truncated PNG"})])
    with (
        Client(server.url, retries=5) as client,
        pytest.raises(InvalidImage, match="truncated PNG") as raised,
    ):
        client.classify(IMAGE)
    assert raised.value.code == "invalid_image"
    assert len(server.recorded.paths) == 1


def test_a_500_is_not_retried_and_a_bad_body_is_a_server_error(stub_server: Callable[..., Any]) -> None:
    server = stub_server([(500, {}, {"error": "internal", "message": "boom"})])
    with Client(server.url, retries=5) as client, pytest.raises(ServerError, match="boom"):
        client.model_info()
    assert len(server.recorded.paths) == 1
    server = stub_server([(200, {}, b"<html>")])
    with Client(server.url) as client, pytest.raises(ServerError, match="not JSON"):
        client.model_info()


def test_connection_refused_is_retried_then_raised_chained() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", retries=2, backoff=0.05) as client:
        started = time.monotonic()
        with pytest.raises(ConnectionFailed) as raised:
            client.classify(IMAGE)
        assert time.monotonic() - started >= (0.05 + 0.1) * 0.75  # two backoffs, jitter included
    assert isinstance(raised.value.__cause__, httpx.ConnectError)

    async def run() -> None:
        async with AsyncClient(f"http://127.0.0.1:{port}", retries=0) as client:
            await client.model_info()

    with pytest.raises(ConnectionFailed):
        asyncio.run(run())


def test_a_silent_server_is_a_timeout() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()  # accepts connections but never answers
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with Client(url, timeout=0.2, retries=0) as client, pytest.raises(Timeout) as raised:
            client.classify(IMAGE)
        assert isinstance(raised.value.__cause__, httpx.TimeoutException)

        async def run() -> None:
            async with AsyncClient(url, timeout=0.2, retries=0) as client:
                await client.classify(IMAGE)

        with pytest.raises(Timeout) as raised:
            asyncio.run(run())
        assert isinstance(raised.value.__cause__, TimeoutError)  # aiohttp's timeouts are ones
