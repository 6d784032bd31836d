"""The client's logic without its I/O: each API call is a generator of steps (send this, sleep that).

`Client` and `AsyncClient` differ only in how they carry out a step (blocking vs awaiting), so
request building, retries, the batch fallback and response parsing live here once and are tested
without a network. An operation yields `Send` (and receives the `httpx.Response`, or the
VitserveError its transport failed with) or `Sleep` (and receives None), and returns its result.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import httpx

from vitserve.client.errors import (
    InvalidImage,
    InvalidRequest,
    ServerError,
    ServiceOverloaded,
    VitserveError,
    error_for_code,
    error_from_response,
)
from vitserve.client.images import ImagePayload
from vitserve.client.results import (
    ModelInfo,
    Prediction,
    parse_model_info,
    parse_model_ref,
    parse_prediction,
)
from vitserve.client.retry import OverloadGate, RetryPolicy

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:3000"  # `vitserve serve`'s default address


@dataclass(frozen=True)
class Send:
    """Send this request; the client's base URL, headers and timeout are added by the client."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)  # multipart form fields
    files: tuple[tuple[str, tuple[str, bytes, str]], ...] = ()  # (field, (filename, bytes, type))

    def body(self) -> tuple[dict[str, str], bytes | None]:
        """The request's headers and body: multipart/form-data when it has fields or files."""
        if not self.data and not self.files:
            return {}, None
        return encode_multipart(self.data, self.files)


def encode_multipart(
    data: dict[str, str], files: tuple[tuple[str, tuple[str, bytes, str]], ...]
) -> tuple[dict[str, str], bytes]:
    """A multipart/form-data body (RFC 7578) in one bytes object, and its Content-Type header.

    httpx's own encoder streams a body as a chunk per part header, per file and per separator,
    and its transport sends each chunk as a socket write under a timeout scope of its own: for a
    batch of small images that was most of the scorer's CPU. One joined body is one write.
    """
    boundary = os.urandom(16).hex()  # random, as httpx's: 128 bits never turn up inside an image
    dash = f"--{boundary}\r\n".encode()
    chunks: list[bytes] = []
    for name, value in data.items():
        chunks += [dash, f'Content-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'.encode()]
        chunks += [value.encode(), b"\r\n"]
    for name, (filename, content, content_type) in files:
        disposition = f'form-data; name="{_quote(name)}"; filename="{_quote(filename)}"'
        chunks.append(dash)
        head = f"Content-Disposition: {disposition}\r\nContent-Type: {content_type}\r\n\r\n"
        chunks.append(head.encode("utf-8", "surrogateescape"))  # a path that is not UTF-8 keeps its bytes
        chunks += [content, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}, b"".join(chunks)


# WHATWG HTML's form encoding of a header parameter, as browsers and httpx write it: quote and
# backslash escaped, control characters (but ESC) percent-encoded.
_FORM_PARAM = str.maketrans(
    {'"': "%22", "\\": "\\\\"} | {chr(c): f"%{c:02X}" for c in range(0x20) if c != 0x1B}
)


def _quote(value: str) -> str:
    return value.translate(_FORM_PARAM)


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step: TypeAlias = Send | Sleep
Reply: TypeAlias = httpx.Response | VitserveError | None
Operation: TypeAlias = Generator[Step, Reply, T]
# One result per input image: its prediction, or the error the server gave for that image alone.
ItemResult: TypeAlias = Prediction | InvalidRequest


def classify(
    payload: ImagePayload, top_k: int | None, policy: RetryPolicy, gate: OverloadGate
) -> Operation[Prediction]:
    """POST /classify with one image."""
    response = yield from _send_with_retries(
        Send("POST", "/classify", data=_top_k_field(top_k), files=(_file_field("image", payload),)),
        policy,
        gate,
    )
    return parse_prediction(_json(response))


def classify_batch(
    payloads: Sequence[ImagePayload], top_k: int | None, policy: RetryPolicy, gate: OverloadGate
) -> Operation[list[ItemResult]]:
    """POST /classify_batch with several images; per-image failures come back in their place."""
    send = Send(
        "POST",
        "/classify_batch",
        data=_top_k_field(top_k),
        files=tuple(_file_field("images", p) for p in payloads),
    )
    response = yield from _send_with_retries(send, policy, gate)
    return parse_batch(_json(response), expected=len(payloads))


