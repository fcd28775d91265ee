"""Job status changes. Each one is a conditional UPDATE, so the API (cancel) and the
worker (progress, completion) cannot overwrite each other, and each lands in history."""
from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from jobs_api.models import STATUS_INFO, Job, JobEvent, JobStatus, utcnow


def transition(
    session: Session, job_id: str, to: JobStatus, *,
    allowed_from: Iterable[JobStatus], info: str | None = None, progress: int | None = None,
) -> bool:
    """Move the job to `to` (and `progress`, if given) if it is in one of `allowed_from`; the caller commits."""
    text = info or STATUS_INFO[to]
    extra = {} if progress is None else {"progress": progress}
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_([status.value for status in allowed_from]))
        .values(status=to.value, status_info=text, modified_at=utcnow(), **extra)
        .execution_options(synchronize_session="fetch")
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.add(JobEvent(job_id=job_id, status=to.value, info=text))
    return True


def record_status(session: Session, job: Job) -> None:
    """A history entry for the status the job has now (a new job's); the caller commits."""
    session.add(JobEvent(job_id=job.id, status=job.status, info=job.status_info))


def record_note(session: Session, job_id: str, info: str, status: str | None = None) -> None:
    """A history entry that is not a change of status (a callback attempt), at the job's
    `status` (read from the job unless the caller knows it); the caller commits."""
    status = status or session.scalar(select(Job.status).where(Job.id == job_id))
    session.add(JobEvent(job_id=job_id, status=status, info=info))
