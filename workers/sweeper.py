"""The sweeper: deletes expired files and stray working files, queues again the jobs the
queue lost and those whose worker was lost, fails jobs stuck past their deadline.

Every worker's upkeep thread (workers/worker.py) asks `due` every few seconds; a Redis key
that lives SWEEP_INTERVAL_SECONDS lets one worker in each interval sweep, in that thread, so a
sweep needs neither RQ's scheduler (whose lock a killed worker keeps for a minute) nor a
worker free of conversions. `sweep` is also an RQ task, for a sweep on demand.
"""
from __future__ import annotations

import logging
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, aliased

from jobs_api.config import Config
from jobs_api.lifecycle import record_note, transition
from jobs_api.models import FINISHED, InputFile, Job, JobStatus, OutputFile, utcnow
from jobs_api.queue import PROCESS_JOB, enqueue, redis_for, rq_job_id
from jobs_api.storage import remove_quietly
from workers import heartbeat, outputs
from workers.delivery import announce
from workers.problems import Failure, JobProblem, fail
from workers.services import Services, worker_services

log = logging.getLogger(__name__)

STRAY_AFTER_SECONDS = 3600  # an incoming upload or work folder untouched this long is abandoned
# A job the database holds as queued, whose queue entry is gone this long, is queued again:
# Redis was restarted empty, or was unreachable when the API stored the job.
REQUEUE_AFTER_SECONDS = 30
WAITING = ("queued", "started", "scheduled", "deferred")  # RQ statuses of a task that will run


def due(config: Config, connection: Redis) -> bool:
    """Whether the asking worker sweeps now: true for one worker in each sweep interval."""
    return bool(connection.set(due_key(config), "1", nx=True, ex=config.sweep_interval_seconds))


def due_key(config: Config) -> str:
    return f"jobs-api:{config.queue_name}:swept"


def sweep() -> dict[str, int]:
    services = worker_services()
    with services.sessions() as session:
        done = {
            "outputs_expired": _expire_outputs(services, session),
            "inputs_deleted": _delete_old_inputs(services, session),
            "jobs_requeued": _requeue_lost_jobs(services, session),
            "runs_lost": _requeue_lost_runs(services, session),
            "jobs_failed": _fail_stuck_jobs(services, session),
            "stray_files": _remove_strays(services, session),
        }
    if any(done.values()):
        log.info("sweep: %s", done)
    return done


def _expire_outputs(services: Services, session: Session) -> int:
    limit = utcnow() - timedelta(seconds=services.config.output_ttl_seconds)
    outputs = session.scalars(
        select(OutputFile).where(OutputFile.status == "enabled", OutputFile.created_at <= limit)).all()
    for output in outputs:
        services.storage.remove_output(output.storage_key)
        output.status = "expired"
    session.commit()
    return len(outputs)


def _delete_old_inputs(services: Services, session: Session) -> int:
    """Input files of finished jobs, once no input younger than the TTL shares them."""
    limit = utcnow() - timedelta(seconds=services.config.output_ttl_seconds)
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
        services.storage.remove_input(key)
    session.commit()
    return len(keys)


def _requeue_lost_jobs(services: Services, session: Session) -> int:
    """Queued in the database, not on the queue: queued again. Taking a job twice is safe, since
    its task starts only a job that is still queued."""
    since = utcnow() - timedelta(seconds=REQUEUE_AFTER_SECONDS)
    queued = session.scalars(select(Job.id).where(Job.status == JobStatus.QUEUED.value, Job.modified_at <= since))
    connection = redis_for(services.config.redis_url)
    lost = [job_id for job_id in queued if not _waiting(rq_job_id(PROCESS_JOB, (job_id,)) or "", connection)]
    for job_id in lost:
        enqueue(services.config, PROCESS_JOB, job_id)
        record_note(session, job_id, "Queued again: the queue had lost the job.")
        session.commit()
    return len(lost)


def _waiting(rq_id: str, connection: Redis) -> bool:
    try:
        return RQJob.fetch(rq_id, connection=connection).get_status(refresh=False) in WAITING
    except NoSuchJobError:
        return False


