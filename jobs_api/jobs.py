"""What the API does to jobs: create, change, start, cancel. No Flask here.

The database is the truth about a job; the queue only carries its id, and only after
the row is committed.
"""
from __future__ import annotations

import hmac
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from jobs_api import callbacks, catalog
from jobs_api.config import Config
from jobs_api.errors import NotFound, RequestInvalid, TooManyRequests, WrongState
from jobs_api.idempotency import earlier_job, request_digest
from jobs_api.inputs import InputFiles, display_name
from jobs_api.lifecycle import store_new, transition
from jobs_api.limits import KeyLimits
from jobs_api.models import (
    STARTED,
    STATUS_INFO,
    WITH_SPEC,
    ApiKey,
    Conversion,
    InputFile,
    Job,
    JobStatus,
    OutputFile,
    new_id,
)
from jobs_api.presets import PresetService, validate_with_preset
from jobs_api.queue import PROCESS_JOB
from jobs_api.security import download_passwords, hash_passwords, new_token
from jobs_api.storage import Incoming, Storage

PAGE_SIZE = 50
EDITABLE = (JobStatus.INCOMPLETE, JobStatus.READY)

Enqueue = Callable[..., None]  # (task's dotted path, *arguments)

# The caller's key is checked by the query that reads the job: one query instead of one for
# the key and one for the job.
JOB_OF_KEY = (
    select(Job).join(ApiKey, ApiKey.id == Job.api_key_id)
    .where(Job.id == bindparam("job_id"), ApiKey.key_hash == bindparam("key_hash"), ApiKey.revoked_at.is_(None))
    .options(*WITH_SPEC)
)


