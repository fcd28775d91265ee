"""A running job's heartbeat. While a run holds a job, a Redis key says so: a thread of the
worker sets it again every third of WORKER_LOST_SECONDS, for that long, so it is gone soon
after its worker died (kill -9, the OOM killer, a host lost). The sweeper queues again a
running job whose key is gone (workers/sweeper.py).

RQ's own worker heartbeat cannot say this: a SimpleWorker runs the job in the thread that
would send it, and registers itself for the job's whole time-out before it starts."""
from __future__ import annotations

import logging
import threading
from types import TracebackType

from redis import Redis
from redis.exceptions import RedisError

from jobs_api.config import Config
from jobs_api.queue import redis_for

log = logging.getLogger(__name__)


def key(config: Config, job_id: str) -> str:
    return f"jobs-api:{config.queue_name}:alive:{job_id}"


def beating(config: Config, connection: Redis, job_ids: list[str]) -> set[str]:
    """Which of these jobs have a live heartbeat."""
    with connection.pipeline(transaction=False) as batch:
        for job_id in job_ids:
            batch.exists(key(config, job_id))
        found = batch.execute()
    return {job_id for job_id, there in zip(job_ids, found, strict=True) if there}


class Heartbeat:
    """`with Heartbeat(config, job_id, attempt):` around a run."""

    def __init__(self, config: Config, job_id: str, attempt: int) -> None:
        self.key, self.attempt, self.seconds = key(config, job_id), attempt, config.worker_lost_seconds
        self.redis = redis_for(config.redis_url)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        try:
            self.redis.delete(self.key)
        except RedisError:
            pass  # it expires by itself

    def _beat(self) -> None:
        while True:
            try:
                self.redis.set(self.key, self.attempt, ex=self.seconds)
            except RedisError as exc:  # Redis away: the sweeper waits until it has been up a while
                log.debug("heartbeat not sent: %s", exc)
            if self.stop.wait(self.seconds / 3):
                return
