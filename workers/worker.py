"""The worker process: RQ's SimpleWorker on the conversion queue, with its scheduler (callback
retries are scheduled jobs) and an upkeep thread (sweeps; Redis restarted empty).

Fenced cleverness: `LeanWorker` overrides two of RQ's internals (`heartbeat`, `set_state`,
as RQ 2.x and 3.0 call them) to send fewer round trips to Redis between two jobs. RQ sends a
heartbeat three times in a row there (after the job, before dequeuing the next and after),
each as three commands one by one, and sets the idle state twice. Here a heartbeat is one
round trip, skipped when one with the same time-out went out less than HEARTBEAT_AGAIN
seconds before (it extends a TTL of minutes), and a state is sent only when it changes.
`RQ_LEAN_WORKER=0` runs without these two overrides (`ConversionWorker`, RQ's SimpleWorker
telling a running job that the worker is stopping); CI runs the suite once that way.

`work` starts a new worker when Redis comes back empty and ends one that lost Redis; with
either class it reads RQ 3.0's `birth_date`, `key`, `pubsub_thread`, `scheduler._process` and
`_shutdown_requested_date`, and wraps its signal handlers `request_stop` and `request_force_stop`.
"""
from __future__ import annotations

import ctypes
import faulthandler
import logging
import os
import signal
import threading
import time
from types import FrameType

from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import SimpleWorker
from rq.exceptions import StopRequested
from rq.serializers import JSONSerializer
from sqlalchemy.exc import SQLAlchemyError

from jobs_api.config import Config, fence_on
from jobs_api.logs import configure
from jobs_api.queue import queue_for, redis_for
from workers import sweeper
from workers.services import worker_services
from workers.shutdown import Shutdown

SWITCH = "RQ_LEAN_WORKER"
RECONNECT_FIRST_SECONDS = 1.0
RECONNECT_MAX_SECONDS = 30.0
UPKEEP_EVERY_SECONDS = 2.0
# How often an RQ worker cleans its registries and, if no scheduler runs, takes the scheduler
# lock over (RQ's default is 600 s; a killed worker's scheduler lock lapses after 61 s).
MAINTENANCE_SECONDS = 60
PR_SET_PDEATHSIG = 1  # <sys/prctl.h>
_LIBC = ctypes.CDLL(None, use_errno=True)

log = logging.getLogger(__name__)


class ConversionWorker(SimpleWorker):
    """RQ's SimpleWorker that tells a running job when it was asked to stop (workers/shutdown.py)."""

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        Shutdown.request()
        super().request_stop(signum, frame)

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        """RQ's handler once a signal came: a stop from outside after the worker's own signal."""
        Shutdown.request()
        super().request_force_stop(signum, frame)


class LeanWorker(ConversionWorker):
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


def no_false_success(record: logging.LogRecord) -> bool:
    """RQ calls every task that returned "Job OK", a failed job's too: tasks.process_job logs
    each job's outcome itself."""
    message = record.getMessage()
    return "Job OK" not in message and not message.startswith("Successfully completed")


def worker_class() -> type[SimpleWorker]:
    """LeanWorker unless the environment sets RQ_LEAN_WORKER=0."""
    return LeanWorker if fence_on(SWITCH) else ConversionWorker


def work(config: Config, burst: bool = False) -> None:
    """Run tasks from the conversion queue until stopped (or, with `burst`, until it is empty).
    Redis going away does not end the worker: it connects again, waiting longer each time, and
    when Redis comes back empty (its worker registry and scheduler lost) the worker starts
    anew, registered again and with a scheduler again."""
    configure(config.log_format)
    logging.getLogger("rq.worker").addFilter(no_false_success)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: every thread's stack to stderr
    worker_pid = os.getpid()
    os.register_at_fork(after_in_child=lambda: _die_with(worker_pid))
    Shutdown.grace_seconds = config.stop_grace_seconds
    worker_services()  # imports and the database engine now, not during the first job
    delay = RECONNECT_FIRST_SECONDS
    while True:
        started = time.monotonic()
        upkeep: Upkeep | None = None
        worker: SimpleWorker | None = None
        _take_stop_signals()
        try:
            # SimpleWorker runs tasks in this process instead of forking one per task: the
            # database engine and imports are set up once, which is most of a short job's
            # overhead (bench/small_file.py). ffmpeg still runs in its own process group.
            worker = worker_class()([queue_for(config)], connection=redis_for(config.redis_url),
                                    serializer=JSONSerializer, maintenance_interval=MAINTENANCE_SECONDS)
            upkeep = None if burst else Upkeep(worker, config)
            try:
                worker.work(burst=burst, with_scheduler=True)
            finally:
                if upkeep is not None:
                    upkeep.end()  # before anything else: a later signal of its own would stop this worker
            if not _anew(upkeep):
                return
        except StopRequested:  # a stop that came before RQ's own handling could take it
            _end_scheduler(worker)
            if not _anew(upkeep):  # or the upkeep's own signal, come as RQ's worker ended
                return
        except (RedisConnectionError, RedisTimeoutError) as exc:
            if burst:
                raise
            if _abandon(worker):
                log.warning("the worker stops; Redis was unreachable as it did (%s)", exc)
                return
            if time.monotonic() - started > RECONNECT_MAX_SECONDS:
                delay = RECONNECT_FIRST_SECONDS  # it worked for a while: a new outage
            log.warning("Redis unreachable (%s); the worker connects again in %.0f s", exc, delay)
            _take_stop_signals()
            try:
                time.sleep(delay)
            except StopRequested:
                return
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)


