"""Errors of the public API and the one way an answer is rendered: one JSON body shape, one status per code.

Every refusal, whole request or single image, is an `ApiError` with a code from `ErrorCode`; the type
checker refuses a code that does not exist, so a typo on a rare path cannot become a 500.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from vitserve.runtime.decode import DecodeError

ErrorCode = Literal[
    "bad_request",
    "invalid_image",
    "url_not_allowed",
    "request_timeout",
    "payload_too_large",
    "image_too_large",
    "unsupported_media_type",
    "invalid_parameter",
    "overloaded",
    "not_ready",
    "deadline_exceeded",
    "unavailable",
]
# The `reason` label of vitserve_requests_rejected: a few kinds an operator alerts on, not every code.
RejectReason = Literal[
    "bad_input", "slow_body", "too_large", "overloaded", "unsupported_media_type", "not_ready", "unavailable"
]
REJECT_REASONS: tuple[RejectReason, ...] = get_args(RejectReason)

ERROR_CODES: dict[ErrorCode, tuple[int, RejectReason]] = {
    "bad_request": (400, "bad_input"),
    "invalid_image": (400, "bad_input"),
    "url_not_allowed": (400, "bad_input"),
    "request_timeout": (408, "slow_body"),
    "payload_too_large": (413, "too_large"),
    "image_too_large": (413, "too_large"),
    "unsupported_media_type": (415, "unsupported_media_type"),
    "invalid_parameter": (422, "bad_input"),
    "overloaded": (429, "overloaded"),
    "not_ready": (503, "not_ready"),
    "deadline_exceeded": (503, "overloaded"),
    "unavailable": (503, "unavailable"),
}
OVERLOADED = ERROR_CODES["overloaded"][0]


class ApiError(Exception):
    """An error the client caused or must wait out; rendered as {"error": code, "message": ...}."""

    def __init__(self, code: ErrorCode, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s

    @property
    def status(self) -> int:
        return ERROR_CODES[self.code][0]

    @property
    def reason(self) -> RejectReason:
        return ERROR_CODES[self.code][1]

    def body(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}


def from_decode_error(exc: DecodeError) -> ApiError:
    """Each DecodeError kind carries the error code it is answered with (runtime/decode.py)."""
    code = exc.code if exc.code in ERROR_CODES else "invalid_image"
    return ApiError(code, str(exc))  # type: ignore[arg-type]  # checked against ERROR_CODES just above


@dataclass(frozen=True)
class Answer:
    """A whole HTTP answer: a JSON body (a mapping) or raw bytes of `media_type`."""

    status: int
    body: Mapping[str, Any] | bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    media_type: str = "application/json"

    def content(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else json_bytes(self.body)


def json_bytes(body: Mapping[str, Any]) -> bytes:
    """What Starlette's JSONResponse sends, byte for byte."""
    return json.dumps(body, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


def error_answer(exc: ApiError) -> Answer:
    """The one rendering of an error answer; `Flow.error_answer` counts it as it renders it."""
    return Answer(exc.status, exc.body(), exc.headers())
