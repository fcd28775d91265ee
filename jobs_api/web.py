"""Per-request plumbing: the database session, the job service, who is calling, and
the request class that streams uploads straight onto the storage filesystem."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import IO, Any

from flask import Request, current_app, g, request
from flask_smorest import Blueprint as SmorestBlueprint
from marshmallow import ValidationError
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session
from webargs import core
from webargs.flaskparser import FlaskParser
from werkzeug.datastructures import FileStorage

from jobs_api.config import Config
from jobs_api.errors import NotAuthenticated, NotFound, RequestInvalid
from jobs_api.jobs import JobService
from jobs_api.models import ApiKey, Job
from jobs_api.security import hash_secret
from jobs_api.storage import Storage, remove_quietly
from workers.queue import enqueue

KEY_HEADERS = ("X-Api2convert-Api-Key", "X-Oc-Api-Key")
TOKEN_HEADERS = ("X-Api2convert-Token", "X-Oc-Token")


def config() -> Config:
    return current_app.extensions["jobs_api"]["config"]  # type: ignore[no-any-return]


def storage() -> Storage:
    return current_app.extensions["jobs_api"]["storage"]  # type: ignore[no-any-return]


def session() -> Session:
    if "db_session" not in g:
        g.db_session = current_app.extensions["jobs_api"]["sessions"]()
    return g.db_session  # type: ignore[no-any-return]


def close_session(_exc: BaseException | None) -> None:
    db_session = g.pop("db_session", None)
    if db_session is not None:
        db_session.close()


def service() -> JobService:
    settings = config()
    return JobService(session(), settings, storage(), lambda task, *args: enqueue(settings, task, *args))


def _header(names: tuple[str, ...]) -> str | None:
    for name in names:
        value = request.headers.get(name)
        if value:
            return value.strip()
    return None


# Built once, and its two columns read as a plain row: building the statement and making an
# ApiKey object of the row cost more than running the query (0.34 -> 0.23 ms a request).
KEY_BY_HASH = select(ApiKey.id, ApiKey.revoked_at).where(ApiKey.key_hash == bindparam("key_hash"))


def api_key_id(key: str | None = None) -> str:
    """The calling key's id (from the key headers unless given); 401 unless it is valid and unrevoked."""
    key = key if key is not None else _header(KEY_HEADERS)
    if not key:
        raise NotAuthenticated()
    row = session().execute(KEY_BY_HASH, {"key_hash": hash_secret(key)}).first()
    if row is None or row.revoked_at is not None:
        raise NotAuthenticated()
    return str(row.id)


def load_job(job_id: str, *, token_ok: bool = True) -> Job:
    """The job if the caller may see it: by its owner's key, or by its own token."""
    key, token = _header(KEY_HEADERS), _header(TOKEN_HEADERS)
    if key or not token or not token_ok:
        job = service().for_key(hash_secret(key), job_id) if key else None
        if job is None:
            api_key_id(key)  # 401 unless the key is valid and unrevoked
            raise NotFound("Job not found.")
        return job
    return service().for_token(token, job_id)


class JsonAnywayParser(FlaskParser):
    """Bodies are JSON whatever their Content-Type; errors are 400 naming each field."""

    DEFAULT_VALIDATION_STATUS = 400

    def _raw_load_json(self, req: Request) -> Any:
        data = req.get_data(cache=True)
        if not data.strip():
            return core.missing
        try:
            return json.loads(data)
        except json.JSONDecodeError as exc:
            raise RequestInvalid(
                "Malformed JSON in the request body.", {"body": [f"not valid JSON: {exc.msg}"]}
            ) from exc
        except ValueError as exc:  # bytes that are not UTF-8 at all
            raise RequestInvalid("Malformed JSON in the request body.", {"body": ["not valid JSON"]}) from exc

    def handle_error(self, error: ValidationError, req: Request, schema: Any, *,  # type: ignore[override]
                     error_status_code: int | None, error_headers: Any) -> None:
        messages = error.messages
        if isinstance(messages, dict) and len(messages) == 1 and next(iter(messages)) in ("json", "query"):
            messages = next(iter(messages.values()))
        raise RequestInvalid("Invalid request.", flatten(messages))


def flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested messages as {"conversion.0.target": [...]}."""
    if isinstance(messages, dict):
        flat: dict[str, list[str]] = {}
        for key, value in messages.items():
            name = "body" if key == "_schema" else str(key)
            flat.update(flatten(value, f"{prefix}.{name}" if prefix else name))
        return flat
    if isinstance(messages, list) and all(isinstance(item, str) for item in messages):
        return {prefix or "body": messages}
    return {prefix or "body": [str(messages)]}


class Blueprint(SmorestBlueprint):
    ARGUMENTS_PARSER = JsonAnywayParser()

    def arguments(self, schema: Any, **kwargs: Any) -> Any:
        """flask-smorest's, with a schema class made an instance once: given the class, webargs
        builds it and its nested schemas on every request (0.5 ms of a POST /v2/jobs here)."""
        return super().arguments(schema() if isinstance(schema, type) else schema, **kwargs)


class StreamingRequest(Request):
    """Multipart file parts are written to the storage's incoming folder as they arrive,
    so an upload is never held whole in memory and adopting it is a rename. Each is
    hashed on the way (see `IncomingFile`), so nobody reads it back to checksum it."""

    def __init__(self, environ: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(environ, *args, **kwargs)
        length = self.content_length
        if length and self.mimetype == "multipart/form-data":
            # The multipart parser asks for 64 KiB at a time. Served from a 1 MiB buffer that
            # is filled straight from gunicorn's socket where it can be: gunicorn's own reader
            # copies each megabyte about four times, and a 100 MB upload took 0.2-0.4 s where
            # a plain socket-to-file copy takes 0.04-0.1 s here.
            source = environ["wsgi.input"]
            body = _SocketBody.over(source, environ.get("gunicorn.socket"), length) or _BodyReader(source, length)
            environ["wsgi.input"] = io.BufferedReader(body, buffer_size=BODY_READ_SIZE)

    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None, content_length: int | None = None) -> IO[bytes]:
        handle = IncomingFile(storage().incoming_file())
        self.incoming_paths.append(handle.path)
        on_file = self.environ.pop(ON_FILE, None)  # for the first file part only
        if on_file is not None:
            on_file(handle.path)
        return handle  # type: ignore[return-value]  # the parser only writes, seeks and closes

    @property
    def incoming_paths(self) -> list[Path]:
        paths = self.environ.setdefault("jobs_api.incoming", [])
        return paths  # type: ignore[no-any-return]

    def remove_incoming(self) -> None:
        for path in self.incoming_paths:
            remove_quietly(path)  # adopted files were renamed away already


BODY_READ_SIZE = 1024 * 1024
ON_FILE = "jobs_api.on_file"  # environ: called with the path of the first file part as it begins


class _BodyReader(io.RawIOBase):
    """The request body as a raw stream that never reads past its Content-Length."""

    def __init__(self, source: IO[bytes], length: int) -> None:
        self.source, self.left = source, length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.source.read(min(len(buffer), self.left))
        buffer[:len(data)] = data
        self.left -= len(data)
        return len(data)


class _SocketBody(io.RawIOBase):
    """A request body under gunicorn, read from the client's socket into the caller's buffer.

    Whatever gunicorn has read ahead comes first, and what is not used stays with it. Its
    own reader is kept told how much of the body is left, so that after the response it
    drains only what the application did not read, and a failed read marks the
    connection unusable: the next request on it stays where gunicorn expects it."""

    def __init__(self, body: Any, sock: Any, length: int) -> None:
        self.body, self.sock, self.left = body, sock, length

    @classmethod
    def over(cls, body: Any, sock: Any, length: int) -> _SocketBody | None:
        """The fast reader if `body` is gunicorn's untouched body of `length` bytes on `sock`."""
        reader = getattr(body, "reader", None)
        unreader = getattr(reader, "unreader", None)
        buffered = getattr(body, "buf", None)
        if (sock is None or getattr(reader, "length", None) != length or not hasattr(unreader, "take_buffered")
                or not hasattr(unreader, "unread") or not isinstance(buffered, io.BytesIO) or buffered.tell()):
            return None
        return cls(body, sock, length)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self.left)
        if not want:
            return 0
        unreader = self.body.reader.unreader
        try:
            ahead = unreader.take_buffered()
            if ahead:
                count = min(want, len(ahead))
                buffer[:count] = ahead[:count]
                unreader.unread(ahead[count:])
            else:
                count = self.sock.recv_into(buffer, want)
        except BaseException:
            self.body.failed = True
            raise
        if not count:
            self.body.failed = True  # the client went away mid-body
        self.left -= count
        self.body.reader.length = self.left
        return count


class IncomingFile:
    """An upload being received: written front to back, hashed as it is written."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle, self.path, self.digest = handle, Path(handle.name), hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.handle.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.handle.seek(offset, whence)

    def close(self) -> None:
        self.handle.close()

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()


def received_file(upload: FileStorage) -> IncomingFile:
    """The file StreamingRequest wrote a multipart file part to, closed: its path and sha256."""
    received: IncomingFile = upload.stream  # type: ignore[assignment]
    received.close()
    return received
