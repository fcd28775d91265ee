"""Where files live. Inputs and outputs are kept on a shelf: a folder of the storage disk (the
embedded default) or an S3-compatible bucket (`STORAGE_URL=s3://...`, jobs_api/bucket.py), which
API and workers on hosts that share no disk all reach. Each process's scratch space stays on its
own disk under STORAGE_DIR: uploads on their way to a folder shelf, one work folder per running
job. Every name is server-made (a UUID); clients only ever name display text."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from jobs_api.bucket import Bucket

INPUTS, OUTPUTS = "inputs", "outputs"


class StorageUnavailable(Exception):
    """The shelf (the bucket) cannot be reached or refuses us; the message says which, for logs."""


class Incoming:
    """A file being received (an upload, a fetched URL, decoded base64): written front to back,
    hashed and counted on the way, then adopted as an input (`Storage.adopt_input`) or discarded."""

    def __init__(self) -> None:
        self.key = str(uuid.uuid4())  # the input's key once adopted
        self.size, self.adopted, self.digest = 0, False, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        self._write(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        """Werkzeug's multipart parser seeks to the start once a part is written; nobody reads it back."""
        return 0

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """All of it has arrived."""
        raise NotImplementedError

    def discard(self) -> None:
        """Remove what was received, unless it was adopted."""
        raise NotImplementedError


class IncomingFile(Incoming):
    """Received into the incoming folder of the storage disk, so adopting it is a rename."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        folder.mkdir(parents=True, exist_ok=True)
        self.handle = tempfile.NamedTemporaryFile(dir=folder, delete=False)  # noqa: SIM115  # closed by close()
        self.path = Path(self.handle.name)

    def _write(self, data: bytes) -> None:
        self.handle.write(data)

    def close(self) -> None:
        self.handle.close()

    def discard(self) -> None:
        self.handle.close()
        if not self.adopted:
            remove_quietly(self.path)


class Folder:
    """The shelf on the storage disk: inputs/ and outputs/ under STORAGE_DIR."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / checked_key(key)

    def incoming(self, scratch: Path) -> Incoming:
        return IncomingFile(scratch)

    def adopt(self, kind: str, incoming: Incoming) -> str:
        assert isinstance(incoming, IncomingFile)
        incoming.close()
        os.replace(incoming.path, self.path(kind, incoming.key))
        incoming.adopted = True
        return incoming.key

    def put(self, kind: str, path: Path) -> str:
        key = str(uuid.uuid4())
        os.replace(path, self.path(kind, key))
        return key

    def exists(self, kind: str, key: str) -> bool:
        return self.path(kind, key).exists()

    def readable(self, kind: str, key: str, folder: Path) -> Path:
        return self.path(kind, key)  # read where it lies: no copy

    def open(self, kind: str, key: str) -> tuple[IO[bytes], int] | None:
        try:
            handle = self.path(kind, key).open("rb")
        except FileNotFoundError:
            return None
        return handle, os.fstat(handle.fileno()).st_size

    def remove(self, kind: str, key: str) -> None:
        remove_quietly(self.path(kind, key))

    def check(self) -> str:
        return str(self.root)

    def abort_uploads_begun_before(self, moment: datetime) -> int:
        return 0  # an upload to a folder is a file in incoming/, which the sweeper removes by its age


def storage_for(root: Path, url: str) -> Storage:
    """The storage of STORAGE_DIR and STORAGE_URL: an s3:// URL puts the shelf in that bucket."""
    if not url:
        return Storage(root)
    from jobs_api.bucket import Bucket  # boto3 only where a bucket is used

    return Storage(root, Bucket(url))


class Storage:
    def __init__(self, root: Path, bucket: Bucket | None = None) -> None:
        # Absolute, so nothing downstream (a sandbox rule) resolves it against another folder.
        root = root.resolve()
        self.root = root
        self.incoming = root / "incoming"  # uploads being received onto the folder shelf
        self.work = root / "work"  # one directory per running conversion
        self.shelf: Folder | Bucket = bucket if bucket is not None else Folder(root)

    @property
    def shared_disk(self) -> bool:
        """Whether inputs and outputs are files every process of the service sees."""
        return isinstance(self.shelf, Folder)

    def ensure(self) -> None:
        folders = [self.incoming, self.work]
        if isinstance(self.shelf, Folder):
            folders += [self.root / INPUTS, self.root / OUTPUTS]
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)

    def incoming_file(self) -> Incoming:
        """A new file to receive an input into, straight onto the shelf."""
        return self.shelf.incoming(self.incoming)

    def adopt_input(self, incoming: Incoming) -> str:
        """The key of a received file, now an input."""
        return self.shelf.adopt(INPUTS, incoming)

    def has_input(self, key: str) -> bool:
        return self.shelf.exists(INPUTS, key)

    def readable_input(self, key: str, folder: Path) -> Path:
        """A file ffmpeg can read the input from: the stored file on a folder shelf, a copy in
        `folder` (a job's work folder) from a bucket."""
        return self.shelf.readable(INPUTS, key, folder)

    @contextmanager
    def read_input(self, key: str) -> Iterator[IO[bytes]]:
        """The input, read front to back where it is stored (no copy); StorageUnavailable if gone."""
        opened = self.shelf.open(INPUTS, key)
        if opened is None:
            raise StorageUnavailable(f"input {key} is not in storage")
        with opened[0] as reader:
            yield reader

    def remove_input(self, key: str) -> None:
        self.shelf.remove(INPUTS, key)

    def adopt_output(self, path: Path) -> str:
        """The key of a finished result, moved (or uploaded) from the work folder onto the shelf."""
        return self.shelf.put(OUTPUTS, path)

    def open_output(self, key: str) -> tuple[IO[bytes], int] | None:
        """A seekable reader of the output and its size; None if it is gone."""
        return self.shelf.open(OUTPUTS, key)

    def remove_output(self, key: str) -> None:
        self.shelf.remove(OUTPUTS, key)

    @contextmanager
    def work_dir(self, job_id: str) -> Iterator[Path]:
        """A private directory for one job's run, removed whatever happens."""
        self.work.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"{checked_key(job_id)}-", dir=self.work))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def work_dir_path(self, job_id: str, name: str) -> Path:
        """A named work folder of the job, for work that outlives one task (workers/upload_conversion.py)."""
        return self.work / f"{checked_key(job_id)}-{name}"

    def remove_work_dirs(self, job_id: str) -> None:
        for path in self.work.glob(f"{checked_key(job_id)}-*"):
            shutil.rmtree(path, ignore_errors=True)


def remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def checked_key(key: str) -> str:
    # Keys are UUIDs made here; refuse anything else rather than join it into a path or a name.
    return str(uuid.UUID(key))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
