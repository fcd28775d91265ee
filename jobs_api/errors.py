"""Domain exceptions. The HTTP layer maps each to a status in one place (app.py)."""
from __future__ import annotations


class ServiceError(Exception):
    """An error a client may see: the message is written for them."""

    status = 500

    def __init__(self, message: str, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or {}
        self.headers: dict[str, str] = {}


class RequestInvalid(ServiceError):
    status = 400


class NotAuthenticated(ServiceError):
    status = 401

    def __init__(self) -> None:
        super().__init__("Invalid api key")


class NotFound(ServiceError):
    status = 404


class WrongState(ServiceError):
    status = 409


class TooLarge(ServiceError):
    status = 413


class Gone(ServiceError):
    status = 410


class NotAllowed(ServiceError):
    """A download without a password that opens it."""

    status = 401


class Unprocessable(ServiceError):
    status = 422


class Unavailable(ServiceError):
    """A part of the service is not working; the operator's to fix (the log says more)."""

    status = 503


class TooManyRequests(ServiceError):
    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(max(1, retry_after))}
