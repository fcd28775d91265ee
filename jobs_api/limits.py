"""A key's limits: jobs queued or running at once, and jobs created per minute."""
from __future__ import annotations

import math
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jobs_api.config import Config
from jobs_api.errors import TooManyRequests
from jobs_api.models import Job, JobStatus, utcnow
from jobs_api.representation import aware

RUNNING = [JobStatus.QUEUED.value, JobStatus.DOWNLOADING.value, JobStatus.PROCESSING.value]
CONCURRENCY_RETRY_AFTER = 10  # seconds; a guess at when a running job frees its slot


class KeyLimits:
    def __init__(self, session: Session, config: Config) -> None:
        self.session, self.config = session, config

    def require_slot(self, key_id: str) -> None:
        """429 unless the key may start one more job now."""
        limit = self.config.max_concurrent_jobs
        if not limit:
            return
        running = self.session.scalar(
            select(func.count()).select_from(Job).where(Job.api_key_id == key_id, Job.status.in_(RUNNING))
        ) or 0
        if running >= limit:
            raise TooManyRequests(
                f"This key already has {running} jobs queued or running (limit {limit}); "
                "try again when one has finished.", CONCURRENCY_RETRY_AFTER)

    def require_rate(self, key_id: str) -> None:
        """429 unless the key may create one more job this minute."""
        limit = self.config.max_jobs_per_minute
        if not limit:
            return
        now = utcnow()
        # The limit-th newest job of the last minute, if there is one: the key is at its limit
        # until that job's minute ends. One row, however high the limit.
        nth_newest = self.session.scalar(
            select(Job.created_at).where(Job.api_key_id == key_id, Job.created_at > now - timedelta(minutes=1))
            .order_by(Job.created_at.desc()).offset(limit - 1).limit(1)
        )
        if nth_newest is not None:
            wait = math.ceil((aware(nth_newest) + timedelta(minutes=1) - now).total_seconds())
            raise TooManyRequests(f"This key created {limit} jobs in the last minute (the limit).", wait)
