"""The worker class `jobs-api worker` runs: RQ's SimpleWorker with its heartbeats batched and
repeats skipped."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from jobs_api.queue import queue_for
from workers.worker import LeanWorker as Worker


@pytest.fixture
def worker(config: Any) -> Iterator[Worker]:
    queue = queue_for(config)
    made = Worker([queue], connection=queue.connection)
    yield made
    made.connection.delete(made.key, made.executions_key)


def _heard(worker: Worker) -> bool:
    """Whether a heartbeat reached Redis since the last _forget."""
    return worker.connection.hget(worker.key, "last_heartbeat") != b"never"


def _forget(worker: Worker) -> None:
    worker.connection.hset(worker.key, "last_heartbeat", "never")


def test_a_heartbeat_sent_as_one_round_trip_still_reaches_redis(worker: Worker) -> None:
    redis = worker.connection
    _forget(worker)
    redis.expire(worker.key, 5)
    worker.heartbeat()
    assert _heard(worker)
    assert redis.ttl(worker.key) > 5  # extended to RQ's worker TTL


def test_a_heartbeat_repeated_at_once_is_skipped_but_not_a_changed_or_later_one(worker: Worker) -> None:
    redis = worker.connection
    worker.heartbeat()
    _forget(worker)
    worker.heartbeat()  # the same time-out, just sent: RQ does this between two jobs
    assert not _heard(worker)
    worker.heartbeat(5000)  # another time-out (RQ's before a job) goes out
    assert _heard(worker)
    assert redis.ttl(worker.key) > 4000
    _forget(worker)
    worker.heartbeat()  # and back to the worker's own
    assert _heard(worker)
    assert redis.ttl(worker.key) < 4000
    _forget(worker)
    worker.HEARTBEAT_AGAIN = 0.0  # and the same one once the interval has passed
    worker.heartbeat()
    assert _heard(worker)


def test_a_state_is_sent_when_it_changes(worker: Worker) -> None:
    redis = worker.connection
    worker.set_state("idle")
    assert redis.hget(worker.key, "state") == b"idle"
    redis.hset(worker.key, "state", "unchanged")
    worker.set_state("idle")
    assert redis.hget(worker.key, "state") == b"unchanged"
    worker.set_state("busy")
    assert redis.hget(worker.key, "state") == b"busy"
