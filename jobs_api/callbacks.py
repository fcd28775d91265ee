"""Which status changes a job's callback hears about, and the exact body it gets.

The body is taken when the status changes, so each delivery (and each of its retries)
tells that moment, byte for byte. Both the API and the worker announce changes here
(`announce`); the worker delivers them (workers/delivery.py).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from jobs_api import file_conversion
from jobs_api.config import Config
from jobs_api.errors import RequestInvalid
from jobs_api.models import Job, JobStatus
from jobs_api.outbound import is_http_url
from jobs_api.queue import DELIVER_CALLBACK
from jobs_api.representation import job_json

FINAL = (JobStatus.COMPLETED.value, JobStatus.FAILED.value)


def wanted(job: Job) -> bool:
    """Every change with notify_status (a /v2 flag), otherwise only completed and failed."""
    if not job.callback:
        return False
    return hears_every_change(job) or job.status in FINAL


def hears_every_change(job: Job) -> bool:
    """notify_status: the callback hears of queued, downloading, processing too."""
    return job.notify_status and job.dialect != file_conversion.DIALECT


def body(job: Job, config: Config) -> str:
    shape = file_conversion.webhook_body if job.dialect == file_conversion.DIALECT else job_json
    return json.dumps(shape(job, config))


def announce(job: Job, config: Config, enqueue: Callable[..., None]) -> None:
    """Queue the delivery of the job's callback if its new status is one the callback wants to
    hear about. `enqueue(task, *args)` puts it on the queue."""
    if wanted(job):
        enqueue(DELIVER_CALLBACK, job.id, body(job, config))


def callback_url(value: Any) -> str | None:
    """A request's `callback`: an http or https URL, or none; a 400 otherwise."""
    if value in (None, ""):
        return None
    if not is_http_url(str(value)):
        raise RequestInvalid("Invalid callback URL.", {"callback": ["must be an http or https URL"]})
    return str(value)
