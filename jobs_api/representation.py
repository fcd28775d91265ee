"""The JSON of jobs and their parts, as api2convert's OpenAPI file shapes them.

Plain functions so the worker can build the same body for callbacks.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jobs_api import catalog
from jobs_api.config import Config
from jobs_api.models import BEFORE_OUTPUTS, STATUS_INFO, Conversion, InputFile, Job, JobEvent, JobStatus, OutputFile


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were stored as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return aware(moment).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def job_json(job: Job, config: Config) -> dict[str, Any]:
    # A job polled while it waits or downloads is not read again for outputs it cannot have
    # (the query was a fifth of a GET /v2/jobs/{id} in process).
    outputs = [] if job.status in BEFORE_OUTPUTS else job.outputs
    return {
        "id": job.id,
        "token": job.token,
        "type": "job",
        "status": {
            "code": job.status,
            "info": job.status_info or STATUS_INFO[JobStatus(job.status)],
        },
        "progress": job.progress,
        "errors": job.errors,
        "warnings": job.warnings,
        "process": job.process,
        "fail_on_input_error": job.fail_on_input_error,
        "fail_on_conversion_error": job.fail_on_conversion_error,
        "conversion": [conversion_json(item) for item in job.conversions],
        "limits": {},
        "input": [input_json(item) for item in job.inputs],
        "output": [output_json(item, config) for item in outputs],
        "callback": job.callback,
        "notify_status": job.notify_status,
        "server": config.server_url,
        "spent": 0,
        "created_at": iso(job.created_at),
        "modified_at": iso(job.modified_at),
    }


def input_json(item: InputFile) -> dict[str, Any]:
    return {
        "id": item.id,
        "type": item.type,
        "source": item.source,
        "status": item.status,
        "engine": "auto",
        "filename": item.filename,
        "size": item.size,
        "checksum": item.checksum,
        "content_type": item.content_type,
        "options": item.options,
        "parameters": {},
        "created_at": iso(item.created_at),
        "modified_at": iso(item.modified_at),
    }


def conversion_json(item: Conversion) -> dict[str, Any]:
    target = catalog.TARGETS.get(item.target)
    names = target.options if target else {}
    return {
        "id": item.id,
        "target": item.target,
        "category": item.category,
        # Every option of the target, null where unset (the contract's echo rule).
        "options": {name: item.options.get(name) for name in names},
        "metadata": item.metadata_,
        "output_target": [],
    }


def output_json(item: OutputFile, config: Config) -> dict[str, Any]:
    return {
        "id": item.id,
        "source": {"conversion": item.conversion_id, "input": item.input_ids},
        "filename": item.filename,
        "uri": download_uri(item, config),
        "size": item.size,
        "status": item.status,
        "content_type": item.content_type,
        "downloads_counter": item.downloads_counter,
        "checksum": item.checksum,
        "created_at": iso(item.created_at),
        "metadata": item.metadata_,
    }


def download_uri(item: OutputFile, config: Config) -> str:
    return f"{config.server_url}/output/{item.id}"


def event_json(item: JobEvent) -> dict[str, Any]:
    return {"id": item.id, "status": item.status, "info": item.info, "created_at": iso(item.created_at)}
