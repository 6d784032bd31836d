"""The error tree and the one mapping from HTTP responses and httpx failures to it."""

from __future__ import annotations

import email.utils
import time

import aiohttp
import httpx
import pytest

from vitserve.client import errors
from vitserve.client.errors import (
    ConnectionFailed,
    InvalidImage,
    InvalidRequest,
    ServerError,
    ServiceOverloaded,
    Timeout,
    VitserveError,
    error_from_aiohttp,
    error_from_response,
    error_from_transport,
)


def response(status: int, body: object = None, headers: dict[str, str] | None = None) -> httpx.Response:
    if isinstance(body, str):
        return httpx.Response(status, text=body, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, "invalid_image", InvalidImage),
        (413, "image_too_large", InvalidImage),
        (413, "payload_too_large", InvalidImage),
        (415, "unsupported_media_type", InvalidImage),
        (400, "bad_request", InvalidRequest),
        (422, "invalid_parameter", InvalidRequest),
        (429, "overloaded", ServiceOverloaded),
        (503, "not_ready", ServiceOverloaded),
        (503, "unavailable", ServiceOverloaded),
        (500, "internal", ServerError),
        (408, "request_timeout", Timeout),
    ],
)
def test_error_response_maps_to_its_class_with_code_and_message(
    status: int, code: str, kind: type[VitserveError]
) -> None:
    error = error_from_response(response(status, {"error": code, "message": "what went wrong"}))
    assert type(error) is kind
    assert (error.code, error.message, error.status) == (code, "what went wrong", status)
    assert str(error) == "what went wrong"


def test_invalid_image_is_an_invalid_request_and_everything_is_a_vitserve_error() -> None:
    assert issubclass(InvalidImage, InvalidRequest)
    for kind in (
        ConnectionFailed,
        Timeout,
        ServiceOverloaded,
        InvalidRequest,
        ServerError,
        errors.ResultsFileError,
    ):
        assert issubclass(kind, VitserveError)


def test_retry_after_seconds_and_http_date() -> None:
    error = error_from_response(
        response(429, {"error": "overloaded", "message": "busy"}, {"Retry-After": "3"})
    )
    assert isinstance(error, ServiceOverloaded) and error.retry_after == 3.0
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    error = error_from_response(
        response(503, {"error": "overloaded", "message": "busy"}, {"Retry-After": future})
    )
    assert isinstance(error, ServiceOverloaded) and 25 < (error.retry_after or 0) <= 30
    error = error_from_response(response(503, {"error": "overloaded", "message": "busy"}))
    assert isinstance(error, ServiceOverloaded) and error.retry_after is None
    error = error_from_response(
        response(429, {"error": "overloaded", "message": "x"}, {"Retry-After": "soon"})
    )
    assert isinstance(error, ServiceOverloaded) and error.retry_after is None


def test_a_body_that_is_not_the_api_error_shape_keeps_the_status_and_text() -> None:
    error = error_from_response(response(502, "<html>Bad Gateway</html>"))
    assert isinstance(error, ServerError)
    assert (error.code, error.status) == ("http_502", 502)
    assert "Bad Gateway" in error.message
    assert isinstance(error_from_response(response(404, "")), InvalidRequest)


def test_transport_errors_are_translated_and_chained() -> None:
    request = httpx.Request("POST", "http://127.0.0.1:9/classify")
    for cause, kind in [
        (httpx.ConnectError("refused", request=request), ConnectionFailed),
        (httpx.RemoteProtocolError("dropped", request=request), ConnectionFailed),
        (httpx.ReadTimeout("slow", request=request), Timeout),
        (httpx.ConnectTimeout("slow", request=request), Timeout),
        (httpx.DecodingError("gzip?", request=request), ServerError),
    ]:
        error = error_from_transport(cause)
        assert type(error) is kind
        assert error.__cause__ is cause
        assert "127.0.0.1:9/classify" in str(error)
        with pytest.raises(kind) as raised:
            raise error
        assert raised.value.__cause__ is cause


def test_aiohttp_errors_are_translated_and_chained() -> None:
    url = "http://127.0.0.1:9/classify"
    cases: list[tuple[aiohttp.ClientError | TimeoutError, type[Exception]]] = [
        (aiohttp.ServerDisconnectedError(), ConnectionFailed),
        (aiohttp.ClientOSError(111, "refused"), ConnectionFailed),
        (aiohttp.ClientPayloadError("dropped mid-body"), ConnectionFailed),
        (aiohttp.ServerTimeoutError("slow"), Timeout),
        (TimeoutError(), Timeout),
        (aiohttp.InvalidURL("http://[::1"), ServerError),
    ]
    for cause, kind in cases:
        error = error_from_aiohttp(cause, url)
        assert type(error) is kind and error.__cause__ is cause and url in str(error)
