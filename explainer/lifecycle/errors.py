"""Errors in the Messages API's envelope: ``{"type": "error", "error": {"type": T, "message": M}, "request_id": "req_…"}``."""
from __future__ import annotations

from explainer.lifecycle.frames import ERROR, Error, ErrorDetail

STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,  # the request ran past the server's time limit (EXPLAINER_REQUEST_TIMEOUT_S)
    "overloaded_error": 529,
}


class APIError(Exception):
    """An error a client sees, with the API's type and HTTP status."""

    def __init__(self, type: str, message: str, status: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.type = type
        self.message = message
        self.status = status or STATUS[type]
        self.headers = headers or {}

    def body(self, request_id: str | None = None) -> Error:
        """The envelope; with ``request_id``, the top-level ``request_id`` the live API sends (equal to the
        ``request-id`` header). Pages that show an error outside an HTTP call leave it out."""
        body = Error(type=ERROR, error=ErrorDetail(type=self.type, message=self.message))
        if request_id:
            body["request_id"] = request_id
        return body


def invalid(message: str) -> APIError:
    return APIError("invalid_request_error", message)
