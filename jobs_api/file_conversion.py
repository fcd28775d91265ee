"""The File Conversion dialect (seed 000, MusicGPT's endpoint) on top of ordinary jobs.

A request becomes a `/v2` job with one conversion; the job id is the `task_id` and the
conversion id the `conversion_id`. No Flask here.
"""
from __future__ import annotations

from typing import Any

from jobs_api import catalog
from jobs_api.config import Config
from jobs_api.errors import RequestInvalid, did_you_mean
from jobs_api.models import Job, JobStatus
from jobs_api.outbound import is_http_url
from jobs_api.representation import download_uri, iso

DIALECT = "file_convert"
CONVERSION_TYPE = "File Conversion"
FORMATS = ("mp3", "wav", "flac", "ogg", "aac", "webm")
RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000, 96000, 192000)
DEPTHS = (16, 24, 32)
DEFAULT_DEPTH = 16
FIELDS = ("audio_url", "audio_file", "target_format", "target_sr", "target_bit_depth", "webhook_url")

STATUS = {
    JobStatus.INCOMPLETE: "IN_QUEUE", JobStatus.READY: "IN_QUEUE", JobStatus.QUEUED: "IN_QUEUE",
    JobStatus.DOWNLOADING: "PROCESSING", JobStatus.PROCESSING: "PROCESSING",
    JobStatus.COMPLETED: "COMPLETED", JobStatus.FAILED: "FAILED", JobStatus.CANCELED: "FAILED",
}


class FieldInvalid(RequestInvalid):
    """A bad form field; the message names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", {field: [message]})


def refuse_unknown(fields: list[str | None]) -> None:
    """FieldInvalid for the first form field this endpoint does not read: a misspelled
    `target_samplerate` would otherwise be dropped and the file converted at the wrong rate.
    A name the multipart parser could not read (a quoted name ending in a backslash) is None."""
    for name in fields:
        field = name or ""
        if field not in FIELDS:
            raise FieldInvalid(field, f"unknown field; {did_you_mean(field, FIELDS)}known fields: {', '.join(FIELDS)}")


def job_body(form: dict[str, Any], has_file: bool) -> dict[str, Any]:
    """The `/v2` job for a File Conversion request, or FieldInvalid."""
    for field, value in form.items():
        if "\x00" in value:  # PostgreSQL cannot store it
            raise FieldInvalid(field, "contains a NUL character")
    url = (form.get("audio_url") or "").strip()
    if bool(url) == has_file:
        raise FieldInvalid("audio_url", "send exactly one of audio_url or audio_file")
    if url and not is_http_url(url):
        raise FieldInvalid("audio_url", "must be an http or https URL")
    target_format = (form.get("target_format") or "").strip().lower()
    if target_format not in FORMATS:
        raise FieldInvalid("target_format", f"must be one of {', '.join(FORMATS)}")
    target = catalog.TARGETS[target_format]
    options: dict[str, Any] = {}
    rate = _integer(form, "target_sr", RATES)
    if rate is not None:
        possible = target.codec.sample_rates
        if rate not in possible:
            allowed = ", ".join(str(r) for r in RATES if r in possible)
            raise FieldInvalid("target_sr", f"{target_format} cannot be encoded at {rate} Hz; possible: {allowed}")
        options["frequency"] = rate
    depth = _integer(form, "target_bit_depth", DEPTHS)
    if target.lossless:
        depth = depth or DEFAULT_DEPTH
        if depth not in target.codec.depths:
            allowed = ", ".join(str(d) for d in DEPTHS if d in target.codec.depths)
            raise FieldInvalid("target_bit_depth", f"{target_format} cannot hold {depth} bit; possible: {allowed}")
    if depth is not None:
        options["audio_bitdepth"] = depth  # on a lossy format: accepted, with a job warning
    webhook = (form.get("webhook_url") or "").strip()
    if webhook and not is_http_url(webhook):
        raise FieldInvalid("webhook_url", "must be an http or https URL")
    return {
        "process": True,
        "input": [{"type": "remote", "source": url}] if url else [],
        "conversion": [{"target": target_format, "options": options}],
        "callback": webhook or None,
    }


def conversion_json(job: Job, config: Config) -> dict[str, Any]:
    """What `GET /api/public/v1/byId` reports."""
    return {
        "task_id": job.id,
        "conversion_id": job.conversions[0].id if job.conversions else None,
        "conversion_type": CONVERSION_TYPE,
        "status": STATUS[JobStatus(job.status)],
        "status_msg": _status_message(job),
        "audio_url": _audio_url(job, config),
        "createdAt": iso(job.created_at),
        "updatedAt": iso(job.modified_at),
    }


def webhook_body(job: Job, config: Config) -> dict[str, Any]:
    """What the webhook receives when the conversion is finished."""
    status = STATUS[JobStatus(job.status)]
    return {
        "success": status == "COMPLETED",
        "conversion_id": job.conversions[0].id if job.conversions else None,
        "task_id": job.id,
        "conversion_type": CONVERSION_TYPE,
        "status": status,
        "status_msg": _status_message(job),
        "output_file_path": _audio_url(job, config),
    }


def _audio_url(job: Job, config: Config) -> str | None:
    if job.status != JobStatus.COMPLETED.value or not job.outputs:
        return None
    return download_uri(job.outputs[0], config)


def _status_message(job: Job) -> str:
    if job.errors:
        return str(job.errors[0].get("message", job.status_info or ""))
    return job.status_info or ""


def _integer(form: dict[str, Any], field: str, allowed: tuple[int, ...]) -> int | None:
    raw = form.get(field)
    if raw in (None, ""):
        return None
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise FieldInvalid(field, f"must be an integer, one of {', '.join(map(str, allowed))}") from None
    if value not in allowed:
        raise FieldInvalid(field, f"{value} is not allowed; allowed values: {', '.join(map(str, allowed))}")
    return value


def error_body(message: str, status: int, errors: dict[str, list[str]]) -> dict[str, Any]:
    """This dialect's error shape, `{"success": false, "error": ...}`: a 400 that names a `/v2`
    field (from the job layer) names the form field it came from."""
    if status == 400 and errors:
        field, messages = next(iter(errors.items()))
        message = f"{_form_field(field)}: {messages[0]}"
    elif status == 401 and errors:  # which of missing and wrong the key is
        message = f"{message}: {next(iter(errors.values()))[0]}"
    return {"success": False, "error": message}


def _form_field(path: str) -> str:
    for prefix, name in (("conversion.0.options.frequency", "target_sr"),
                         ("conversion.0.options.audio_bitdepth", "target_bit_depth"),
                         ("input.0.source", "audio_url"), ("callback", "webhook_url")):
        if path.startswith(prefix):
            return name
    return path
