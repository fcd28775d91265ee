"""The worker class `jobs-api worker` runs: RQ's SimpleWorker with its heartbeats batched and
repeats skipped."""
from __future__ import annotations

from typing import Any

from workers.queue import Worker, queue_for


def test_a_heartbeat_sent_as_one_round_trip_still_reaches_redis(config: Any) -> None:
    queue = queue_for(config)
    worker = Worker([queue], connection=queue.connection)
    redis = queue.connection
    try:
        redis.hset(worker.key, "last_heartbeat", "never")
        redis.expire(worker.key, 5)
        worker.heartbeat()
        assert redis.hget(worker.key, "last_heartbeat") != b"never"
        assert redis.ttl(worker.key) > 5  # extended to RQ's worker TTL
    finally:
        redis.delete(worker.key, worker.executions_key)


def test_a_heartbeat_repeated_at_once_is_skipped_but_not_a_changed_or_later_one(config: Any) -> None:
    queue = queue_for(config)
    worker = Worker([queue], connection=queue.connection)
    redis = queue.connection
    try:
        worker.heartbeat()
        redis.hset(worker.key, "last_heartbeat", "never")
        worker.heartbeat()  # the same time-out, just sent: RQ does this between two jobs
        assert redis.hget(worker.key, "last_heartbeat") == b"never"
        worker.heartbeat(5000)  # another time-out (RQ's before a job) goes out
        assert redis.hget(worker.key, "last_heartbeat") != b"never"
        assert redis.ttl(worker.key) > 4000
        redis.hset(worker.key, "last_heartbeat", "never")
        worker.heartbeat()  # and back to the worker's own
        assert redis.hget(worker.key, "last_heartbeat") != b"never"
        assert redis.ttl(worker.key) < 4000
        redis.hset(worker.key, "last_heartbeat", "never")
        worker.HEARTBEAT_AGAIN = 0.0  # and the same one once the interval has passed
        worker.heartbeat()
        assert redis.hget(worker.key, "last_heartbeat") != b"never"
    finally:
        redis.delete(worker.key, worker.executions_key)


def test_a_state_is_sent_when_it_changes(config: Any) -> None:
    queue = queue_for(config)
    worker = Worker([queue], connection=queue.connection)
    redis = queue.connection
    try:
        worker.set_state("idle")
        assert redis.hget(worker.key, "state") == b"idle"
        redis.hset(worker.key, "state", "unchanged")
        worker.set_state("idle")
        assert redis.hget(worker.key, "state") == b"unchanged"
        worker.set_state("busy")
        assert redis.hget(worker.key, "state") == b"busy"
    finally:
        redis.delete(worker.key, worker.executions_key)
