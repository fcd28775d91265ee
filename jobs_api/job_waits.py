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

How long: JOB_WAIT_SECONDS (4), SDK_JOB_WAIT_SECONDS (25) for the official Python SDK (its
User-Agent, `api2convert-python/`). The longer the wait, the fewer of the SDK's polls miss
the end: between its polls it sleeps 1 s, then 1.5, 2.25... up to 5 s, and a 17-second job
ending in such a sleep was seen up to 2.25 s late (issue 29). A held answer sends a space
every RECHECK_SECONDS until its JSON (whitespace, which JSON allows before a value), so a
client whose timeout runs between reads (httpx, requests; the SDK's, at least 1 s) does not
give up on a poll that waits. One whose timeout counts the whole answer (axios, Go, `curl
-m`) would: hence 4 s for everyone else.

What it costs: a waiting request holds one of its API process's threads, so at most
WAIT_SLOTS wait at once in a process; a poll that finds them taken answers at once. A client
that wants every poll answered at once (to show progress, as the page at `/` does) sends
`Prefer: wait=0` (RFC 7240); `wait=N` shortens the wait to N seconds.
"""
from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
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
OFFICIAL_SDK = "api2convert-python/"  # how PyPI's api2convert starts its User-Agent
KEEP_ALIVE = b" "


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
    """How long a poll may wait: `most`, or less if its `Prefer` header asks."""
    found = PREFER_WAIT.search(prefer or "")
    return most if found is None else min(most, float(found.group(1)))


def held_seconds(config: Config, prefer: str | None, user_agent: str | None) -> float:
    """How long this client's poll may wait (see the module's text)."""
    official = (user_agent or "").startswith(OFFICIAL_SDK)
    return requested_seconds(prefer, config.sdk_job_wait_seconds if official else config.job_wait_seconds)


class Waits:
    """The waiting polls of one API process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.waiting = 0

    def free(self) -> bool:
        """Whether a poll could wait now."""
        return self.waiting < WAIT_SLOTS

    def answer_when_ended(self, job_id: str, seconds: float, status: Callable[[], str | None],
                          answer: Callable[[], bytes]) -> Iterator[bytes]:
        """The body of a held poll: KEEP_ALIVE every RECHECK_SECONDS while `status()` is one
        WAITED_ON, for at most `seconds`, then `answer()` (at once if no slot is free or Redis
        cannot be reached). The slot is taken and given back in here, so an answer never sent
        holds none."""
        if self._enter():
            try:
                yield from self._ticks(job_id, seconds, status)
            finally:
                with self.lock:
                    self.waiting -= 1
        yield answer()

    def _enter(self) -> bool:
        with self.lock:
            if self.waiting >= WAIT_SLOTS:
                return False
            self.waiting += 1
            return True

    def _ticks(self, job_id: str, seconds: float, status: Callable[[], str | None]) -> Iterator[bytes]:
        try:
            with _redis(self.config.redis_url).pubsub(ignore_subscribe_messages=True) as changes:
                changes.subscribe(channel(self.config, job_id))  # before the look: no change falls between
                deadline = time.monotonic() + seconds
                while status() in WAITED_ON and (left := deadline - time.monotonic()) > 0:
                    changes.get_message(timeout=min(left, RECHECK_SECONDS))
                    yield KEEP_ALIVE
        except RedisError:
            return
