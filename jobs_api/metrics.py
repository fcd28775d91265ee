"""`/metrics` in Prometheus's text format, computed when scraped from the database, Redis and
the storage folder: every gunicorn process answers the same, with no counters of its own.

Counters are counts of rows that only grow (jobs are kept; their files expire), so `rate()`
works on them. No Flask here.
"""
from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from redis import Redis
from rq import Worker
from sqlalchemy import case, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from jobs_api.config import Config
from jobs_api.models import FINISHED, Conversion, Job, JobEvent, JobStatus
from jobs_api.queue import probe_redis_for, queue_for
from jobs_api.storage import Storage

PREFIX = "jobs_api"
# Seconds from a job's creation to its end: a 5-second clip takes a fraction of a second,
# hours of audio with normalization take minutes.
DURATION_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
CALLBACK_OUTCOMES = {  # a history line "callback attempt N (status): <outcome>" -> label
    "answered 2": "answered_2xx", "answered 3": "answered_3xx", "answered 4": "answered_4xx",
    "answered 5": "answered_5xx", "failed": "failed", "not sent": "not_sent",
}


class ServiceCollector(Collector):
    def __init__(self, config: Config, sessions: sessionmaker[Session], storage: Storage, redis: Redis) -> None:
        self.config, self.sessions, self.storage, self.redis = config, sessions, storage, redis

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(f"{PREFIX}_database_up", "Whether the database answered this scrape")
        try:
            with self.sessions() as session:
                from_database = [self._jobs_by_status(session), self._durations(session), self._failures(session),
                                 self._callbacks(session)]
        except SQLAlchemyError:  # the database down: say so, and still report the rest
            from_database = []
        up.add_metric([], 1 if from_database else 0)
        yield up
        yield from from_database
        yield from self._queue()
        free = GaugeMetricFamily(f"{PREFIX}_storage_free_bytes", "Free bytes on the storage filesystem")
        free.add_metric([], shutil.disk_usage(self.storage.root).free)
        yield free

    def _jobs_by_status(self, session: Session) -> Metric:
        counts = {status: count for status, count in session.execute(select(Job.status, func.count())
                                                                     .group_by(Job.status))}
        family = GaugeMetricFamily(f"{PREFIX}_jobs", "Jobs in the database, by status", labels=["status"])
        for status in JobStatus:
            family.add_metric([status.value], counts.get(status.value, 0))
        return family

    def _durations(self, session: Session) -> Metric:
        """Created to finished (completed or failed), by each conversion's target."""
        seconds = _seconds_between(session, Job.created_at, Job.modified_at)
        finished = [status.value for status in FINISHED if status != JobStatus.CANCELED]
        columns = [func.sum(case((seconds <= bound, 1), else_=0)) for bound in DURATION_BUCKETS]
        rows = session.execute(
            select(Conversion.target, func.count(), func.coalesce(func.sum(seconds), 0.0), *columns)
            .join(Job, Job.id == Conversion.job_id).where(Job.status.in_(finished)).group_by(Conversion.target))
        family = HistogramMetricFamily(f"{PREFIX}_job_duration_seconds",
                                       "Seconds from a job's creation to its end, by target", labels=["target"])
        for target, count, total, *within in rows:
            buckets = [(str(bound), float(n or 0)) for bound, n in zip(DURATION_BUCKETS, within, strict=True)]
            family.add_metric([target], [*buckets, ("+Inf", float(count))], float(total))
        return family

    def _failures(self, session: Session) -> Metric:
        codes: Counter[str] = Counter()
        for errors in session.scalars(select(Job.errors).where(Job.status == JobStatus.FAILED.value)):
            for error in errors or [{}]:
                codes[str(error.get("code", "none"))] += 1
        family = CounterMetricFamily(f"{PREFIX}_job_failures", "Failed jobs' errors, by error code", labels=["code"])
        for code, count in sorted(codes.items()):
            family.add_metric([code], count)
        return family

    def _callbacks(self, session: Session) -> Metric:
        outcome = case(*((JobEvent.info.like(f"callback attempt %: {start}%"), label)
                         for start, label in CALLBACK_OUTCOMES.items()), else_="other")
        rows = session.execute(select(outcome, func.count()).where(JobEvent.info.like("callback attempt %"))
                               .group_by(outcome))
        family = CounterMetricFamily(f"{PREFIX}_callback_attempts", "Callback attempts, by outcome",
                                     labels=["outcome"])
        for label, count in rows:
            family.add_metric([label], count)
        return family

    def _queue(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(f"{PREFIX}_redis_up", "Whether Redis answered this scrape")
        try:
            queue = queue_for(self.config, self.redis)
            depth, workers = queue.count, Worker.all(connection=self.redis, queue=queue)
        except Exception:  # Redis down: say so, and still report what the database knows
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        waiting = GaugeMetricFamily(f"{PREFIX}_queue_depth", "Tasks waiting in the conversion queue")
        waiting.add_metric([], depth)
        yield waiting
        live = GaugeMetricFamily(f"{PREFIX}_workers", "Live workers on the conversion queue")
        live.add_metric([], len(workers))
        yield live
        age = GaugeMetricFamily(f"{PREFIX}_worker_heartbeat_age_seconds", "Seconds since each worker's heartbeat",
                                labels=["worker"])
        now = datetime.now(UTC)
        for worker in workers:
            beat = worker.last_heartbeat
            if beat is not None:
                beat = beat if beat.tzinfo else beat.replace(tzinfo=UTC)  # RQ keeps UTC, naive
                age.add_metric([worker.name], max(0.0, (now - beat).total_seconds()))
        yield age


def registry_for(config: Config, sessions: sessionmaker[Session], storage: Storage) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(config, sessions, storage, probe_redis_for(config.redis_url)))
    return registry


def _seconds_between(session: Session, start: Any, end: Any) -> Any:
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return func.extract("epoch", end - start)