def classify_many(
    payloads: Sequence[ImagePayload],
    top_k: int | None,
    batch_size: int,
    policy: RetryPolicy,
    gate: OverloadGate,
) -> Operation[list[ItemResult]]:
    """Classify all `payloads` in chunks of `batch_size`, in order.

    If the server rejects a whole chunk because of its images (one undecodable file, the chunk too
    large), the chunk's images are sent one by one so that only the bad ones fail.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    results: list[ItemResult] = []
    for start in range(0, len(payloads), batch_size):
        chunk = payloads[start : start + batch_size]
        if len(chunk) > 1:
            try:
                results.extend((yield from classify_batch(chunk, top_k, policy, gate)))
                continue
            except InvalidImage:
                pass  # fall through to one request per image, which isolates the bad one
        for payload in chunk:
            try:
                results.append((yield from classify(payload, top_k, policy, gate)))
            except InvalidImage as error:
                results.append(error)
    return results


def model_info(policy: RetryPolicy, gate: OverloadGate) -> Operation[ModelInfo]:
    """GET /model."""
    response = yield from _send_with_retries(Send("GET", "/model"), policy, gate)
    return parse_model_info(_json(response))


def ready() -> Operation[bool]:
    """GET /readyz once, without retries: True when the server takes requests, False while not ready."""
    reply = yield Send("GET", "/readyz")
    if isinstance(reply, VitserveError):
        raise reply
    if reply is None:
        raise RuntimeError("the client answered a Send step with None")  # a bug in the driver
    if reply.is_success:
        return True
    if reply.status_code == 503:
        return False
    raise error_from_response(reply)


def parse_batch(body: Any, expected: int) -> list[ItemResult]:
    """The items of a /classify_batch body, each a Prediction or the InvalidRequest for that image."""
    try:
        items, model = body["results"], parse_model_ref(body["model"])
        if not isinstance(items, list):
            raise TypeError(f"results is a {type(items).__name__}")
    except (KeyError, TypeError) as exc:
        raise ServerError(
            f"the server's batch answer does not follow the API: {exc}", code="invalid_response"
        ) from exc
    if len(items) != expected:
        raise ServerError(
            f"sent {expected} images but the server answered {len(items)} results", code="invalid_response"
        )
    results: list[ItemResult] = []
    for item in items:
        if isinstance(item, dict) and "error" in item:
            error = error_for_code(str(item["error"]), str(item.get("message", "")))
            if not isinstance(error, InvalidRequest):
                raise error  # overload reported per item means the whole request should be retried
            results.append(error)
        else:
            results.append(parse_prediction(item, model=model))
    return results


def check_base_url(base_url: str) -> str:
    """`base_url` if it is an http(s) URL with a host; ValueError naming the expected shape if not."""
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"invalid server URL {base_url!r}: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"the server URL must look like http://host:port, got {base_url!r}")
    return base_url


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of `size` consecutive items (the last may be shorter), taken lazily."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _send_with_retries(send: Send, policy: RetryPolicy, gate: OverloadGate) -> Operation[httpx.Response]:
    """Send until a 2xx comes back; raises the mapped error once it is not retryable or retries ran out."""
    attempt = 0
    while True:
        if (wait := gate.wait_time()) > 0:
            yield Sleep(wait)
        reply = yield send
        if isinstance(reply, httpx.Response) and reply.is_success:
            return reply
        error = error_from_response(reply) if isinstance(reply, httpx.Response) else reply
        if error is None:
            raise RuntimeError("the client answered a Send step with None")  # a bug in the driver
        retry_after = error.retry_after if isinstance(error, ServiceOverloaded) else None
        if retry_after is not None:
            # Then the wait is the gate's, at the top of the loop, shared with every other request.
            gate.hold(min(retry_after, policy.max_backoff))
        delay = policy.delay(attempt, error)
        if delay is None:
            raise error
        attempt += 1
        if retry_after is None:
            yield Sleep(delay)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise ServerError(
            f"the server answered {response.status_code} with a body that is not JSON",
            code="invalid_response",
        ) from exc


def _file_field(name: str, payload: ImagePayload) -> tuple[str, tuple[str, bytes, str]]:
    return (name, (payload.filename, payload.data, payload.content_type))


def _top_k_field(top_k: int | None) -> dict[str, str]:
    if top_k is None:
        return {}
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    return {"top_k": str(top_k)}
