"""v2 errors: the body `{"error": "..."}`, an HTTP status and the gRPC code of the same failure."""

from __future__ import annotations

from vitserve.service.flow.errors import ApiError, RejectReason

# HTTP status -> gRPC status code name (grpc.StatusCode[...]); 503 from a batch-queue deadline is
# DEADLINE_EXCEEDED instead (`V2Error.grpc_code`).
GRPC_CODES = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}
# The statuses a v2 client gets as they are; every other client error of /classify's (415 for an
# unsupported image format, 422 for a bad parameter) is a 400 here, as the protocol has no others.
KEPT_STATUSES = frozenset({408, 413, 429, 503})


class V2Error(Exception):
    """A failed v2 request: what to tell the client, with which status, and why (for the metrics)."""

    def __init__(
        self,
        status: int,
        message: str,
        reason: RejectReason = "bad_input",
        retry_after_s: int | None = None,
        deadline: bool = False,
    ) -> None:
        super().__init__(message)
        if status not in GRPC_CODES:
            raise ValueError(f"no v2 error has status {status}")
        self.status = status
        self.message = message
        self.reason = reason  # vitserve_requests_rejected's label
        self.retry_after_s = retry_after_s
        self.deadline = deadline

    @property
    def grpc_code(self) -> str:
        return "DEADLINE_EXCEEDED" if self.deadline else GRPC_CODES[self.status]

    def body(self) -> dict[str, str]:
        return {"error": self.message}

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}


def bad_request(message: str) -> V2Error:
    return V2Error(400, message)


def not_found(message: str) -> V2Error:
    return V2Error(404, message)


def too_large(message: str) -> V2Error:
    return V2Error(413, message, reason="too_large")


def from_api_error(exc: ApiError, prefix: str = "") -> V2Error:
    """The v2 form of an error of the classify flow or of body reading; `prefix` says which image."""
    status = exc.status if exc.status in KEPT_STATUSES else 400
    return V2Error(
        status,
        prefix + exc.message,
        reason=exc.reason,
        retry_after_s=exc.retry_after_s,
        deadline=exc.code == "deadline_exceeded",
    )
