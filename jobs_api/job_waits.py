"""Long polling: a GET of a queued or running job answers when the job ends, if that is within
JOB_WAIT_SECONDS, instead of at once.

Clients learn that a job ended by polling it. The official SDK polls right after starting a
job, then 1 s later, then backs off by half each time to every 5 s: it learnt of the end of
a 5-second conversion up to 2 s late, more than everything else the service adds to raw
ffmpeg (issue 29). Held here, that first poll answers within milliseconds of the end, and a
client that polls often loses nothing: each of its polls answers at the end or at its limit.

How the waiting request learns of the end: the worker publishes each announced status change
on a Redis channel of the job's own (`announce_change`), and the request looks at the job's
status when told, and every RECHECK_SECONDS in case nobody tells it (a cancel by the API, a
sweep, Redis away). Redis unreachable: the poll answers at once, as without this.

Why 4 s by default: the longer the wait, the fewer of the SDK's polls miss the end, but a
client must not give up on a poll that waits: httpx, a common Python client, times out after
5 s unless told otherwise (the official SDK sets 30).

What it costs: a waiting request holds one of its API process's threads, so at most
WAIT_SLOTS wait at once in a process; a poll that finds them taken answers at once. A client
that wants every poll answered at once (to show progress, as the page at `/` does) sends
`Prefer: wait=0` (RFC 7240); `wait=N` shortens the wait to N seconds.
"""
from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from functools import cache

from redis import Redis
from redis.exceptions import RedisError

from jobs_api.config import Config
from jobs_api.models import FINISHED, STARTED

WAITED_ON = frozenset(status.value for status in STARTED - FINISHED)  # queued, downloading, processing
RECHECK_SECONDS = 0.5
WAIT_SLOTS = 2  # of the 4 threads a gunicorn worker has by default (WEB_THREADS)
REDIS_TIMEOUT_SECONDS = 0.5  # a Redis that hangs delays a job's end or a poll by this, no more
PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d{1,6})(?:$|[,;\s])", re.IGNORECASE)


def channel(config: Config, job_id: str) -> str:
    return f"jobs-api:{config.queue_name}:job:{job_id}"


@cache
def _redis(url: str) -> Redis:
    return Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS)


def announce_change(config: Config, job_id: str) -> None:
    """Wake the polls waiting on the job; its new status must be committed already. Best
    effort: a poll not woken looks again by itself."""
    try:
        _redis(config.redis_url).publish(channel(config, job_id), b"")
    except RedisError:
        pass


def requested_seconds(prefer: str | None, most: float) -> float:
    """How long this poll may wait: JOB_WAIT_SECONDS, or less if its `Prefer` header asks."""
    found = PREFER_WAIT.search(prefer or "")
    return most if found is None else min(most, float(found.group(1)))


class Waits:
    """The waiting polls of one API process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.slots = threading.BoundedSemaphore(WAIT_SLOTS)

    def until_ended(self, job_id: str, seconds: float, status: Callable[[], str | None]) -> None:
        """Return once `status()` is no longer one WAITED_ON, or after `seconds` (at once if
        no slot is free or Redis cannot be reached)."""
        if seconds <= 0 or not self.slots.acquire(blocking=False):
            return
        try:
            with _redis(self.config.redis_url).pubsub(ignore_subscribe_messages=True) as changes:
                changes.subscribe(channel(self.config, job_id))  # before the look: no change falls between
                deadline = time.monotonic() + seconds
                while status() in WAITED_ON and (left := deadline - time.monotonic()) > 0:
                    changes.get_message(timeout=min(left, RECHECK_SECONDS))
        except RedisError:
            return
        finally:
            self.slots.release()
