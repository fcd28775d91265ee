"""Domain exceptions. The HTTP layer maps each to a status in one place (app.py)."""
from __future__ import annotations


class ServiceError(Exception):
    """An error a client may see: the message is written for them."""

    status = 500

    def __init__(self, message: str, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or {}


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
