"""A job's life in the database: storing a new job with its history (`store_new`), and its
status changes. Each change is a conditional UPDATE, so the API (cancel) and the worker
(progress, completion) cannot overwrite each other, and each lands in history."""
from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, Update, bindparam, insert, select, update
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from jobs_api.models import STATUS_INFO, Base, Conversion, InputFile, Job, JobEvent, JobStatus, utcnow

# Plain inserts into EVENTS get the model's column defaults too (the event's id and created_at).
JOBS, EVENTS = cast(Table, Job.__table__), cast(Table, JobEvent.__table__)
CONVERSIONS, INPUTS = cast(Table, Conversion.__table__), cast(Table, InputFile.__table__)
ADD_EVENT = insert(EVENTS)  # built once: its cache key is then computed once too
ADD_JOB, ADD_CONVERSIONS, ADD_INPUTS = insert(JOBS), insert(CONVERSIONS), insert(INPUTS)

# A status change's UPDATE, built once per shape with the values as parameters (each column's
# is `new_<column>`, each allowed status `allowed_<n>`, the attempt `the_attempt`): building the
# statements for each change cost more than running them, and an expanding IN is rendered again
# for each execution.
_STATUS = ("status", "status_info", "modified_at")


@cache
def _change(allowed: int, columns: tuple[str, ...], in_attempt: bool) -> Update:
    where = [JOBS.c.id == bindparam("the_job"),
             JOBS.c.status.in_([bindparam(f"allowed_{n}") for n in range(allowed)])]
    if in_attempt:
        where.append(JOBS.c.attempt == bindparam("the_attempt"))
    return update(JOBS).where(*where).values({name: bindparam(f"new_{name}") for name in columns})


def transition(
    session: Session, job_id: str, to: JobStatus, *,
    allowed_from: Iterable[JobStatus], info: str | None = None, progress: int | None = None,
    attempt: int | None = None,
) -> bool:
    """Move the job to `to` (and `progress`, if given) if it is in one of `allowed_from` (and,
    if given, still in `attempt`: a run ends only the attempt it holds); the caller commits."""
    changes: dict[str, object] = {} if progress is None else {"progress": progress}
    return _change_status(session, job_id, to, allowed_from, info, changes, attempt)


def take(session: Session, job: Job) -> bool:
    """A run takes a queued job: downloading, in the job's next attempt, which is the run's
    own (`job.attempt` afterwards); the caller commits. False if another run took it first."""
    return _change_status(session, job.id, JobStatus.DOWNLOADING, [JobStatus.QUEUED], None,
                          {"attempt": job.attempt + 1}, job.attempt)


def _change_status(session: Session, job_id: str, to: JobStatus, allowed_from: Iterable[JobStatus],
                   info: str | None, changes: dict[str, object], attempt: int | None) -> bool:
    """Plain SQL on the tables (a job's status changes at least three times, and the ORM's
    UPDATE with its session bookkeeping costs noticeably more); a job loaded in the session
    is given the new values, as stored."""
    text = info or STATUS_INFO[to]
    values: dict[str, object] = {"status": to.value, "status_info": text, "modified_at": utcnow(), **changes}
    allowed = [status.value for status in allowed_from]
    params = {"the_job": job_id, **{f"allowed_{n}": value for n, value in enumerate(allowed)},
              **{f"new_{name}": value for name, value in values.items()}}
    if attempt is not None:
        params["the_attempt"] = attempt
    session.flush()  # the session's pending changes first, as an ORM statement would
    statement = _change(len(allowed), tuple(values), attempt is not None)
    if session.execute(statement, params).rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.execute(ADD_EVENT, {"job_id": job_id, "status": to.value, "info": text})
    job = session.identity_map.get(identity_key(Job, job_id))
    if job is not None:
        for name, value in values.items():
            set_committed_value(job, name, value)
    return True


def store_new(session: Session, job: Job, statuses: list[JobStatus]) -> None:
    """INSERT a new job (not yet in the session), its conversions and inputs, and its history:
    the statuses it went through before it was first stored. The objects then belong to the
    session as stored rows; the caller commits.

    Plain INSERTs of the objects' values, not the ORM's flush: its unit of work for a job
    and a conversion cost more than the rest of a POST /v2/jobs. They run on the session's
    connection (its transaction): `session.execute` would take each through the ORM's
    statement handling first, which costs as much as the statement."""
    parts: list[Conversion | InputFile] = [*job.conversions, *job.inputs]
    for part in parts:
        part.job_id = job.id  # the ORM sets it only in a flush
    connection = session.connection()
    connection.execute(ADD_JOB, _row(job))
    if job.conversions:
        connection.execute(ADD_CONVERSIONS, [_row(item) for item in job.conversions])
    if job.inputs:
        connection.execute(ADD_INPUTS, [_row(item) for item in job.inputs])
    connection.execute(ADD_EVENT, [
        {"job_id": job.id, "status": status.value, "info": STATUS_INFO[status]} for status in statuses])
    for item in (job, *parts):
        make_transient_to_detached(item)  # as if just read: every column is set, so none reloads
    session.add(job)  # and its conversions and inputs, by cascade


def _row(item: Base) -> dict[str, Any]:
    """A new object's row, keyed by column. An unset column gets its Python-side default (or
    None) on the object too, as the ORM's INSERT would have given it: a stored object missing
    one would read the row again when it is used."""
    row = {}
    for attribute in item.__mapper__.column_attrs:
        column = attribute.columns[0]
        if attribute.key not in item.__dict__:
            default: Any = column.default
            setattr(item, attribute.key, None if default is None else default.arg(None) if default.is_callable
                    else default.arg)
        row[column.key] = item.__dict__[attribute.key]
    return row


def record_note(session: Session, job_id: str, info: str, status: str | None = None) -> None:
    """A history entry that is not a change of status (a callback attempt), at the job's
    `status` (read from the job unless the caller knows it); the caller commits."""
    status = status or session.scalar(select(Job.status).where(Job.id == job_id))
    session.execute(ADD_EVENT, {"job_id": job_id, "status": status, "info": info})
