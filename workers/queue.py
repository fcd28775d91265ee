"""Putting work on the queue: ids only, JSON-serialized, by dotted path."""
from __future__ import annotations

from datetime import timedelta
from functools import cache

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from jobs_api.config import Config


@cache
def redis_for(url: str) -> Redis:
    return Redis.from_url(url)


def queue_for(config: Config) -> Queue:
    return Queue(config.queue_name, connection=redis_for(config.redis_url), serializer=JSONSerializer)


def enqueue(config: Config, task: str, job_id: str) -> None:
    # RQ's own time-out is a backstop only; the runner enforces ffmpeg's deadline.
    timeout = config.download_timeout_seconds + 2 * config.ffmpeg_timeout_seconds + 120
    queue_for(config).enqueue(task, job_id, job_timeout=timeout, result_ttl=3600, failure_ttl=7 * 86400)


def enqueue_in(config: Config, seconds: int, task: str, *args: object) -> None:
    """Run `task` after `seconds`, by the scheduler that runs inside every worker."""
    queue_for(config).enqueue_in(timedelta(seconds=seconds), task, *args, result_ttl=3600, failure_ttl=7 * 86400)
