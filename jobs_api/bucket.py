"""The shelf in an S3-compatible bucket (`STORAGE_URL=s3://BUCKET/PREFIX`): inputs and outputs
as objects under PREFIX/inputs/ and PREFIX/outputs/, so that API and workers on hosts that share
no disk all find them (jobs_api/storage.py has the folder shelf it stands in for).

boto3 reads the standard settings: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_REGION, or an instance role. Its checksums are asked for only when the operation requires
them: since boto3 1.36 they are sent by default, which S3-compatible servers may refuse.

Nothing passes whole through memory or the local disk: an upload goes up in parts of PART_BYTES
as it arrives (`IncomingObject`); a download is read in ranges (`ObjectReader`)."""
from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import urlsplit

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from jobs_api.storage import Incoming, StorageUnavailable, checked_key, remove_quietly

PART_BYTES = 8 * 1024 * 1024  # S3's parts are 5 MiB at least, but the last
MISSING = {"404", "NoSuchKey", "NotFound"}


class Bucket:
    def __init__(self, url: str) -> None:
        parsed = urlsplit(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"STORAGE_URL must look like s3://BUCKET/PREFIX, not {url!r}")
        self.name, self.prefix = parsed.netloc, parsed.path.strip("/")
        self.url = f"s3://{self.name}/{self.prefix}".rstrip("/")
        # A session of its own: boto3's default one keeps the credentials it read first.
        self.client: Any = boto3.session.Session().client("s3", config=BotoConfig(
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
            connect_timeout=5, read_timeout=60, retries={"mode": "standard", "max_attempts": 3}))

    def object_key(self, kind: str, key: str) -> str:
        return "/".join(part for part in (self.prefix, kind, checked_key(key)) if part)

    def incoming(self, scratch: Path) -> Incoming:
        return IncomingObject(self)

    def adopt(self, kind: str, incoming: Incoming) -> str:
        assert isinstance(incoming, IncomingObject)
        incoming.close()
        incoming.adopted = True
        return incoming.key

    def put(self, kind: str, path: Path) -> str:
        key = str(uuid.uuid4())
        with reaching(self):
            self.client.upload_file(str(path), self.name, self.object_key(kind, key))
        remove_quietly(path)
        return key

    def exists(self, kind: str, key: str) -> bool:
        return self._size(self.object_key(kind, key)) is not None

    def readable(self, kind: str, key: str, folder: Path) -> Path:
        copy = folder / f"{kind}-{checked_key(key)}"
        if not copy.exists():
            with reaching(self):
                self.client.download_file(self.name, self.object_key(kind, key), str(copy))
        return copy

    def open(self, kind: str, key: str) -> tuple[IO[bytes], int] | None:
        name = self.object_key(kind, key)
        size = self._size(name)
        return None if size is None else (cast(IO[bytes], ObjectReader(self, name, size)), size)

    def remove(self, kind: str, key: str) -> None:
        with reaching(self):
            self.client.delete_object(Bucket=self.name, Key=self.object_key(kind, key))

    def check(self) -> str:
        with reaching(self):
            self.client.head_bucket(Bucket=self.name)
        return self.url

    def abort_uploads_begun_before(self, moment: datetime) -> int:
        """Abort the multipart uploads that a process began before `moment` and never finished
        (it was killed mid-upload); the number aborted."""
        aborted = 0
        with reaching(self):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.name, Prefix=self.prefix)
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < moment:
                        self.client.abort_multipart_upload(Bucket=self.name, Key=upload["Key"],
                                                           UploadId=upload["UploadId"])
                        aborted += 1
        return aborted

    def _size(self, name: str) -> int | None:
        try:
            with reaching(self):
                return int(self.client.head_object(Bucket=self.name, Key=name)["ContentLength"])
        except _Missing:
            return None


class _Missing(Exception):
    pass


@contextmanager
def reaching(bucket: Bucket) -> Iterator[None]:
    """Errors of the bucket as StorageUnavailable (or _Missing for an object that is not there)."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in MISSING:
            raise _Missing() from exc
        raise StorageUnavailable(f"the bucket {bucket.url} refused: {code} {error.get('Message', '')}".strip()) from exc
    except BotoCoreError as exc:
        raise StorageUnavailable(f"the bucket {bucket.url} cannot be reached: {exc}") from exc


class IncomingObject(Incoming):
    """Received straight into the bucket, in parts as it arrives: at most one part in memory."""

    def __init__(self, bucket: Bucket) -> None:
        super().__init__()
        self.bucket, self.name = bucket, bucket.object_key("inputs", self.key)
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.stored = False

    def _write(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= PART_BYTES:
            with memoryview(self.buffer) as view:
                part = bytes(view[:PART_BYTES])  # one copy: slicing the bytearray would make a second
            self._send_part(part)
            del part
            del self.buffer[:PART_BYTES]

    def _send_part(self, data: bytes) -> None:
        client, bucket = self.bucket.client, self.bucket.name
        with reaching(self.bucket):
            if self.upload_id is None:
                self.upload_id = client.create_multipart_upload(Bucket=bucket, Key=self.name)["UploadId"]
            number = len(self.parts) + 1
            sent = client.upload_part(Bucket=bucket, Key=self.name, UploadId=self.upload_id, PartNumber=number,
                                      Body=data)
        self.parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    def close(self) -> None:
        if self.stored:
            return
        client, bucket = self.bucket.client, self.bucket.name
        with reaching(self.bucket):
            if self.upload_id is None:
                client.put_object(Bucket=bucket, Key=self.name, Body=bytes(self.buffer))
            else:
                if self.buffer:
                    self._send_part(bytes(self.buffer))  # the last part, under PART_BYTES
                client.complete_multipart_upload(Bucket=bucket, Key=self.name, UploadId=self.upload_id,
                                                 MultipartUpload={"Parts": self.parts})
        self.buffer = bytearray()
        self.stored = True

    def discard(self) -> None:
        if self.adopted:
            return
        try:
            with reaching(self.bucket):
                if self.stored:
                    self.bucket.client.delete_object(Bucket=self.bucket.name, Key=self.name)
                elif self.upload_id is not None:
                    self.bucket.client.abort_multipart_upload(Bucket=self.bucket.name, Key=self.name,
                                                              UploadId=self.upload_id)
        except (StorageUnavailable, _Missing):
            pass  # the sweeper aborts what is left (Bucket.abort_uploads_begun_before)


class ObjectReader(io.RawIOBase):
    """An object read front to back from where it is sought to, one ranged GET per seek."""

    def __init__(self, bucket: Bucket, name: str, size: int) -> None:
        super().__init__()
        self.bucket, self.name, self.size = bucket, name, size
        self.position = 0
        self.body: Any = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        if base + offset != self.position:
            self._drop_body()
            self.position = base + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer: Any) -> int:
        if self.position >= self.size:
            return 0
        if self.body is None:
            with reaching(self.bucket):
                self.body = self.bucket.client.get_object(Bucket=self.bucket.name, Key=self.name,
                                                          Range=f"bytes={self.position}-")["Body"]
        with reaching(self.bucket):
            data = self.body.read(len(buffer))
        buffer[:len(data)] = data
        self.position += len(data)
        return len(data)

    def close(self) -> None:
        self._drop_body()
        super().close()

    def _drop_body(self) -> None:
        if self.body is not None:
            self.body.close()
            self.body = None
