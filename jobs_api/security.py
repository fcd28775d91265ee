"""API keys, job tokens and download passwords: made random or given, stored hashed."""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from typing import Any

from jobs_api.errors import RequestInvalid

# scrypt's cost for download passwords (people choose them, so they may be guessable):
# about 16 MiB and tens of milliseconds of CPU per hash.
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
MAX_CANDIDATES = 5  # passwords tried from one request


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def new_token() -> str:
    return secrets.token_hex(16)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def hash_passwords(passwords: Iterable[str]) -> list[str]:
    """`scrypt$<salt>$<digest>` for each password; one salt for the list, so a candidate
    is hashed once per list, not once per password."""
    salt = os.urandom(16)
    return [f"scrypt${salt.hex()}${_derive(password, salt).hex()}" for password in passwords]


def password_matches(candidates: Iterable[str], hashes: Iterable[str]) -> bool:
    """Whether any candidate is one of the hashed passwords; digests compared in constant time."""
    by_salt: dict[str, list[bytes]] = {}
    for stored in hashes:
        _scheme, salt, hexdigest = stored.split("$")
        by_salt.setdefault(salt, []).append(bytes.fromhex(hexdigest))
    found = False
    for candidate in list(candidates)[:MAX_CANDIDATES]:
        for salt, digests in by_salt.items():
            derived = _derive(candidate, bytes.fromhex(salt))
            for digest in digests:
                found |= hmac.compare_digest(derived, digest)
    return found


def _derive(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, **SCRYPT)  # type: ignore[arg-type]


def download_passwords(value: Any) -> list[str]:
    """A request's `download_passwords` (an array of non-empty strings), hashed; a 400 otherwise."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise RequestInvalid("Invalid download passwords.",
                             {"download_passwords": ["must be an array of non-empty strings"]})
    return hash_passwords(value)
