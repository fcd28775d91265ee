"""What the API does to jobs: create, change, start, cancel. No Flask here.

The database is the truth about a job; the queue only carries its id, and only after
the row is committed.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import mimetypes
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from jobs_api import callbacks, catalog
from jobs_api.config import Config
from jobs_api.errors import NotFound, RequestInvalid, TooManyRequests, Unprocessable, WrongState
from jobs_api.lifecycle import store_new, transition
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
    utcnow,
)
from jobs_api.presets import PresetService, validate_with_preset
from jobs_api.representation import aware
from jobs_api.security import hash_passwords, new_token
from jobs_api.storage import Storage, remove_quietly, sha256_file

PAGE_SIZE = 50
EDITABLE = (JobStatus.INCOMPLETE, JobStatus.READY)
INPUT_TYPES = ("remote", "upload", "base64", "input_id")
IDEMPOTENCY_WINDOW = timedelta(hours=24)
RUNNING = [JobStatus.QUEUED.value, JobStatus.DOWNLOADING.value, JobStatus.PROCESSING.value]
CONCURRENCY_RETRY_AFTER = 10  # seconds; a guess at when a running job frees its slot

Enqueue = Callable[..., None]  # (task's dotted path, *arguments)

# The caller's key is checked by the query that reads the job: a GET /v2/jobs/{id} ran one
# query for the key and one for the job (0.40 -> 0.26 ms for both in process).
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

    # Reading -------------------------------------------------------------------------

    def for_key(self, key_hash: str, job_id: str) -> Job | None:
        """The job if the key (by its hash) is valid, unrevoked and owns it; None otherwise."""
        return self.session.execute(
            JOB_OF_KEY, {"job_id": job_id, "key_hash": key_hash}).unique().scalar_one_or_none()

    def for_token(self, token: str, job_id: str) -> Job:
        job = self.session.get(Job, job_id, options=WITH_SPEC)
        if job is None or not hmac.compare_digest(job.token, token):
            raise NotFound("Job not found.")
        return job

    def page(self, key_id: str, status: str | None, page: int) -> tuple[list[Job], int]:
        query = select(Job).where(Job.api_key_id == key_id)
        if status:
            query = query.where(Job.status == status)
        total = self.session.scalar(select(func.count()).select_from(query.subquery())) or 0
        # The page's inputs, conversions and outputs in one query each, not three per job:
        # a page of 50 took 29 ms in-process that way, 11 ms this way.
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
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
        if idempotency_key:
            earlier = self._idempotent(key_id, idempotency_key, digest)
            if earlier is not None:
                return earlier
        self._require_rate(key_id)
        if body.get("process", True) and body.get("input") and body.get("conversion"):
            self.require_slot(key_id)
        job = Job(
            id=new_id(),  # now: the history below refers to it before the insert
            dialect=dialect,
            idempotency_key=idempotency_key,
            request_digest=digest if idempotency_key else None,
            download_passwords=self._passwords(body.get("download_passwords")),
            api_key_id=key_id,
            token=new_token(),
            status=JobStatus.INCOMPLETE.value,
            status_info=STATUS_INFO[JobStatus.INCOMPLETE],
            process=body.get("process", True),
            fail_on_input_error=body.get("fail_on_input_error", True),
            fail_on_conversion_error=body.get("fail_on_conversion_error", True),
            callback=self._callback(body.get("callback")),
            notify_status=body.get("notify_status", False),
            inputs=[], conversions=[],  # known empty: no lazy load after the insert
        )
        for index, spec in enumerate(body.get("conversion", [])):
            self._add_conversion(job, spec, f"conversion.{index}.")
        for index, spec in enumerate(body.get("input", [])):
            self._add_input(job, spec, f"input.{index}.")
        # A job that starts at once is stored queued, its history ready then queued: no other
        # request can change it before this commit, so it needs none of _settle's conditional update.
        statuses = [_resting_status(job)]
        starts = statuses[0] == JobStatus.READY and job.process
        if starts:
            statuses.append(JobStatus.QUEUED)
        job.status, job.status_info = statuses[-1].value, STATUS_INFO[statuses[-1]]
        try:
            store_new(self.session, job, statuses)
            self.session.commit()
        except IntegrityError:  # the same Idempotency-Key in a request that was just faster
            self.session.rollback()
            for item in job.inputs:
                self._release_input_file(item)
            earlier = self._idempotent(key_id, idempotency_key or "", digest)
            if earlier is None:
                raise
            return earlier
        if starts:
            self.enqueue("workers.tasks.process_job", job.id)
            self._announce(job)
        return job

    def update(self, job: Job, body: dict[str, Any]) -> Job:
        """Change a job. Its download passwords can change at any time, the rest only before it
        starts; a refused change (409, 429, 400) changes nothing, passwords included."""
        if set(body) - {"download_passwords"}:
            self._require_editable(job)
            if body.get("process") and not job.process and job.inputs and job.conversions:
                self.require_slot(job.api_key_id)
        if "download_passwords" in body:
            job.download_passwords = self._passwords(body["download_passwords"])
        if set(body) <= {"download_passwords"}:
            self.session.commit()
            return job
        for name in ("process", "fail_on_input_error", "fail_on_conversion_error", "notify_status"):
            if name in body:
                setattr(job, name, body[name])
        if "callback" in body:
            job.callback = self._callback(body["callback"])
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
            self._release_input_file(item)
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
        item = self._add_input(job, spec, "")
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
        self._release_input_file(item)
        job.inputs.remove(item)
        self._settle(job)

    def accept_file(self, job: Job, path: Path, filename: str | None, content_type: str | None,
                    kind: str = "upload", checksum: str | None = None) -> InputFile:
        """Adopt a received file (with its sha256 if it was hashed on arrival) as a new input
        of `job`, and start the job if it is due."""
        if job.status not in (JobStatus.INCOMPLETE.value, JobStatus.READY.value):
            remove_quietly(path)
            raise WrongState(f"The job is {job.status}; files can only be added before it starts.")
        item = self._adopt_file(job, path, filename, content_type, kind, checksum)
        self._settle(job)
        return item

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

    # Limits --------------------------------------------------------------------------

    def require_slot(self, key_id: str) -> None:
        """429 unless the key may start one more job now."""
        limit = self.config.max_concurrent_jobs
        if not limit:
            return
        running = self.session.scalar(
            select(func.count()).select_from(Job).where(Job.api_key_id == key_id, Job.status.in_(RUNNING))
        ) or 0
        if running >= limit:
            raise TooManyRequests(
                f"This key already has {running} jobs queued or running (limit {limit}); "
                "try again when one has finished.", CONCURRENCY_RETRY_AFTER)

    def _require_rate(self, key_id: str) -> None:
        limit = self.config.max_jobs_per_minute
        if not limit:
            return
        now = utcnow()
        # The limit-th newest job of the last minute, if there is one: the key is at its limit
        # until that job's minute ends. One row, however high the limit.
        nth_newest = self.session.scalar(
            select(Job.created_at).where(Job.api_key_id == key_id, Job.created_at > now - timedelta(minutes=1))
            .order_by(Job.created_at.desc()).offset(limit - 1).limit(1)
        )
        if nth_newest is not None:
            wait = math.ceil((aware(nth_newest) + timedelta(minutes=1) - now).total_seconds())
            raise TooManyRequests(f"This key created {limit} jobs in the last minute (the limit).", wait)

    def _idempotent(self, key_id: str, idempotency_key: str, digest: str) -> Job | None:
        earlier = self.session.scalar(
            select(Job).where(Job.api_key_id == key_id, Job.idempotency_key == idempotency_key))
        if earlier is None:
            return None
        if aware(earlier.created_at) < utcnow() - IDEMPOTENCY_WINDOW:
            earlier.idempotency_key = None  # the key is free again after 24 h
            self.session.commit()
            return None
        if earlier.request_digest != digest:
            raise Unprocessable(
                "This Idempotency-Key was used for a different request in the last 24 hours.",
                {"Idempotency-Key": ["already used with another request body"]})
        return earlier

    def _passwords(self, value: Any) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise RequestInvalid("Invalid download passwords.",
                                 {"download_passwords": ["must be an array of non-empty strings"]})
        return hash_passwords(value)

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

    def _add_input(self, job: Job, spec: Any, path: str) -> InputFile:
        if not isinstance(spec, dict):
            raise RequestInvalid("Invalid input.", {path.rstrip(".") or "input": ["must be an object"]})
        kind = spec.get("type", "remote")
        source = spec.get("source")
        if kind not in INPUT_TYPES:
            raise RequestInvalid(
                f"Unknown input type {kind!r}.",
                {f"{path}type": [f"unknown input type; allowed values: {', '.join(INPUT_TYPES)}"]},
            )
        if kind == "upload":
            raise RequestInvalid(
                "Upload inputs are created by uploading.",
                {f"{path}type": ["send the file to POST {server}/upload-file/{job_id} instead"]},
            )
        if not isinstance(source, str) or not source:
            raise RequestInvalid("Input source missing.", {f"{path}source": ["a non-empty string is required"]})
        if kind == "remote":
            parts = urlsplit(source)
            if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                raise RequestInvalid(
                    "Invalid input URL.", {f"{path}source": ["must be an http or https URL"]}
                )
            item = InputFile(type=kind, source=source, status="downloading",
                             filename=spec.get("filename"), position=len(job.inputs))
            job.inputs.append(item)
            return item
        if kind == "base64":
            return self._add_base64(job, source, spec.get("filename"), path)
        return self._reuse_input(job, source, path)

    def _add_base64(self, job: Job, content: str, filename: Any, path: str) -> InputFile:
        data = decode_base64(content, f"{path}source")
        with self.storage.incoming_file() as handle:
            handle.write(data)
        name = filename if isinstance(filename, str) else None
        return self._adopt_file(job, Path(handle.name), name, None, "base64")

    def _adopt_file(self, job: Job, path: Path, filename: str | None, content_type: str | None,
                    kind: str, checksum: str | None = None) -> InputFile:
        """Move a received file into storage as a new ready input of `job`."""
        name = display_name(filename or "") or "file"
        item = InputFile(
            type=kind, source=name, status="ready", filename=name, size=path.stat().st_size,
            checksum=checksum or sha256_file(path), content_type=_content_type(content_type, name),
            storage_key=self.storage.adopt_input(path), position=len(job.inputs),
        )
        job.inputs.append(item)
        return item

    def _reuse_input(self, job: Job, input_id: str, path: str) -> InputFile:
        earlier = self.session.get(InputFile, input_id)
        if earlier is None or earlier.job.api_key_id != job.api_key_id:
            raise RequestInvalid("Unknown input.", {f"{path}source": ["no input with this id"]})
        if earlier.storage_key is None or not self.storage.input_path(earlier.storage_key).exists():
            raise RequestInvalid("Input not available.", {f"{path}source": ["that input has no file (any more)"]})
        item = InputFile(
            type="input_id", source=input_id, status="ready", filename=earlier.filename,
            size=earlier.size, checksum=earlier.checksum, content_type=earlier.content_type,
            storage_key=earlier.storage_key, position=len(job.inputs),
        )
        job.inputs.append(item)
        return item

    def _callback(self, value: Any) -> str | None:
        if value in (None, ""):
            return None
        parts = urlsplit(str(value))
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise RequestInvalid("Invalid callback URL.", {"callback": ["must be an http or https URL"]})
        return str(value)

    def _settle(self, job: Job) -> None:
        """After any change: incomplete, ready, or queued (and enqueued) when process is true."""
        wanted = _resting_status(job)
        if wanted == JobStatus.READY and job.process:
            wanted = JobStatus.QUEUED
        moved = job.status != wanted.value and transition(self.session, job.id, wanted, allowed_from=EDITABLE)
        self.session.commit()
        if not moved and job.status != wanted.value:
            self.session.refresh(job)  # another request (a cancel) changed it first
        if moved and wanted == JobStatus.QUEUED:  # not if a cancel got there first
            self.enqueue("workers.tasks.process_job", job.id)
        if moved:
            self._announce(job)

    def _announce(self, job: Job) -> None:
        """Queue the job's callback if this status is one it wants to hear about."""
        if callbacks.wanted(job):
            self.enqueue("workers.tasks.deliver_callback", job.id, callbacks.body(job, self.config))

    def _require_editable(self, job: Job) -> None:
        if JobStatus(job.status) in STARTED:
            raise WrongState(f"The job is {job.status}; it can no longer be changed.")

    def _release_input_file(self, item: InputFile) -> None:
        key, item.storage_key = item.storage_key, None
        if key is None:
            return
        self.session.flush()
        still_used = self.session.scalar(
            select(func.count()).select_from(InputFile).where(InputFile.storage_key == key)
        )
        if not still_used:
            remove_quietly(self.storage.input_path(key))

    def _remove_output(self, output: OutputFile) -> None:
        remove_quietly(self.storage.output_path(output.storage_key))
        output.job.outputs.remove(output)


def _resting_status(job: Job) -> JobStatus:
    return JobStatus.READY if job.inputs and job.conversions else JobStatus.INCOMPLETE


def decode_base64(content: str, field: str) -> bytes:
    """Base64, plain or as a data: URI, to bytes; a 400 naming `field` otherwise."""
    if content.startswith("data:") and "," in content:
        content = content.split(",", 1)[1]
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestInvalid("Invalid base64 content.", {field: ["is not valid base64"]}) from exc


def display_name(name: str) -> str:
    """A client-given file name made safe to show: no directories, no control characters."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in base if ch.isprintable()).strip().lstrip(".")
    return cleaned[:255]


def _content_type(declared: str | None, name: str) -> str:
    if declared and declared != "application/octet-stream":
        return declared.split(";")[0].strip()
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"

