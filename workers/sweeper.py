"""The sweeper: a task that deletes expired files and stray working files, fails jobs stuck
past their deadline, and schedules its own next run.

Workers start it (`schedule`), RQ's scheduler inside every worker runs it, and one Redis key
holds the RQ id of the one sweep that is scheduled, so a restart never starts a second chain.
"""
from __future__ import annotations

import logging
import shutil
import time
from datetime import timedelta
from pathlib import Path

from rq import get_current_job
from rq.job import Job as RQJob
from sqlalchemy import exists, select
from sqlalchemy.orm import Session, aliased

from jobs_api.config import Config
from jobs_api.models import FINISHED, InputFile, Job, JobStatus, OutputFile, utcnow
from jobs_api.storage import remove_quietly
from workers import tasks
from workers.queue import PROCESS_JOB, enqueue_in, redis_for, rq_job_id

log = logging.getLogger(__name__)

STRAY_AFTER_SECONDS = 3600  # an incoming upload or work folder untouched this long is abandoned
LOST_AFTER_SECONDS = 300  # a queued job whose queue entry is gone, after this long


def schedule(config: Config, after: int | None = None) -> None:
    """Schedule the next sweep unless one is scheduled already."""
    delay = config.sweep_interval_seconds if after is None else after
    key = _key(config)
    redis = redis_for(config.redis_url)
    if redis.set(key, "pending", nx=True, ex=delay + 10 * config.sweep_interval_seconds):
        job = enqueue_in(config, delay, "workers.sweeper.sweep")
        redis.set(key, job.id, xx=True, keepttl=True)


def sweep() -> dict[str, int]:
    ctx = tasks.context()
    current = get_current_job()
    redis = redis_for(ctx.config.redis_url)
    scheduled = current is not None and redis.get(_key(ctx.config)) == current.id.encode()
    if scheduled:
        redis.delete(_key(ctx.config))
    try:
        with ctx.sessions() as session:
            done = {
                "outputs_expired": _expire_outputs(ctx, session),
                "inputs_deleted": _delete_old_inputs(ctx, session),
                "jobs_failed": _fail_stuck_jobs(ctx, session),
                "stray_files": _remove_strays(ctx, session),
            }
        if any(done.values()):
            log.info("sweep: %s", done)
        return done
    finally:
        if scheduled or current is None:  # a duplicate sweep does its work but does not continue a chain
            schedule(ctx.config)


def _key(config: Config) -> str:
    return f"jobs-api:{config.queue_name}:next-sweep"


def _expire_outputs(ctx: tasks.Context, session: Session) -> int:
    limit = utcnow() - timedelta(seconds=ctx.config.output_ttl_seconds)
    outputs = session.scalars(
        select(OutputFile).where(OutputFile.status == "enabled", OutputFile.created_at <= limit)).all()
    for output in outputs:
        remove_quietly(ctx.storage.output_path(output.storage_key))
        output.status = "expired"
    session.commit()
    return len(outputs)


def _delete_old_inputs(ctx: tasks.Context, session: Session) -> int:
    """Input files of finished jobs, once no input younger than the TTL shares them."""
    limit = utcnow() - timedelta(seconds=ctx.config.output_ttl_seconds)
    finished = [status.value for status in FINISHED]
    other, other_job = aliased(InputFile), aliased(Job)
    still_needed = exists().where(
        other.storage_key == InputFile.storage_key, other.job_id == other_job.id,
        (other.created_at > limit) | other_job.status.not_in(finished))
    items = session.scalars(
        select(InputFile).join(Job).where(
            InputFile.storage_key.is_not(None), InputFile.created_at <= limit,
            Job.status.in_(finished), ~still_needed)).all()
    keys = {item.storage_key for item in items if item.storage_key}
    for item in items:
        item.storage_key = None
    for key in keys:
        remove_quietly(ctx.storage.input_path(key))
    session.commit()
    return len(keys)


def _fail_stuck_jobs(ctx: tasks.Context, session: Session) -> int:
    """Running past the deadline, or queued while the queue lost it: failed, and announced."""
    now = utcnow()
    deadline = ctx.config.job_deadline_seconds
    running = session.scalars(select(Job.id).where(
        Job.status.in_([JobStatus.DOWNLOADING.value, JobStatus.PROCESSING.value]),
        Job.modified_at <= now - timedelta(seconds=deadline))).all()
    queued = session.scalars(select(Job.id).where(
        Job.status == JobStatus.QUEUED.value, Job.modified_at <= now - timedelta(seconds=LOST_AFTER_SECONDS))).all()
    connection = redis_for(ctx.config.redis_url)
    lost = [job_id for job_id in queued if not RQJob.exists(rq_job_id(PROCESS_JOB, (job_id,)) or "", connection)]
    reasons = {job_id: f"The job did not finish within {deadline} s (its worker may have stopped); "
                       "please submit it again." for job_id in running}
    reasons.update({job_id: "The job was lost from the queue (Redis was emptied or restarted without its "
                            "data); please submit it again." for job_id in lost})
    for job_id, message in reasons.items():
        if tasks.fail(session, job_id, "job", job_id, tasks.Code.STUCK, message):
            session.commit()
            ctx.storage.remove_work_dirs(job_id)
            tasks.announce(ctx, session, job_id)
    session.commit()
    return len(reasons)


def _remove_strays(ctx: tasks.Context, session: Session) -> int:
    """Work folders of jobs no longer running, and uploads abandoned mid-way."""
    removed = 0
    now = time.time()
    active = {JobStatus.DOWNLOADING.value, JobStatus.PROCESSING.value}
    for folder in ctx.storage.work.glob("*"):
        status = session.scalar(select(Job.status).where(Job.id == folder.name[:36]))
        idle = now - _mtime(folder)
        if (status not in active and idle > 60) or idle > ctx.config.job_deadline_seconds:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    for path in ctx.storage.incoming.glob("*"):
        if now - _mtime(path) > STRAY_AFTER_SECONDS:
            remove_quietly(path)
            removed += 1
    return removed


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # removed meanwhile by its own job
        return time.time()
