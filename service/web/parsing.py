"""HTTP request -> image bytes and options, for both upload forms the API accepts.

A client may send a multipart form (`curl -F image=@digit.png`) or the raw image as the body with an
image content type (`curl --data-binary @digit.jpg -H 'Content-Type: image/jpeg'`). Both are parsed
here, by us rather than by BentoML's IO descriptors: those fetch URLs given in a file field (a
server-side request forgery hole) and cannot take both forms on one route.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers, QueryParams
from starlette.requests import ClientDisconnect, Request

from vitserve.service.flow.errors import ApiError
from vitserve.service.web.multipart import MultipartError, Part, parse_form

RAW_CONTENT_TYPES = ("image/", "application/octet-stream")
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


@dataclass(frozen=True)
class RequestParts:
    """What parsing needs of an HTTP request: from a Starlette Request (the FastAPI routes) or straight
    from ASGI (the classify endpoint, service/web/endpoints.py, which builds no Request at all)."""

    headers: Headers
    query: QueryParams
    body: AsyncIterator[bytes]

    @classmethod
    def of(cls, request: Request) -> RequestParts:
        return cls(request.headers, request.query_params, request.stream())

    @classmethod
    def from_asgi(cls, scope: MutableMapping[str, Any], receive: Receive) -> RequestParts:
        return cls(Headers(scope=scope), QueryParams(scope["query_string"]), _received_body(receive))


async def _received_body(receive: Receive) -> AsyncGenerator[bytes, None]:
    """The body's chunks as ASGI delivers them; what Starlette's Request.stream() does, minus the Request."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


@dataclass(frozen=True)
class ImageRequest:
    images: tuple[bytes, ...]
    top_k: int


async def read_body(request: RequestParts, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, refused with 413 as soon as it passes max_bytes (declared or streamed), or with
    408 if it has not all arrived within timeout_s (a trickling client must not hold a worker's slot)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > max_bytes:
                raise ApiError("payload_too_large", f"the body is {declared} bytes; the limit is {max_bytes}")
        except ValueError as exc:
            raise ApiError("bad_request", f"invalid Content-Length {declared!r}") from exc
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):  # one timer: anyio's cancel scope cost the loop more
            async for chunk in request.body:
                size += len(chunk)
                if size > max_bytes:
                    raise ApiError("payload_too_large", f"the body exceeds the limit of {max_bytes} bytes")
                chunks.append(chunk)
    except ClientDisconnect as exc:
        raise ApiError("bad_request", "the client disconnected before the body was complete") from exc
    except TimeoutError as exc:
        raise ApiError(
            "request_timeout",
            f"the body did not arrive within {timeout_s:g} s ({size} bytes received); send it in one go",
        ) from exc
    return b"".join(chunks)


def refuse_unknown_query(query: QueryParams, known: frozenset[str]) -> None:
    """An unknown query parameter is refused, not ignored: `?topk=3` silently answering with the
    default number of classes would hide the client's typo."""
    unknown = sorted(set(query) - known)
    if unknown:
        raise ApiError("invalid_parameter", f"unknown query parameter(s) {unknown}; known: {sorted(known)}")


def parse_top_k(raw: str | None, default: int, num_classes: int) -> int:
    if raw is None:
        return min(default, num_classes)
    # An empty value ("top_k=") is not an integer either: the schema says so, and silently using the
    # default would hide a client bug.
    try:
        value = int(raw)
    except ValueError as exc:
        raise ApiError("invalid_parameter", f"top_k must be an integer, not {raw!r}") from exc
    if value < 1:
        raise ApiError("invalid_parameter", f"top_k must be >= 1, got {value}")
    return min(value, num_classes)  # capped at the number of classes, as documented


def _file_bytes(field: str, part: Part) -> bytes:
    if not part.is_file:
        # A string where a file belongs is often a URL; this service never fetches on a client's behalf.
        raise ApiError(
            "url_not_allowed",
            f"field '{field}' must be an uploaded file; text and URLs are not accepted (nothing is fetched)",
        )
    return part.data


async def parse_image_request(
    request: RequestParts,
    field: str,
    many: bool,
    max_bytes: int,
    body_timeout_s: float,
    max_images: int,
    default_top_k: int,
    num_classes: int,
) -> ImageRequest:
    """Parse /classify (one image in `field`) or /classify_batch (repeated `field`)."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    body = await read_body(request, max_bytes, body_timeout_s)
    if len(request.query.getlist("top_k")) > 1:
        raise ApiError("invalid_parameter", "top_k is given more than once")
    # Validated even when the form also sets top_k (the form wins): a bad value is never ignored.
    top_k = parse_top_k(request.query.get("top_k"), default_top_k, num_classes)
    if media_type == "multipart/form-data":
        try:
            parts = parse_form(body, content_type, max_files=max_images, max_fields=16, max_field_size=1024)
        except MultipartError as exc:
            raise ApiError("bad_request", f"malformed multipart body: {exc}") from exc
        values = [p for p in parts if p.name == field]
        if not values:
            raise ApiError("bad_request", f"the multipart body has no '{field}' field")
        if not many and len(values) > 1:
            raise ApiError("bad_request", f"send one '{field}'; use /classify_batch for several images")
        images = tuple(_file_bytes(field, v) for v in values)
        form_top_k = [p for p in parts if p.name == "top_k"]
        if len(form_top_k) > 1:
            raise ApiError("invalid_parameter", "top_k is given more than once")
        if form_top_k:
            if form_top_k[0].is_file:
                raise ApiError("invalid_parameter", "top_k must be a form field, not a file")
            top_k = parse_top_k(form_top_k[0].text(), default_top_k, num_classes)
    elif not many and media_type.startswith(RAW_CONTENT_TYPES):
        images = (body,)
    elif many:
        raise ApiError(
            "unsupported_media_type",
            f"send multipart/form-data with repeated '{field}' file fields, not {media_type or 'no type'}",
        )
    else:
        raise ApiError(
            "unsupported_media_type",
            f"send multipart/form-data with an '{field}' file, or the raw image with an image/* "
            f"Content-Type; got {media_type or 'no Content-Type'}",
        )
    if len(images) > max_images:
        raise ApiError("payload_too_large", f"{len(images)} images in one request; the limit is {max_images}")
    return ImageRequest(images=images, top_k=top_k)
