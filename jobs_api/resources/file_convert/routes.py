"""The File Conversion dialect: `POST /api/public/v1/file_convert` and `GET .../byId`.

Same jobs, queue, worker and limits as `/v2`; only the wire shapes differ, errors included:
`{"success": false, "error": ...}`.
"""
from __future__ import annotations

import logging
from typing import Any

from flask import request
from flask.views import MethodView
from marshmallow import Schema, fields
from sqlalchemy import select

from jobs_api import file_conversion
from jobs_api.errors import NotFound, Unavailable
from jobs_api.models import Conversion, Job, JobStatus
from jobs_api.storage import Incoming, IncomingFile
from jobs_api.uploads import received_file
from jobs_api.web import Blueprint, api_key_id, config, service, session, storage
from workers.ffmpeg import probe, runner

log = logging.getLogger(__name__)

blp = Blueprint("file_convert", __name__, url_prefix="/api/public/v1",
                description="File Conversion (MusicGPT-compatible): one multipart call, a webhook when done")

FORM_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["target_format"],
        "properties": {
            "audio_url": {"type": "string", "description": "URL of the audio; exactly one of audio_url, audio_file"},
            "audio_file": {"type": "string", "format": "binary"},
            "target_format": {"type": "string", "enum": list(file_conversion.FORMATS)},
            "target_sr": {"type": "integer", "enum": list(file_conversion.RATES),
                          "description": "Default: the source's rate where the format can hold it"},
            "target_bit_depth": {"type": "integer", "enum": list(file_conversion.DEPTHS), "description":
                                 "Default 16 for wav and flac; ignored (with a warning) for lossy formats"},
            "webhook_url": {"type": "string", "description": "POSTed the result when the conversion is finished"},
        },
    }}},
}


class FileConversionStarted(Schema):
    success = fields.Boolean()
    task_id = fields.String()
    conversion_id = fields.String()
    status = fields.String()
    message = fields.String()


class ByIdQuery(Schema):
    conversionType = fields.String(required=True, metadata={"description": "FILE_CONVERT"})  # noqa: N815
    task_id = fields.String()
    conversion_id = fields.String()


class FileConversionStatus(Schema):
    task_id = fields.String()
    conversion_id = fields.String()
    conversion_type = fields.String()
    status = fields.String(metadata={"description": "IN_QUEUE, PROCESSING, COMPLETED or FAILED"})
    status_msg = fields.String()
    audio_url = fields.String(allow_none=True)
    createdAt = fields.String()  # noqa: N815
    updatedAt = fields.String()  # noqa: N815


class FileConversionOut(Schema):
    success = fields.Boolean()
    conversion = fields.Nested(FileConversionStatus)


def _require_audio(received: Incoming) -> None:
    """This dialect refuses an unreadable upload at once (400), where /v2 fails the job later.
    An upload that went to a bucket is probed as it is read back, with no copy on this host."""
    try:
        if isinstance(received, IncomingFile):
            probe.probe(received.path)
        else:
            with storage().read_input(received.key) as reader:
                probe.probe_stream(reader)
    except runner.SandboxFailed as exc:
        log.error("the File Conversion probe: %s", exc)
        raise Unavailable("The service cannot read uploads safely right now (its sandbox failed).") from None
    except (runner.ProcessFailed, probe.NotAudio):
        raise file_conversion.FieldInvalid(
            "audio_file", "not an audio file in a supported format (or it is damaged)") from None


def _caller() -> str:
    """The key from Authorization, raw or as a Bearer token."""
    value = request.headers.get("Authorization", "").strip()
    scheme, _, token = value.partition(" ")
    return api_key_id(token.strip() if scheme.lower() == "bearer" and token else value, header="Authorization")


class FileConversionError(Schema):
    """This dialect's error body, whatever the status (app.ERROR_BODIES)."""

    success = fields.Boolean()
    error = fields.String()


ERRORS = {"schema": FileConversionError, "description": "An error, in this dialect's shape"}  # every one: app.py


@blp.route("/file_convert")
class FileConvert(MethodView):
    @blp.doc(requestBody=FORM_BODY)
    @blp.response(200, FileConversionStarted)
    @blp.alt_response(400, **ERRORS)
    def post(self) -> Any:
        """Convert an audio URL or upload; the answer carries task_id and conversion_id at once"""
        key_id = _caller()  # before the body is read, as is the key's room for one more job
        service().limits.require_slot(key_id)
        file_conversion.refuse_unknown([*request.form, *request.files])
        upload = request.files.get("audio_file")
        has_file = upload is not None and bool(upload.filename or upload.content_length)
        body = file_conversion.job_body(request.form.to_dict(), has_file)
        jobs = service()
        if upload is not None and has_file:
            received = received_file(upload)
            if received.size == 0:
                raise file_conversion.FieldInvalid("audio_file", "the file is empty")
            _require_audio(received)
            job = jobs.create(key_id, body, dialect=file_conversion.DIALECT)
            jobs.accept_file(job, received, upload.filename, upload.content_type)
        else:
            job = jobs.create(key_id, body, dialect=file_conversion.DIALECT)
        return {"success": True, "task_id": job.id, "conversion_id": job.conversions[0].id,
                "status": file_conversion.STATUS[JobStatus(job.status)], "message": "Conversion started."}


@blp.route("/byId")
class ById(MethodView):
    @blp.arguments(ByIdQuery, location="query")
    @blp.response(200, FileConversionOut)
    @blp.alt_response(400, **ERRORS)
    def get(self, query: dict[str, Any]) -> Any:
        """The status of a File Conversion by task_id or conversion_id"""
        key_id = _caller()
        if query["conversionType"] != "FILE_CONVERT":
            raise file_conversion.FieldInvalid("conversionType", "must be FILE_CONVERT")
        if query.get("task_id"):
            job = session().get(Job, query["task_id"])
        elif query.get("conversion_id"):
            job = session().scalar(select(Job).join(Conversion).where(Conversion.id == query["conversion_id"]))
        else:
            raise file_conversion.FieldInvalid("task_id", "send task_id or conversion_id")
        if job is None or job.api_key_id != key_id or job.dialect != file_conversion.DIALECT:
            raise NotFound("Conversion not found.")
        return {"success": True, "conversion": file_conversion.conversion_json(job, config())}
