"""Idempotency-Key: the same key and request body within 24 hours get the job the first made."""
from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs_api.errors import Unprocessable
from jobs_api.models import Job, utcnow
from jobs_api.representation import aware

WINDOW = timedelta(hours=24)


def request_digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def earlier_job(session: Session, key_id: str, idempotency_key: str, digest: str) -> Job | None:
    """The job this key and Idempotency-Key made in the last 24 hours, if any; 422 if it was
    made from another request body."""
    earlier = session.scalar(select(Job).where(Job.api_key_id == key_id, Job.idempotency_key == idempotency_key))
    if earlier is None:
        return None
    if aware(earlier.created_at) < utcnow() - WINDOW:
        earlier.idempotency_key = None  # the key is free again after 24 h
        session.commit()
        return None
    if earlier.request_digest != digest:
        raise Unprocessable(
            "This Idempotency-Key was used for a different request in the last 24 hours.",
            {"Idempotency-Key": ["already used with another request body"]})
    return earlier
