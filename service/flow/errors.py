"""HTTP errors of the public API: one JSON body shape, one status per kind of problem."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vitserve.runtime.decode import DecodeError

# error code -> (HTTP status, rejection reason label for vitserve_requests_rejected)
ERROR_CODES: dict[str, tuple[int, str]] = {
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


class ApiError(Exception):
    """An error the client caused or must wait out; rendered as {"error": code, "message": ...}."""

    def __init__(self, code: str, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s

    @property
    def status(self) -> int:
        return ERROR_CODES[self.code][0]

    @property
    def reason(self) -> str:
        return ERROR_CODES[self.code][1]

    def body(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}


def from_decode_error(exc: DecodeError) -> ApiError:
    """Each DecodeError kind carries the error code it is answered with (runtime/decode.py)."""
    return ApiError(exc.code if exc.code in ERROR_CODES else "invalid_image", str(exc))
