"""The worker class `jobs-api worker` runs: RQ's SimpleWorker with its heartbeat batched."""
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
