"""The job server: uploads into a job, downloads of outputs (`job.server` = /v2/dl)."""
from __future__ import annotations

import base64
import io
import logging
from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from typing import IO, Any
from urllib.parse import quote

from flask import Response, request, send_file
from flask.views import MethodView
from marshmallow import Schema, fields
from redis.exceptions import RedisError
from sqlalchemy import update
from werkzeug.wsgi import FileWrapper

from jobs_api.base64_upload import Base64Upload
from jobs_api.errors import Gone, NotAllowed, NotFound, RequestInvalid
from jobs_api.jobs import EDITABLE
from jobs_api.models import Job, OutputFile, utcnow
from jobs_api.queue import CONVERT_ARRIVING, enqueue, redis_for
from jobs_api.representation import InputOut, aware
from jobs_api.security import password_matches
from jobs_api.storage import Incoming, IncomingFile
from jobs_api.throttle import PasswordFailures
from jobs_api.uploads import ON_FILE, incoming_file, received_file
from jobs_api.web import Blueprint, config, load_job, service, session, storage

log = logging.getLogger(__name__)

blp = Blueprint("files", __name__, url_prefix="/v2/dl", description="Uploads and downloads")

BASE64_CHUNK = 3 * 256 * 1024  # a multiple of 3, so chunks encode without padding
OBJECT_READ_SIZE = 256 * 1024  # what a download from a bucket reads at a time
PASSWORD_HEADERS = ("X-Api2convert-Download-Password", "X-Oc-Download-Password")
PASSWORD_COOKIE = "x-oc-download-password"
MAX_CANDIDATES = 5


class Base64File(Schema):
    content = fields.String(required=True, metadata={"description": "The file, base64-encoded"})
    filename = fields.String(load_default="file")


BASE64_BODY = {  # read as it arrives by jobs_api/base64_upload.py, not by a schema
    "required": True,
    "content": {"application/json": {"schema": {"oneOf": [Base64File, {"type": "array", "items": Base64File}]}}},
}
UPLOAD_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary"}},
    }}},
}


@blp.route("/upload-file/<job_id>")
class UploadFile(MethodView):
    @blp.doc(requestBody=UPLOAD_BODY)
    @blp.response(201, InputOut)
    def post(self, job_id: str) -> Any:
        """Upload a file into a job (multipart field `file`), with the job's token or the key"""
        job = load_job(job_id, upload=True)  # before the body is read: no bytes for a job you cannot see
        service().require_uploadable(job)  # nor for one that takes no more files
        _require_slot_if_starting(job)
        if _converts_while_arriving(job):
            request.environ[ON_FILE] = partial(_convert_while_arriving, job.id)
        upload = request.files.get("file")
        if upload is None or not upload.filename and not upload.stream:
            raise RequestInvalid("No file sent.", {"file": ["a multipart field named file is required"]})
        received = received_file(upload)
        if received.size == 0:
            raise RequestInvalid("The uploaded file is empty.", {"file": ["the file has no content"]})
        return service().accept_file(job, received, upload.filename, upload.content_type)


@blp.route("/upload-base64/<job_id>")
class UploadBase64(MethodView):
    @blp.doc(requestBody=BASE64_BODY)
    @blp.response(201, InputOut(many=True))
    @blp.alt_response(400, response="BAD_REQUEST")
    def post(self, job_id: str) -> Any:
        """Upload one or more base64-encoded files into a job (object or array of {content, filename})"""
        job = load_job(job_id, upload=True)  # all three before the body is read, as for upload-file
        service().require_uploadable(job)
        _require_slot_if_starting(job)
        files = Base64Upload(request.stream, incoming_file).files()
        return [service().accept_file(job, item.incoming, item.filename, None, kind="base64") for item in files]


def _require_slot_if_starting(job: Job) -> None:
    """An upload that would start the job needs a free slot of its key (429 before any byte is read)."""
    if job.process and job.conversions and job.status in EDITABLE:
        service().limits.require_slot(job.api_key_id)


