"""Database rows: API keys, jobs and their inputs, conversions, outputs and history."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, joinedload, mapped_column, relationship


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobStatus(str, Enum):
    INCOMPLETE = "incomplete"
    READY = "ready"
    QUEUED = "queued"
    DOWNLOADING = "downloading"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


STATUS_INFO: dict[JobStatus, str] = {
    JobStatus.INCOMPLETE: "The job is missing inputs or conversions.",
    JobStatus.READY: "The job is complete and waits to be started (process: true).",
    JobStatus.QUEUED: "The job is waiting for a worker.",
    JobStatus.DOWNLOADING: "The input files are being downloaded.",
    JobStatus.PROCESSING: "The files are being converted.",
    JobStatus.COMPLETED: "The job has finished successfully.",
    JobStatus.FAILED: "The job has failed; see errors.",
    JobStatus.CANCELED: "The job was canceled.",
}

FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED})
STARTED = frozenset({JobStatus.QUEUED, JobStatus.DOWNLOADING, JobStatus.PROCESSING}) | FINISHED
# Outputs are made only once a job is processing, and no status leads back: a job in one of
# these has none, and reading it needs no query for them.
BEFORE_OUTPUTS = frozenset({JobStatus.INCOMPLETE, JobStatus.READY, JobStatus.QUEUED, JobStatus.DOWNLOADING})


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    # sha256 of the key: keys are 256-bit random, so a fast hash is enough.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("api_key_id", "idempotency_key", name="uq_jobs_idempotency"),
        # A key's newest jobs (its rate limit, its list) and its running ones (its concurrency
        # limit), without reading every job the key ever made (migrations/versions/0005).
        Index("ix_jobs_api_key_id_created_at", "api_key_id", "created_at"),
        Index("ix_jobs_api_key_id_status", "api_key_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    token: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.INCOMPLETE.value, index=True)
    status_info: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[int | None] = mapped_column(Integer)
    process: Mapped[bool] = mapped_column(Boolean, default=True)
    fail_on_input_error: Mapped[bool] = mapped_column(Boolean, default=True)
    fail_on_conversion_error: Mapped[bool] = mapped_column(Boolean, default=True)
    callback: Mapped[str | None] = mapped_column(Text)
    notify_status: Mapped[bool] = mapped_column(Boolean, default=False)
    # Which wire dialect created the job: its callbacks are shaped after it.
    dialect: Mapped[str] = mapped_column(String(20), default="v2", server_default="v2")
    # Hashes of the passwords that open every output of the job (jobs_api/security.py).
    download_passwords: Mapped[list[Any]] = mapped_column(default=list)
    # Idempotency-Key of the POST that created the job, and a digest of that request's body.
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_digest: Mapped[str | None] = mapped_column(String(64))
    errors: Mapped[list[Any]] = mapped_column(default=list)
    warnings: Mapped[list[Any]] = mapped_column(default=list)
    # The run that holds the job: 0 before its first, raised as each run takes it (lifecycle.take).
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    modified_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    inputs: Mapped[list[InputFile]] = relationship(
        back_populates="job", order_by="InputFile.position", cascade="all, delete-orphan"
    )
    conversions: Mapped[list[Conversion]] = relationship(
        back_populates="job", order_by="Conversion.position", cascade="all, delete-orphan"
    )
    outputs: Mapped[list[OutputFile]] = relationship(
        back_populates="job", order_by="OutputFile.created_at", cascade="all, delete-orphan"
    )
    history: Mapped[list[JobEvent]] = relationship(
        back_populates="job", order_by="JobEvent.seq", cascade="all, delete-orphan"
    )


class InputFile(Base):
    __tablename__ = "inputs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    type: Mapped[str] = mapped_column(String(20))
    source: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    filename: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger)
    checksum: Mapped[str | None] = mapped_column(String(64))
    content_type: Mapped[str | None] = mapped_column(String(200))
    # Server-made name under STORAGE_DIR/inputs; shared by inputs reused with input_id.
    storage_key: Mapped[str | None] = mapped_column(String(36), index=True)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    job: Mapped[Job] = relationship(back_populates="inputs")


class Conversion(Base):
    __tablename__ = "conversions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    category: Mapped[str] = mapped_column(String(20), default="audio")
    target: Mapped[str] = mapped_column(String(20))
    # Only the options the client set; the JSON view fills the rest with null.
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    # The download_password option, hashed; it is never kept among the options.
    password_hash: Mapped[str | None] = mapped_column(String(200))

    job: Mapped[Job] = relationship(back_populates="conversions")


class OutputFile(Base):
    __tablename__ = "outputs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    conversion_id: Mapped[str | None] = mapped_column(String(36))
    input_ids: Mapped[list[Any]] = mapped_column(default=list)
    filename: Mapped[str] = mapped_column(Text)
    storage_key: Mapped[str] = mapped_column(String(36))
    size: Mapped[int] = mapped_column(BigInteger)
    checksum: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="enabled")  # enabled or expired
    # Hashes of this output's own passwords; the job's open it too.
    password_hashes: Mapped[list[Any]] = mapped_column(default=list)
    downloads_counter: Mapped[int] = mapped_column(Integer, default=0)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    job: Mapped[Job] = relationship(back_populates="outputs")


class JobEvent(Base):
    """One change of a job's status: the job's history."""

    __tablename__ = "job_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), default=new_id, unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    status: Mapped[str] = mapped_column(String(20))
    info: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    job: Mapped[Job] = relationship(back_populates="history")


class Preset(Base):
    """A key's own preset; public presets ship with the service (jobs_api/presets.py)."""

    __tablename__ = "presets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    category: Mapped[str] = mapped_column(String(40))
    target: Mapped[str] = mapped_column(String(40))
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


# A job read with its inputs and conversions in the same query (session.get(Job, id,
# options=WITH_SPEC)): one query instead of three for a GET or a worker's start. It returns
# inputs x conversions rows, as many as the outputs the job makes and lists.
WITH_SPEC = (joinedload(Job.inputs), joinedload(Job.conversions))