class JobService:
    def __init__(self, session: Session, config: Config, storage: Storage, enqueue: Enqueue) -> None:
        self.session = session
        self.config = config
        self.storage = storage
        self.enqueue = enqueue
        self.inputs = InputFiles(session, storage)
        self.limits = KeyLimits(session, config)

    # Reading -------------------------------------------------------------------------

    def for_key(self, key_hash: str, job_id: str) -> Job | None:
        """The job if the key (by its hash) is valid, unrevoked and owns it; None otherwise."""
        return self.session.execute(
            JOB_OF_KEY, {"job_id": job_id, "key_hash": key_hash}).unique().scalar_one_or_none()

    def for_token(self, token: str, job_id: str) -> Job:
        """The job its token opens; a token dies with its key: a revoked key's jobs are 404."""
        job = self.session.get(Job, job_id, options=WITH_SPEC)
        if job is None or not hmac.compare_digest(job.token, token):
            raise NotFound("Job not found.")
        key = self.session.get(ApiKey, job.api_key_id)
        if key is None or key.revoked_at is not None:
            raise NotFound("Job not found.")
        return job

    def page(self, key_id: str, status: str | None, page: int) -> tuple[list[Job], int]:
        query = select(Job).where(Job.api_key_id == key_id)
        if status:
            query = query.where(Job.status == status)
        total = self.session.scalar(select(func.count()).select_from(query.subquery())) or 0
        # The page's inputs, conversions and outputs in one query each, not three per job.
        rows = self.session.scalars(
            query.order_by(Job.created_at.desc(), Job.id)
            .offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)
            .options(selectinload(Job.inputs), selectinload(Job.conversions), selectinload(Job.outputs))
        ).all()
        return list(rows), total

    # Creating and changing -----------------------------------------------------------

    def create(self, key_id: str, body: dict[str, Any], dialect: str = "v2",
               idempotency_key: str | None = None) -> Job:
        """A new job; with an Idempotency-Key seen in the last 24 h, the job it created."""
        digest = request_digest(body)
        if idempotency_key:
            earlier = earlier_job(self.session, key_id, idempotency_key, digest)
            if earlier is not None:
                return earlier
        self.limits.require_rate(key_id)
        if body.get("process", True) and body.get("input") and body.get("conversion"):
            self.limits.require_slot(key_id)  # before any work; KeyLimits.starting counts again, locked
        job = Job(
            id=new_id(),  # now: the history below refers to it before the insert
            dialect=dialect,
            idempotency_key=idempotency_key,
            request_digest=digest if idempotency_key else None,
            download_passwords=download_passwords(body.get("download_passwords")),
            api_key_id=key_id,
            token=new_token(),
            status=JobStatus.INCOMPLETE.value,
            status_info=STATUS_INFO[JobStatus.INCOMPLETE],
            process=body.get("process", True),
            fail_on_input_error=body.get("fail_on_input_error", True),
            fail_on_conversion_error=body.get("fail_on_conversion_error", True),
            callback=callbacks.callback_url(body.get("callback")),
            notify_status=body.get("notify_status", False),
            inputs=[], conversions=[],  # known empty: no lazy load after the insert
        )
        for index, spec in enumerate(body.get("conversion", [])):
            self._add_conversion(job, spec, f"conversion.{index}.")
        for index, spec in enumerate(body.get("input", [])):
            self.inputs.add(job, spec, f"input.{index}.")
        # A job that starts at once is stored queued, its history ready then queued: no other
        # request can change it before this commit, so it needs none of _settle's conditional update.
        statuses = [_resting_status(job)]
        starts = statuses[0] == JobStatus.READY and job.process
        if starts:
            statuses.append(JobStatus.QUEUED)
        job.status, job.status_info = statuses[-1].value, STATUS_INFO[statuses[-1]]
        try:
            with self.limits.starting(key_id) if starts else nullcontext():
                store_new(self.session, job, statuses)
                self.session.commit()
        except TooManyRequests:  # other requests of the key took the last slot meanwhile
            self.session.rollback()
            for item in job.inputs:
                self.inputs.release(item)
            raise
        except IntegrityError:  # the same Idempotency-Key in a request that was just faster
            self.session.rollback()
            for item in job.inputs:
                self.inputs.release(item)
            earlier = earlier_job(self.session, key_id, idempotency_key or "", digest)
            if earlier is None:
                raise
            return earlier
        if starts:
            self.enqueue(PROCESS_JOB, job.id)
            self._announce(job)
        return job

    def update(self, job: Job, body: dict[str, Any]) -> Job:
        """Change a job. Its download passwords can change at any time, the rest only before it
        starts; a refused change (409, 429, 400) changes nothing, passwords included."""
        if set(body) - {"download_passwords"}:
            self._require_editable(job)
            if body.get("process") and not job.process and job.inputs and job.conversions:
                self.limits.require_slot(job.api_key_id)
        if "download_passwords" in body:
            job.download_passwords = download_passwords(body["download_passwords"])
        if set(body) <= {"download_passwords"}:
            self.session.commit()
            return job
        for name in ("process", "fail_on_input_error", "fail_on_conversion_error", "notify_status"):
            if name in body:
                setattr(job, name, body[name])
        if "callback" in body:
            job.callback = callbacks.callback_url(body["callback"])
        self.session.commit()
        self._settle(job)
        return job

    def cancel(self, job: Job) -> None:
        """Cancel the job, and delete its files; a running worker notices within a moment."""
        if job.status != JobStatus.CANCELED.value:
            moved = transition(self.session, job.id, JobStatus.CANCELED,
                               allowed_from=[s for s in JobStatus if s != JobStatus.CANCELED])
            self.session.commit()
            self.session.refresh(job)
            if moved:
                self._announce(job)
        for output in list(job.outputs):
            self._remove_output(output)
        for item in list(job.inputs):
            self.inputs.release(item)
        self.session.commit()
        self.storage.remove_work_dirs(job.id)

    def add_conversion(self, job: Job, spec: Any) -> Conversion:
        self._require_editable(job)
        conversion = self._add_conversion(job, spec, "")
        self._settle(job)
        return conversion

    def update_conversion(self, job: Job, conversion: Conversion, body: dict[str, Any]) -> Conversion:
        self._require_editable(job)
        target = body.get("target", conversion.target)
        options = dict(conversion.options)
        changes = body.get("options") or {}
        if not isinstance(changes, dict):
            raise RequestInvalid("Invalid options.", {"options": ["must be an object"]})
        for name, value in changes.items():
            if value is None:
                options.pop(name, None)  # null resets an option to its default
            else:
                options[name] = value
        validate_with_preset(PresetService(self.session), job.api_key_id, target, options)
        if "download_password" in changes:
            password = options.pop("download_password", None)
            conversion.password_hash = hash_passwords([password])[0] if password else None
        conversion.target, conversion.options = target, options
        if "metadata" in body:
            conversion.metadata_ = catalog.validate_metadata(body["metadata"])
        self.session.commit()
        return conversion

    def delete_conversion(self, job: Job, conversion: Conversion) -> None:
        self._require_editable(job)
        job.conversions.remove(conversion)
        self._settle(job)

    def add_input(self, job: Job, spec: Any) -> InputFile:
        self._require_editable(job)
        item = self.inputs.add(job, spec, "")
        self._settle(job)
        return item

    def update_input(self, job: Job, item: InputFile, body: dict[str, Any]) -> InputFile:
        self._require_editable(job)
        if "filename" in body:
            item.filename = display_name(body["filename"]) or item.filename
        if "options" in body:
            item.options = body["options"] or {}
        self.session.commit()
        return item

    def delete_input(self, job: Job, item: InputFile) -> None:
        self._require_editable(job)
        self.inputs.release(item)
        job.inputs.remove(item)
        self._settle(job)

    def accept_file(self, job: Job, received: Incoming, filename: str | None, content_type: str | None,
                    kind: str = "upload") -> InputFile:
        """Adopt a received file as a new input of `job`, and start the job if it is due."""
        self.require_uploadable(job, received)
        item = self.inputs.adopt(job, received, filename, content_type, kind)
        self._settle(job)
        return item

    def require_uploadable(self, job: Job, received: Incoming | None = None) -> None:
        """409 unless files can still be added to the job (checked before an upload is read too);
        a file `received` for it is removed then."""
        if job.status not in (JobStatus.INCOMPLETE.value, JobStatus.READY.value):
            if received is not None:
                received.discard()
            raise WrongState(f"The job is {job.status}; files can only be added before it starts.")

    def update_outputs(self, outputs: list[OutputFile], body: dict[str, Any]) -> list[OutputFile]:
        """Rename outputs (the extension stays) or set their own download password ("" removes it)."""
        hashes = None
        if "download_password" in body:
            hashes = hash_passwords([body["download_password"]]) if body["download_password"] else []
        for output in outputs:
            if body.get("filename"):
                extension = Path(output.filename).suffix
                output.filename = (display_name(str(body["filename"])) or "file") + extension
            if hashes is not None:
                output.password_hashes = hashes
        self.session.commit()
        return outputs

    def delete_output(self, output: OutputFile) -> None:
        self._remove_output(output)
        self.session.commit()

    # Internals -----------------------------------------------------------------------

    def _add_conversion(self, job: Job, spec: Any, path: str) -> Conversion:
        if not isinstance(spec, dict):
            raise RequestInvalid("Invalid conversion.", {path.rstrip(".") or "conversion": ["must be an object"]})
        category = spec.get("category") or catalog.CATEGORY
        if category != catalog.CATEGORY:
            raise RequestInvalid(
                f"Unknown category {category!r}.",
                {f"{path}category": [f"unknown category; allowed values: {catalog.CATEGORY}"]},
            )
        options = {k: v for k, v in (spec.get("options") or {}).items() if v is not None} \
            if isinstance(spec.get("options"), dict) else spec.get("options")
        target = validate_with_preset(PresetService(self.session), job.api_key_id, spec.get("target"), options, path)
        options = dict(options or {})
        password = options.pop("download_password", None)
        conversion = Conversion(
            category=category, target=target.name, options=options,
            metadata_=catalog.validate_metadata(spec.get("metadata"), path), position=len(job.conversions),
            password_hash=hash_passwords([password])[0] if password else None,
        )
        job.conversions.append(conversion)
        return conversion

    def _settle(self, job: Job) -> None:
        """After any change: incomplete, ready, or queued (and enqueued) when process is true."""
        wanted = _resting_status(job)
        if wanted == JobStatus.READY and job.process:
            wanted = JobStatus.QUEUED
        try:
            with self.limits.starting(job.api_key_id) if wanted == JobStatus.QUEUED else nullcontext():
                moved = job.status != wanted.value and transition(self.session, job.id, wanted,
                                                                  allowed_from=EDITABLE)
                self.session.commit()
        except TooManyRequests as refused:  # what the request added is kept; the job waits to be started
            job.process = False
            if job.status != JobStatus.READY.value:
                transition(self.session, job.id, JobStatus.READY, allowed_from=EDITABLE)
            self.session.commit()
            refused.message += ' The job was kept, not started: start it with {"process": true} later.'
            raise
        if not moved and job.status != wanted.value:
            self.session.refresh(job)  # another request (a cancel) changed it first
        if moved and wanted == JobStatus.QUEUED:  # not if a cancel got there first
            self.enqueue(PROCESS_JOB, job.id)
        if moved:
            self._announce(job)

    def _announce(self, job: Job) -> None:
        callbacks.announce(job, self.config, self.enqueue)

    def _require_editable(self, job: Job) -> None:
        if JobStatus(job.status) in STARTED:
            raise WrongState(f"The job is {job.status}; it can no longer be changed.")

    def _remove_output(self, output: OutputFile) -> None:
        self.storage.remove_output(output.storage_key)
        output.job.outputs.remove(output)


def _resting_status(job: Job) -> JobStatus:
    return JobStatus.READY if job.inputs and job.conversions else JobStatus.INCOMPLETE