def _converts_while_arriving(job: Job) -> bool:
    """Whether the upload's conversion starts as it arrives: a worker reads the file as the API
    writes it, so both must see the same disk (not with a bucket: the upload goes straight up)."""
    return (config().convert_while_uploading and storage().shared_disk and job.status in EDITABLE
            and not job.inputs and len(job.conversions) == 1)


def _convert_while_arriving(job_id: str, incoming: Incoming) -> None:
    """Queue the conversion of this upload as it arrives (workers/upload_conversion.py); only a speed-up,
    so a queue that cannot take it does not fail the upload."""
    assert isinstance(incoming, IncomingFile)
    try:
        enqueue(config(), CONVERT_ARRIVING, job_id, incoming.path.name)
    except RedisError:
        log.warning("could not queue the early conversion of job %s", job_id, exc_info=True)


@blp.route("/output/<output_id>", methods=["GET", "HEAD"])
@blp.doc(responses={200: {"description": "The file"}, 401: {"description": "A download password is needed"},
                    404: {"description": "No such output"}, 410: {"description": "The output expired"}})
def download(output_id: str) -> Response:
    """Download an output (byte ranges supported; ?encoding=base64 for base64). A protected output
    needs one of its passwords in X-Oc-Download-Password, X-Api2convert-Download-Password or the
    cookie x-oc-download-password (comma-separated candidates)."""
    output = session().get(OutputFile, output_id)
    if output is None:
        raise NotFound("Output not found.")
    created = aware(output.created_at)
    if output.status == "expired" or created + timedelta(seconds=config().output_ttl_seconds) <= utcnow():
        raise Gone("This output has expired and its file was deleted.")
    _require_password(output)
    opened = storage().open_output(output.storage_key)
    if opened is None:
        raise NotFound("Output not found.")
    reader, size = opened
    if request.method == "GET" and not request.headers.get("Range"):
        session().execute(
            update(OutputFile).where(OutputFile.id == output.id)
            .values(downloads_counter=OutputFile.downloads_counter + 1)
        )
        session().commit()
    if request.args.get("encoding") == "base64":
        response = Response(_base64_chunks(reader), mimetype="text/plain")
        response.content_length = 4 * ((size + 2) // 3)
    elif isinstance(reader, io.BufferedReader):  # a file on disk: sent by name, so the server may use sendfile()
        reader.close()
        response = send_file(reader.name, mimetype=output.content_type, conditional=True, etag=output.checksum,
                             max_age=0)
    else:  # ranges are sought to, not read through
        response = Response(FileWrapper(reader, OBJECT_READ_SIZE), mimetype=output.content_type,
                            direct_passthrough=True)
        response.content_length, response.cache_control.max_age = size, 0
        response.set_etag(output.checksum)
        response.make_conditional(request.environ, accept_ranges=True, complete_length=size)  # in place
    response.headers["Content-Disposition"] = content_disposition(output.filename)
    return response


def _require_password(output: OutputFile) -> None:
    hashes = [*output.job.download_passwords, *output.password_hashes]
    if not hashes:
        return
    sent = [request.headers.get(name, "") for name in PASSWORD_HEADERS] + [request.cookies.get(PASSWORD_COOKIE, "")]
    candidates = [part.strip() for value in sent for part in value.split(",") if part.strip()]
    if not candidates:
        raise NotAllowed("This output is protected: send its download password in X-Oc-Download-Password.")
    if len(candidates) > MAX_CANDIDATES:  # each costs a hash against each of the output's passwords
        raise RequestInvalid("Too many download passwords.",
                             {"X-Oc-Download-Password": [f"at most {MAX_CANDIDATES} comma-separated candidates"]})
    failures = PasswordFailures(redis_for(config().redis_url), config().max_password_failures)
    address = request.remote_addr or "unknown"
    failures.take(address)
    if not password_matches(candidates, hashes):
        raise NotAllowed("Wrong download password.")
    failures.give_back(address)


def _base64_chunks(reader: IO[bytes]) -> Iterator[bytes]:
    with reader:
        while chunk := reader.read(BASE64_CHUNK):
            yield base64.b64encode(chunk)


def content_disposition(filename: str) -> str:
    """A quoted ASCII fallback for old clients plus the exact name as RFC 5987 filename*."""
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
