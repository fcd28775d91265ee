"""The worker process: RQ's SimpleWorker on the conversion queue, with its scheduler (callback
retries and sweeps are scheduled jobs).

Fenced cleverness: `LeanWorker` overrides two of RQ's internals (`heartbeat`, `set_state`,
as RQ 2.x and 3.0 call them) to send fewer round trips to Redis between two jobs. RQ sends a
heartbeat three times in a row there (after the job, before dequeuing the next and after),
each as three commands one by one, and sets the idle state twice. Here a heartbeat is one
round trip, skipped when one with the same time-out went out less than HEARTBEAT_AGAIN
seconds before (it extends a TTL of minutes), and a state is sent only when it changes.
`RQ_LEAN_WORKER=0` runs RQ's own SimpleWorker instead; CI runs the suite once that way.
"""
from __future__ import annotations

import logging
import time

from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from jobs_api.config import Config, fence_on
from jobs_api.queue import queue_for, redis_for
from workers import sweeper
from workers.services import worker_services

SWITCH = "RQ_LEAN_WORKER"
RECONNECT_FIRST_SECONDS = 1.0
RECONNECT_MAX_SECONDS = 30.0

log = logging.getLogger(__name__)


class LeanWorker(SimpleWorker):
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


def worker_class() -> type[SimpleWorker]:
    """LeanWorker unless the environment sets RQ_LEAN_WORKER=0."""
    return LeanWorker if fence_on(SWITCH) else SimpleWorker


def work(config: Config, burst: bool = False) -> None:
    """Run tasks from the conversion queue until stopped (or, with `burst`, until it is empty).
    Redis going away does not end the worker: it connects again, waiting longer each time, and
    schedules the sweeper again (a Redis restarted empty has lost its schedule)."""
    worker_services()  # imports and the database engine now, not during the first job
    delay = RECONNECT_FIRST_SECONDS
    while True:
        started = time.monotonic()
        try:
            sweeper.schedule(config, after=0)  # unless a sweep is scheduled already
            # SimpleWorker runs tasks in this process instead of forking one per task: the
            # database engine and imports are set up once, which is most of a short job's
            # overhead (bench/small_file.py). ffmpeg still runs in its own process group.
            worker_class()([queue_for(config)], connection=redis_for(config.redis_url),
                           serializer=JSONSerializer).work(burst=burst, with_scheduler=True)
            return
        except (RedisConnectionError, RedisTimeoutError) as exc:
            if burst:
                raise
            if time.monotonic() - started > RECONNECT_MAX_SECONDS:
                delay = RECONNECT_FIRST_SECONDS  # it worked for a while: a new outage
            log.warning("Redis unreachable (%s); the worker connects again in %.0f s", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)