def _requeue_lost_runs(services: Services, session: Session) -> int:
    """Running, without a heartbeat for WORKER_LOST_SECONDS (workers/heartbeat.py): its worker
    died. Queued again from the start for its next attempt; after the last, failed."""
    config = services.config
    connection = redis_for(config.redis_url)
    if connection.info("server")["uptime_in_seconds"] < config.worker_lost_seconds:
        return 0  # Redis restarted empty: the live runs have not all beaten again yet
    running = session.execute(select(Job.id, Job.attempt).where(
        Job.status.in_([JobStatus.DOWNLOADING.value, JobStatus.PROCESSING.value]),
        Job.modified_at <= utcnow() - timedelta(seconds=config.worker_lost_seconds))).all()
    alive = heartbeat.beating(config, connection, [job_id for job_id, _attempt in running])
    lost = [(job_id, attempt) for job_id, attempt in running if job_id not in alive]
    for job_id, attempt in lost:
        log.warning("job %s: its worker was lost in attempt %d of %d", job_id, attempt, config.max_attempts,
                    extra={"job_id": job_id, "attempt": attempt})
        if attempt >= config.max_attempts:
            problem = JobProblem(Failure.WORKER_LOST, attempts=attempt)
            if fail(session, job_id, "job", job_id, problem):
                session.commit()
                services.storage.remove_work_dirs(job_id)
                announce(services, session, job_id, last=True)
            continue
        if transition(session, job_id, JobStatus.QUEUED, info=f"Worker lost; attempt {attempt + 1} of "
                      f"{config.max_attempts}.", allowed_from=[JobStatus.DOWNLOADING, JobStatus.PROCESSING],
                      attempt=attempt):
            session.execute(update(Job).where(Job.id == job_id).values(warnings=[], progress=None))
            outputs.discard(services.storage, session, job_id)  # commits
            services.storage.remove_work_dirs(job_id)
            enqueue(config, PROCESS_JOB, job_id)
    session.commit()
    return len(lost)


def _fail_stuck_jobs(services: Services, session: Session) -> int:
    """Running past the deadline (its worker must have died): failed, and announced."""
    deadline = services.config.job_deadline_seconds
    running = session.scalars(select(Job.id).where(
        Job.status.in_([JobStatus.DOWNLOADING.value, JobStatus.PROCESSING.value]),
        Job.modified_at <= utcnow() - timedelta(seconds=deadline))).all()
    for job_id in running:
        if fail(session, job_id, "job", job_id, JobProblem(Failure.WORKER_GONE, limit=deadline)):
            session.commit()
            services.storage.remove_work_dirs(job_id)
            announce(services, session, job_id)
    session.commit()
    return len(running)


def sweep_scratch() -> int:
    """This host's own stray files, when the service's files are in a bucket: each host has its
    scratch folder to itself, so the sweep that one worker does for all cannot reach it. Every
    worker's upkeep calls this once per sweep interval (a worker killed mid-job leaves its work
    folder behind; the worker started in its place removes it). On a shared disk, `sweep` does."""
    services = worker_services()
    if services.storage.shared_disk:
        return 0
    with services.sessions() as session:
        removed = _remove_local_strays(services, session)
    if removed:
        log.info("sweep of this host's scratch: %d stray files", removed)
    return removed


def _remove_strays(services: Services, session: Session) -> int:
    """Uploads into a bucket abandoned mid-way; on a shared disk, every host's stray files too."""
    moment = datetime.now(UTC) - timedelta(seconds=STRAY_AFTER_SECONDS)
    removed = services.storage.shelf.abort_uploads_begun_before(moment)  # by a process since gone
    return removed + (_remove_local_strays(services, session) if services.storage.shared_disk else 0)


def _remove_local_strays(services: Services, session: Session) -> int:
    """Work folders of jobs no longer running, and uploads abandoned mid-way."""
    removed = 0
    now = time.time()
    active = {JobStatus.DOWNLOADING.value, JobStatus.PROCESSING.value}
    for folder in services.storage.work.glob("*"):
        status = session.scalar(select(Job.status).where(Job.id == folder.name[:36]))
        idle = now - _mtime(folder)
        if (status not in active and idle > 60) or idle > services.config.job_deadline_seconds:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    for path in services.storage.incoming.glob("*"):
        if now - _mtime(path) > STRAY_AFTER_SECONDS:
            remove_quietly(path)
            removed += 1
    return removed


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # removed meanwhile by its own job
        return time.time()
