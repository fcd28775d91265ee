"""Domain exceptions. The HTTP layer maps each to a status in one place (app.py)."""
from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

MAX_FIELDS = 20  # an error answer names at most this many fields, however many were wrong
MAX_NAME = 100  # characters of a field's name that a client chose (an object's key)


class ServiceError(Exception):
    """An error a client may see: the message is written for them. Its size is bounded: a hostile
    request with 20,000 wrong fields gets an answer of the size of one with 20."""

    status = 500

    def __init__(self, message: str, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = _bounded(errors or {})
        self.headers: dict[str, str] = {}


def _bounded(errors: dict[str, list[str]]) -> dict[str, list[str]]:
    if len(errors) <= MAX_FIELDS and all(len(name) <= MAX_NAME for name in errors):
        return errors
    shown = {(name if len(name) <= MAX_NAME else f"{name[:MAX_NAME]}..."): messages
             for name, messages in list(errors.items())[:MAX_FIELDS]}
    if len(errors) > MAX_FIELDS:
        shown.setdefault("body", []).append(f"and {len(errors) - MAX_FIELDS} more fields with problems")
    return shown


class RequestInvalid(ServiceError):
    status = 400


class NotAuthenticated(ServiceError):
    """The contract's "Invalid api key", and in `errors` which of the two it is: a caller who sent
    no key learns where to send it, one who sent a wrong key that the key is not known."""

    status = 401

    def __init__(self, header: str, sent: bool) -> None:
        problem = "no such key, or it was revoked"
        if not sent:
            problem = f"no API key was sent: send yours in the {header} header"
        super().__init__("Invalid api key", {header: [problem]})


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


# What other tools and APIs call some of our names, which no spelling brings near them.
SYNONYMS = {
    "frequency": ("samplerate", "sample_rate", "sampling_rate", "sr", "rate", "ar"),
    "target_sr": ("samplerate", "sample_rate", "sampling_rate", "frequency", "rate"),
    "audio_bitdepth": ("bit_depth", "bits", "bits_per_sample", "sample_fmt"),
    "target_bit_depth": ("bitdepth", "bits", "audio_bitdepth"),
    "audio_bitrate": ("bitrate", "bit_rate", "kbps", "ab"),
    "audio_codec": ("codec", "acodec", "encoder"),
    "channels": ("ac", "channel_count"),
    "target_format": ("format", "target", "output_format"),
}


def did_you_mean(word: Any, choices: Iterable[str]) -> str:
    """"did you mean 'm4a'? " for the choice nearest a misspelled `word` (or the one it is
    another name for: samplerate is frequency), or "" if none is near."""
    if not isinstance(word, str):
        return ""
    word, choices = word.strip().lower(), list(choices)
    nearest = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    nearest = nearest or [choice for choice in choices if word in SYNONYMS.get(choice, ())][:1]
    return f"did you mean {nearest[0]!r}? " if nearest else ""
