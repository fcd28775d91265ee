"""A job's inputs: made from requests (remote, base64, an earlier input) or from received
files, their client-given names made safe, their stored files shared and released."""
from __future__ import annotations

import base64
import binascii
import mimetypes
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jobs_api.errors import RequestInvalid
from jobs_api.models import InputFile, Job
from jobs_api.outbound import is_http_url
from jobs_api.storage import Incoming, Storage

INPUT_TYPES = ("remote", "upload", "base64", "input_id")


class InputFiles:
    def __init__(self, session: Session, storage: Storage) -> None:
        self.session, self.storage = session, storage

    def add(self, job: Job, spec: Any, path: str) -> InputFile:
        """A new input of `job` from its request `spec` (remote, base64 or input_id); `path`
        prefixes the field names of a 400."""
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
            if not is_http_url(source):
                raise RequestInvalid(
                    "Invalid input URL.", {f"{path}source": ["must be an http or https URL"]}
                )
            filename = spec.get("filename")
            item = InputFile(type=kind, source=source, status="downloading", position=len(job.inputs),
                             filename=display_name(filename) or None if isinstance(filename, str) else None)
            job.inputs.append(item)
            return item
        if kind == "base64":
            return self._add_base64(job, source, spec.get("filename"), path)
        return self._reuse_input(job, source, path)

    def _add_base64(self, job: Job, content: str, filename: Any, path: str) -> InputFile:
        data = decode_base64(content, f"{path}source")
        received = self.storage.incoming_file()
        try:
            received.write(data)
            received.close()
            name = filename if isinstance(filename, str) else None
            return self.adopt(job, received, name, None, "base64")
        finally:
            received.discard()  # unless adopted

    def adopt(self, job: Job, received: Incoming, filename: str | None, content_type: str | None,
              kind: str) -> InputFile:
        """Keep a received file as a new ready input of `job`."""
        name = display_name(filename or "") or "file"
        item = InputFile(
            type=kind, source=name, status="ready", filename=name, size=received.size,
            checksum=received.sha256, content_type=_content_type(content_type, name),
            storage_key=self.storage.adopt_input(received), position=len(job.inputs),
        )
        job.inputs.append(item)
        return item

    def _reuse_input(self, job: Job, input_id: str, path: str) -> InputFile:
        earlier = self.session.get(InputFile, input_id)
        if earlier is None or earlier.job.api_key_id != job.api_key_id:
            raise RequestInvalid("Unknown input.", {f"{path}source": ["no input with this id"]})
        if earlier.storage_key is None or not self.storage.has_input(earlier.storage_key):
            raise RequestInvalid("Input not available.", {f"{path}source": ["that input has no file (any more)"]})
        item = InputFile(
            type="input_id", source=input_id, status="ready", filename=earlier.filename,
            size=earlier.size, checksum=earlier.checksum, content_type=earlier.content_type,
            storage_key=earlier.storage_key, position=len(job.inputs),
        )
        job.inputs.append(item)
        return item

    def release(self, item: InputFile) -> None:
        """Detach the input's file, and delete it unless another input shares it."""
        key, item.storage_key = item.storage_key, None
        if key is None:
            return
        self.session.flush()
        still_used = self.session.scalar(
            select(func.count()).select_from(InputFile).where(InputFile.storage_key == key)
        )
        if not still_used:
            self.storage.remove_input(key)


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

