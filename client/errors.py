"""Every error the vitserve client raises, and the one place where HTTP-layer failures become them.

    VitserveError
    ├── ConnectionFailed      the server could not be reached, or dropped the connection (retried)
    ├── Timeout               no answer within the client's timeout, or a 408 (retried)
    ├── ServiceOverloaded     429/503: the server asked us to come back later (retried, honouring
    │                         its Retry-After)
    ├── InvalidRequest        any other 4xx: the request itself is wrong; retrying cannot help
    │   └── InvalidImage      the image is not one the server can classify (corrupt, empty,
    │                         too large, unsupported type)
    ├── ServerError           5xx, or a 2xx body that does not follow the API
    ├── ResultsFileError      existing results cannot be resumed or merged (corrupt, other model,
    │                         another run writing the same shard, unfinished shards)
    └── StorageError          object storage failed after its back-end's retries (network, 5xx,
                              throttling): rerun to resume

Errors that came from the server carry its machine-readable `code` and human `message`; errors of
the layer below (httpx for Client, aiohttp for AsyncClient) are chained with `__cause__`.
"""

from __future__ import annotations

import asyncio
import email.utils
import time

import aiohttp
import httpx

# The server's codes for "this image cannot be classified" (see the service's error contract).
IMAGE_ERROR_CODES = frozenset(
    {"invalid_image", "image_too_large", "payload_too_large", "unsupported_media_type"}
)


class VitserveError(Exception):
    """Base of every error raised by `vitserve.client`."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code  # the server's error code, e.g. "invalid_image"; None for local failures
        self.status = status  # the HTTP status, when there was a response


class ConnectionFailed(VitserveError):
    """The server could not be reached or closed the connection; check the URL and that it runs."""


class Timeout(VitserveError):
    """The server did not answer in time; raise the client's `timeout` or lower the load."""


class ServiceOverloaded(VitserveError):
    """The server is overloaded or not ready yet (429/503); retry after `retry_after` seconds."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status)
        self.retry_after = retry_after  # seconds, from the Retry-After header; None if absent


class InvalidRequest(VitserveError):
    """The server rejected the request (4xx); fix the request, retrying will not help."""


class InvalidImage(InvalidRequest):
    """The server cannot classify this image: corrupt, empty, too large or of an unsupported type."""


class ServerError(VitserveError):
    """The server failed (5xx) or answered something that does not follow its API."""


class ResultsFileError(VitserveError):
    """Existing results cannot be resumed or merged: corrupt, another model's, being written by another
    run, or (merging) shards missing or unfinished. The message says which."""


class StorageError(VitserveError):
    """Object storage failed after the back-end's own retries; rerun to resume. (A missing bucket or
    a denied request is raised as the OSError it is: rerunning cannot fix it.)"""


def error_for_code(code: str, message: str, *, status: int | None = None) -> VitserveError:
    """The exception for a server error `code` (from an error response or one item of a batch)."""
    if status in (429, 503) or code in ("overloaded", "not_ready", "deadline_exceeded", "unavailable"):
        return ServiceOverloaded(message, code=code, status=status)
    if code in IMAGE_ERROR_CODES:
        return InvalidImage(message, code=code, status=status)
    if status is not None and status >= 500:
        return ServerError(message, code=code, status=status)
    # Per-item batch errors have no status; the service only reports caller faults per item.
    return InvalidRequest(message, code=code, status=status)


def error_from_response(response: httpx.Response) -> VitserveError:
    """The exception for a non-2xx response, from its JSON body {"error", "message"} and headers."""
    status = response.status_code
    try:
        body = response.json()
        code, message = str(body["error"]), str(body["message"])
    except (ValueError, KeyError, TypeError):
        # Not our server's error shape (a proxy's HTML page, an empty body): keep the raw text.
        code, message = f"http_{status}", (response.text[:200] or response.reason_phrase)
    if status in (429, 503):
        return ServiceOverloaded(
            message, code=code, status=status, retry_after=parse_retry_after(response.headers)
        )
    if status == 408:  # the server gave up waiting for our upload: a slow link, worth another try
        return Timeout(message, code=code, status=status)
    if 400 <= status < 500:
        return error_for_code(code, message, status=status)
    return ServerError(message, code=code, status=status)


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Retry-After as seconds from now; it may be delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unparseable: fall back to the client's own backoff
    return max(0.0, when.timestamp() - time.time())


def error_from_transport(exc: httpx.RequestError) -> VitserveError:
    """The one translation of httpx's failures; the original stays reachable as `__cause__`."""
    error: VitserveError
    if isinstance(exc, httpx.TimeoutException):
        error = Timeout(f"no answer from {_where(exc)} in time ({type(exc).__name__})")
    elif isinstance(exc, httpx.TransportError):
        error = ConnectionFailed(f"cannot talk to {_where(exc)}: {exc or type(exc).__name__}")
    else:  # DecodingError, TooManyRedirects: the server answered, but not in a way we can use
        error = ServerError(f"unusable response from {_where(exc)}: {exc}", code="invalid_response")
    error.__cause__ = exc
    return error


def error_from_aiohttp(exc: aiohttp.ClientError | asyncio.TimeoutError, url: str) -> VitserveError:
    """The same translation for AsyncClient's transport; the original stays reachable as `__cause__`."""
    error: VitserveError
    if isinstance(exc, asyncio.TimeoutError):  # aiohttp's connect and read timeouts are ones too
        error = Timeout(f"no answer from {url} in time ({type(exc).__name__})")
    elif isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        # Refused, reset, dropped mid-answer: the connection failed, not the request.
        error = ConnectionFailed(f"cannot talk to {url}: {exc or type(exc).__name__}")
    else:  # a malformed answer, too many redirects: the server answered, but not usably
        error = ServerError(f"unusable response from {url}: {exc}", code="invalid_response")
    error.__cause__ = exc
    return error


def _where(exc: httpx.RequestError) -> str:
    try:
        return str(exc.request.url)
    except RuntimeError:  # httpx raises this when the error has no request attached
        return "the server"
