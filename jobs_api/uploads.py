"""Uploads: multipart file parts streamed straight onto the storage's shelf as they arrive
(jobs_api/storage.py's Incoming), hashed on the way, so an upload is never held whole in memory."""
from __future__ import annotations

import io
from typing import IO, Any, cast

from flask import Request, request
from gunicorn.http.errors import ParseException
from werkzeug.datastructures import FileStorage

from jobs_api.errors import RequestInvalid
from jobs_api.gunicorn_body import SocketBody
from jobs_api.storage import Incoming
from jobs_api.web import storage


class StreamingRequest(Request):
    """Multipart file parts are written onto the storage's shelf as they arrive, so an upload
    is never held whole in memory. Each is hashed on the way (`Incoming`), so nobody reads it
    back to checksum it."""

    def __init__(self, environ: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(environ, *args, **kwargs)
        length = self.content_length
        if self.chunked:
            environ["wsgi.input"] = io.BufferedReader(ChunkedBody(environ["wsgi.input"]))
        elif length and self.mimetype == "multipart/form-data":
            # The multipart parser asks for 64 KiB at a time. Served from a 1 MiB buffer that
            # is filled straight from gunicorn's socket where it can be (gunicorn_body.py).
            source = environ["wsgi.input"]
            body = SocketBody.over(source, environ.get("gunicorn.socket"), length) or _BodyReader(source, length)
            environ["wsgi.input"] = io.BufferedReader(body, buffer_size=BODY_READ_SIZE)

    @property
    def chunked(self) -> bool:
        """Whether the body comes in chunks (Transfer-Encoding: chunked), its length unknown."""
        return self.content_length is None and "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None, content_length: int | None = None) -> IO[bytes]:
        handle = self.new_incoming_file()
        on_file = self.environ.pop(ON_FILE, None)  # for the first file part only
        if on_file is not None:
            on_file(handle)
        return handle  # type: ignore[return-value]  # the parser only writes, seeks and closes

    def new_incoming_file(self) -> Incoming:
        """A file for part of this request, removed after it unless adopted."""
        handle = storage().incoming_file()
        self.incoming.append(handle)
        return handle

    @property
    def incoming(self) -> list[Incoming]:
        received = self.environ.setdefault("jobs_api.incoming", [])
        return received  # type: ignore[no-any-return]

    def remove_incoming(self) -> None:
        for handle in self.incoming:
            handle.discard()  # adopted ones stay


BODY_READ_SIZE = 1024 * 1024
ON_FILE = "jobs_api.on_file"  # environ: called with the first file part's Incoming as it begins


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


class ChunkedBody(io.RawIOBase):
    """A chunked request body as the server reads it, but one whose framing is broken (a size that
    is not hex, a chunk without its line end, an end before the last chunk) is the client's error,
    a 400, not an unexpected error of the service: gunicorn's reader raises its ParseException, or
    an OSError (NoMoreData) for a client gone midway."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self.source.read(len(buffer))
        except (ParseException, OSError) as exc:
            raise RequestInvalid("The request body could not be read.",
                                 {"body": [f"broken chunked encoding ({type(exc).__name__})"]}) from None
        buffer[:len(data)] = data
        return len(data)


def incoming_file() -> Incoming:
    """A new file for the current request's body, removed after it unless adopted."""
    return cast(StreamingRequest, request).new_incoming_file()


def received_file(upload: FileStorage) -> Incoming:
    """The file StreamingRequest wrote a multipart file part to, whole: its size and sha256."""
    received: Incoming = upload.stream  # type: ignore[assignment]
    received.close()
    return received
