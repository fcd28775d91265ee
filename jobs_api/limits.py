"""A key's limits: jobs queued or running at once, and jobs created per minute."""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from redis.exceptions import LockError, RedisError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jobs_api.config import Config
from jobs_api.errors import TooManyRequests
from jobs_api.models import Job, JobStatus, utcnow
from jobs_api.queue import redis_for
from jobs_api.representation import aware

RUNNING = [JobStatus.QUEUED.value, JobStatus.DOWNLOADING.value, JobStatus.PROCESSING.value]
log = logging.getLogger(__name__)
CONCURRENCY_RETRY_AFTER = 10  # seconds; a guess at when a running job frees its slot
LOCK_SECONDS = 5  # a key's slot lock: held from the count to the commit, a few milliseconds


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

    @contextmanager
    def starting(self, key_id: str) -> Iterator[None]:
        """Around counting a key's running jobs and committing one more: requests of the same
        key wait for each other here, so that many at once cannot each count the same free
        slot (across processes and hosts: the lock is in Redis). 429 if there is no slot.
        With Redis away, the count is made without the lock: a job is still accepted then (its
        row is the truth, and the sweeper queues it once Redis is back)."""
        if not self.config.max_concurrent_jobs:
            yield
            return
        lock = redis_for(self.config.redis_url).lock(f"jobs-api:starting:{key_id}", timeout=LOCK_SECONDS,
                                                       blocking_timeout=LOCK_SECONDS)
        try:
            locked = lock.acquire()
        except RedisError as exc:
            log.warning("no slot lock for key %s (Redis: %s); counted without it", key_id, exc)
            locked = None
        if locked is False:
            raise TooManyRequests("Too many jobs of this key are starting at once; try again.", 1)
        try:
            self.require_slot(key_id)
            yield
        finally:
            if locked:
                try:
                    lock.release()
                except (LockError, RedisError):  # held past LOCK_SECONDS, or Redis went away
                    pass

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