def _anew(upkeep: Upkeep | None) -> bool:
    """Whether the worker starts anew: its upkeep found its registration gone from Redis, and
    no one asked it to stop."""
    if upkeep is None or not upkeep.forgotten or Shutdown.requested_at is not None:
        return False
    log.warning("Redis restarted without this worker's registration; the worker starts anew")
    return True


def _abandon(worker: SimpleWorker | None) -> bool:
    """Leave a worker that lost Redis: its pubsub thread would retry forever. True if it had
    been asked to stop (SIGTERM reached RQ's handler, whose teardown then failed on Redis)."""
    if worker is None:
        return False
    if worker.pubsub_thread is not None:
        worker.pubsub_thread.stop()
    return getattr(worker, "_shutdown_requested_date", None) is not None


def _end_scheduler(worker: SimpleWorker | None) -> None:
    """Kill the scheduler process RQ may have just forked: RQ's teardown did not run, and the
    fork inherited the worker's signal handlers, so it may not stop on SIGTERM; a process left
    running would keep this one waiting at exit."""
    process = getattr(getattr(worker, "scheduler", None), "_process", None)
    if process is not None and process.is_alive():
        process.kill()
        process.join(5)


def _die_with(worker_pid: int) -> None:
    """In a process the worker forks (RQ's scheduler): ask the kernel for SIGKILL once the
    worker dies, whatever killed it, so no scheduler outlives its worker holding the scheduler
    lock; exit at once if it died already."""
    if _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != worker_pid:
        os._exit(1)


def _take_stop_signals() -> None:
    """Between two of RQ's workers, SIGTERM and SIGINT stop this one: not swallowed by the last
    worker's handler (RQ ignores a second signal within a second of the first), not too late."""
    signal.signal(signal.SIGTERM, _stop_requested)
    signal.signal(signal.SIGINT, _stop_requested)


def _stop_requested(_signum: int, _frame: object) -> None:
    raise StopRequested()


class Upkeep(threading.Thread):
    """The worker's own upkeep, every UPKEEP_EVERY_SECONDS beside whatever job runs: a sweep
    when one is due (workers/sweeper.py), and a look at Redis. Once Redis answers again
    without the worker's registration (a Redis restarted empty has lost it), it stops the
    worker as SIGTERM does, after its current task: RQ would go on dequeuing, but missing from
    the registry and without its scheduler; `work` starts a new worker instead."""

    def __init__(self, worker: SimpleWorker, config: Config) -> None:
        super().__init__(name="upkeep", daemon=True)
        self.worker, self.config = worker, config
        self.forgotten, self.stop, self.deciding = False, threading.Event(), threading.Lock()
        self.scratch_swept_at = -float("inf")  # the first pass sweeps (sweeper.sweep_scratch)
        self.start()

    def end(self) -> None:
        """No stop from it from now on (a sweep under way may finish)."""
        with self.deciding:
            self.stop.set()

    def sweep_scratch_when_due(self) -> None:
        """This host's scratch, once per sweep interval (sweeper.sweep_scratch)."""
        if time.monotonic() >= self.scratch_swept_at + self.config.sweep_interval_seconds:
            self.scratch_swept_at = time.monotonic()
            sweeper.sweep_scratch()

    def run(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # they are the main thread's
        while not self.stop.wait(UPKEEP_EVERY_SECONDS):
            if self.worker.birth_date is None:
                continue  # not registered yet: a missing key is a worker still starting
            try:
                # The registry's set, not the worker's own key: RQ's heartbeat writes that key
                # again after a restart, but nothing puts the worker back in the set.
                registered = bool(self.worker.connection.sismember(self.worker.redis_workers_keys, self.worker.key))
                if registered and sweeper.due(self.config, self.worker.connection):
                    sweeper.sweep()
                self.sweep_scratch_when_due()
            except (RedisError, SQLAlchemyError) as exc:
                log.warning("upkeep: %s", exc)  # Redis or the database away: RQ waits, so does this
                continue
            except Exception:
                log.exception("upkeep: the sweep failed")
                continue
            if not registered and Shutdown.requested_at is None:  # not the key its own stop removed
                with self.deciding:
                    if self.stop.is_set():
                        return  # RQ's worker has ended meanwhile
                    self.forgotten, Shutdown.own_signal = True, True
                    os.kill(os.getpid(), signal.SIGTERM)  # RQ's own warm shutdown, from its signal handler
                return
