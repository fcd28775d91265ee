"""The RQ entry points, queued by dotted path (`jobs_api.queue`). Each takes ids and plain
values, reloads what it needs, and owns every later change of its job. The sweep's entry
point is `workers.sweeper.sweep`."""
from __future__ import annotations

import logging
import time

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from jobs_api.lifecycle import take
from jobs_api.logs import one_line
from jobs_api.models import WITH_SPEC, Job, JobStatus
from jobs_api.queue import PROCESS_JOB, queue_for, rq_job_id
from jobs_api.storage import StorageUnavailable
from workers import outputs
from workers.conversion import plan_for
from workers.delivery import Attempt, announce, deliver
from workers.heartbeat import Heartbeat
from workers.outage import OUTAGE, rollback, surviving_outage, wait_for_database
from workers.problems import Canceled, Failure, JobProblem, fail
from workers.run import DATABASE_WENT_AWAY, ConversionRun, options_of, queue_again
from workers.services import Services, worker_services
from workers.shutdown import Interrupted
from workers.upload_conversion import Arrival, UploadConversion

# A job is read with its outputs too: a queued job has none yet, so joining them adds no rows,
# and the first output published does not load the empty list with a query of its own.
WITH_OUTPUTS = (*WITH_SPEC, joinedload(Job.outputs))

log = logging.getLogger(__name__)


def process_job(job_id: str) -> str:
    """Run a queued job to its end: completed, failed or canceled ("skipped" if it was not
    queued, "superseded" if its run was thought lost and the job queued again meanwhile)."""
    services = worker_services()
    started = time.monotonic()
    with services.sessions() as session:
        job = surviving_outage(session, services.sessions, lambda: _take(session, job_id))
        if job is None:
            return "skipped"
        with Heartbeat(services.config, job_id, job.attempt):
            announce(services, session, job_id)
            outcome = _run(services, session, job, started)
        if outcome == "canceled":
            outputs.discard(services.storage, session, job_id)
        elif outcome != "superseded":
            announce(services, session, job_id, last=True)
        _log_outcome(job, outcome, started)
        return outcome


def _take(session: Session, job_id: str) -> Job | None:
    """The job, taken for this run (its attempt raised); None if it is not queued."""
    job = session.get(Job, job_id, options=WITH_OUTPUTS, populate_existing=True)
    if job is None or not take(session, job):
        session.rollback()
        return None
    session.commit()
    return job


def _run(services: Services, session: Session, job: Job, started: float) -> str:
    attempt = job.attempt
    try:
        return ConversionRun(services, session, job).execute()
    except Canceled:
        rollback(session)
        status, held = surviving_outage(session, services.sessions, lambda: session.execute(
            select(Job.status, Job.attempt).where(Job.id == job.id)).one())
        if held != attempt:
            return "superseded"  # thought lost, and queued again: the next attempt owns the job
        # Completed: the completion was stored, but the database went away before saying so.
        return "completed" if status == JobStatus.COMPLETED.value else "canceled"
    except Interrupted:
        return queue_again(services, session, job)
    except OUTAGE as exc:
        # Past what the run's own writes wait for: once the database answers, the job runs again.
        log.warning("job %s: the database went away during its run (%s)", job.id, one_line(exc))
        rollback(session)
        wait_for_database(services.sessions)
        return queue_again(services, session, job, info=DATABASE_WENT_AWAY)
    except StorageUnavailable as exc:
        log.error("job %s: %s", job.id, exc)
        return _fail(services, session, job, JobProblem(Failure.STORAGE), started)
    except Exception:
        # Unexpected: the job fails with a generic message; details go to the log
        # (and to RQ's failed registry when we re-raise).
        _fail(services, session, job, JobProblem(Failure.INTERNAL), started)
        raise


def _fail(services: Services, session: Session, job: Job, problem: JobProblem, started: float) -> str:
    session.rollback()
    fail(session, job.id, "job", job.id, problem)
    session.commit()
    announce(services, session, job.id, last=True)
    _log_outcome(job, "failed", started)
    return "failed"


def _log_outcome(job: Job, outcome: str, started: float) -> None:
    """One line per job: what an operator greps for (with LOG_FORMAT=json, its fields)."""
    seconds = round(time.monotonic() - started, 3)
    targets = ",".join(conversion.target for conversion in job.conversions)
    code = job.errors[0].get("code") if outcome == "failed" and job.errors else None
    log.log(logging.WARNING if outcome == "failed" else logging.INFO, "job %s %s in %.3f s (%s)%s",
            job.id, outcome, seconds, targets, f", error {code}" if code else "",
            extra={"job_id": job.id, "status": outcome, "targets": targets, "duration_s": seconds, "error_code": code})


def convert_arriving(job_id: str, incoming_name: str) -> str:
    """Convert an upload into the job while it arrives (workers/upload_conversion.py)."""
    services = worker_services()
    arrival = Arrival.open(services.storage, incoming_name)
    if arrival is None:
        return "skipped: the upload is over"
    with arrival:
        source = arrival.source()
        if source is None:
            return "skipped: not a plain WAV"
        with services.sessions() as session:
            job = session.get(Job, job_id)
            if job is None or len(job.conversions) != 1:
                return "skipped: not one conversion"
            conversion = job.conversions[0]
            try:
                plan = plan_for(services.limits, conversion, options_of(session, job, conversion), source)
            except JobProblem:
                return "skipped: the job's own task reports this"
        if plan.normalization is not None or plan.start:
            return "skipped: needs the whole input first"
        if arrival.state() != "arriving":
            return "skipped: the upload is over"
        queue, own = queue_for(services.config), rq_job_id(PROCESS_JOB, (job_id,))
        early = UploadConversion(services.storage, job_id, services.limits, services.config.ffmpeg_timeout_seconds)
        return early.convert(conversion.id, arrival, plan,
                             others_waiting=lambda: any(queued != own for queued in queue.get_job_ids(0, 2)))


def deliver_callback(job_id: str, body: str, attempt: int = 1) -> int | None:
    """POST `body` (the job as it was when its status changed) to the job's callback; a
    time-out or 5xx is retried later from the queue, a 4xx or a refused URL is final."""
    services = worker_services()
    with services.sessions() as session:
        url = session.scalar(select(Job.callback).where(Job.id == job_id))
        return deliver(services, session, Attempt(job_id, url, body, attempt)) if url else None
