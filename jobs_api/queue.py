"""Putting work on the queue: ids (and callback bodies), JSON-serialized, by dotted path.

The API and the workers both enqueue through here; neither imports the other's code to do
it. The tasks themselves live in `workers.tasks` (and the sweep in `workers.sweeper`).
"""
from __future__ import annotations

import logging
from datetime import timedelta
from functools import cache

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs_api.config import Config

PROCESS_JOB = "workers.tasks.process_job"
DELIVER_CALLBACK = "workers.tasks.deliver_callback"
CONVERT_ARRIVING = "workers.tasks.convert_arriving"
SWEEP = "workers.sweeper.sweep"

log = logging.getLogger(__name__)


PROBE_TIMEOUT_SECONDS = 2.0


@cache
def redis_for(url: str) -> Redis:
    return Redis.from_url(url)


@cache
def probe_redis_for(url: str) -> Redis:
    """A client that gives up after PROBE_TIMEOUT_SECONDS, for /readyz and /metrics: a Redis
    that hangs must not hang them."""
    return Redis.from_url(url, socket_timeout=PROBE_TIMEOUT_SECONDS, socket_connect_timeout=PROBE_TIMEOUT_SECONDS)


def queue_for(config: Config, connection: Redis | None = None) -> Queue:
    return Queue(config.queue_name, connection=connection or redis_for(config.redis_url), serializer=JSONSerializer)


def enqueue(config: Config, task: str, *args: object) -> None:
    # RQ's own time-out is a backstop only; the runner enforces ffmpeg's deadline. A job's
    # conversion has the RQ id `process-<job id>`, so the sweeper can tell one that was lost.
    # One round trip: without a pipeline, RQ registers the queue and stores the job apart.
    queue = queue_for(config)
    with queue.connection.pipeline() as batch:
        queue.enqueue(
            task, *args, job_id=rq_job_id(task, args), job_timeout=config.job_deadline_seconds,
            result_ttl=3600, failure_ttl=7 * 86400, pipeline=batch)
        batch.execute()


def enqueue_committed(config: Config, task: str, *args: object) -> None:
    """`enqueue`, for work whose row is committed already. If Redis cannot be reached a job is
    not lost: the sweeper queues again every job the database holds as queued and the queue does
    not (workers/sweeper.py), once Redis and a worker are back. A callback of a passing status
    (queued, say) is not sent then; the final status's is, by the worker."""
    try:
        enqueue(config, task, *args)
    except RedisError as exc:
        later = "waits for the sweeper" if task == PROCESS_JOB else "is dropped"
        log.warning("Redis unreachable (%s); %s %s %s", exc, task, args[0] if args else "", later)


def rq_job_id(task: str, args: tuple[object, ...]) -> str | None:
    return f"process-{args[0]}" if task == PROCESS_JOB else None


def enqueue_in(config: Config, seconds: int, task: str, *args: object) -> Job:
    """Run `task` after `seconds`, by the scheduler that runs inside every worker."""
    return queue_for(config).enqueue_in(
        timedelta(seconds=seconds), task, *args, result_ttl=3600, failure_ttl=7 * 86400)
