"""Putting work on the queue: ids (and callback bodies), JSON-serialized, by dotted path."""
from __future__ import annotations

import time
from datetime import timedelta
from functools import cache

from redis import Redis
from redis.client import Pipeline
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs_api.config import Config

PROCESS_JOB = "workers.tasks.process_job"


@cache
def redis_for(url: str) -> Redis:
    return Redis.from_url(url)


def queue_for(config: Config) -> Queue:
    return Queue(config.queue_name, connection=redis_for(config.redis_url), serializer=JSONSerializer)


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


def rq_job_id(task: str, args: tuple[object, ...]) -> str | None:
    return f"process-{args[0]}" if task == PROCESS_JOB else None


def enqueue_in(config: Config, seconds: int, task: str, *args: object) -> Job:
    """Run `task` after `seconds`, by the scheduler that runs inside every worker."""
    return queue_for(config).enqueue_in(
        timedelta(seconds=seconds), task, *args, result_ttl=3600, failure_ttl=7 * 86400)


class Worker(SimpleWorker):
    """RQ's SimpleWorker (tasks run in the worker's own process) with fewer round trips between
    two jobs. RQ sends a heartbeat three times in a row there (after the job, before dequeuing
    the next and after), each as three commands one by one, and sets the idle state twice.
    Here a heartbeat is one round trip, and is skipped when one with the same time-out went
    out less than HEARTBEAT_AGAIN seconds before (it extends a TTL of minutes); a state is sent
    only when it changes: three of the worker's fifteen round trips per job, and about 2 % of
    its instructions per job (callgrind)."""

    HEARTBEAT_AGAIN = 1.0
    _last_beat: tuple[float, int | None] = (float("-inf"), None)

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        sent, last_timeout = self._last_beat
        if pipeline is None and timeout == last_timeout and time.monotonic() - sent < self.HEARTBEAT_AGAIN:
            return
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
        else:
            with self.connection.pipeline(transaction=False) as batch:
                super().heartbeat(timeout, batch)
                batch.execute()
        self._last_beat = (time.monotonic(), timeout)

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        if pipeline is None and state == self.get_state():
            return
        super().set_state(state, pipeline)
