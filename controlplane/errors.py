"""One error hierarchy for every slaplane process, mapped to OpenAI-style JSON only at the edge.

Code deep inside the gateway raises these; the HTTP layer turns any of them into
``{"error": {"message", "type", "param", "code"}}`` with the right status, so a
client never sees a traceback and every rejection has a machine-readable code.
"""

from __future__ import annotations

from typing import Any


class SlaplaneError(Exception):
    """Base class: carries the HTTP status and the OpenAI error ``type``/``code``."""

    status: int = 500
    error_type: str = "internal_error"
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after_s = retry_after_s
        if code is not None:
            self.code = code

    def to_openai(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        # Retry-After is whole seconds (RFC 9110); never advertise 0, clients spin on it.
        return {"Retry-After": str(max(1, int(-(-self.retry_after_s // 1))))}


class BadRequest(SlaplaneError):
    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class ValidationFailed(SlaplaneError):
    """The JSON parsed but a field is missing or has the wrong type/value."""

    status = 422
    error_type = "invalid_request_error"
    code = "invalid_value"


class Unauthorized(SlaplaneError):
    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class NotFound(SlaplaneError):
    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class PayloadTooLarge(SlaplaneError):
    status = 413
    error_type = "invalid_request_error"
    code = "payload_too_large"


class RateLimited(SlaplaneError):
    """Admission said no (rate limit, concurrency, admit fraction, predicted SLA miss)."""

    status = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class NoCapacity(SlaplaneError):
    """No worker can take the request at all (none registered or all broken)."""

    status = 503
    error_type = "service_unavailable"
    code = "no_workers"


class UpstreamError(SlaplaneError):
    """A worker failed; ``retryable`` is true only before any byte reached the client."""

    status = 502
    error_type = "upstream_error"
    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        upstream_status: int = 0,
        worker: str = "",
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.upstream_status = upstream_status
        self.worker = worker


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class ClientRejected(SlaplaneError):
    """A worker answered 4xx: the request itself is bad, so it is relayed, not retried."""

    error_type = "invalid_request_error"
    code = "upstream_rejected"

    def __init__(self, message: str, *, status: int, body: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.body = body
