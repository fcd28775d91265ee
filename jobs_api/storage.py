"""Files on disk. Every name is server-made (a UUID); clients only ever name display text."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


class Storage:
    def __init__(self, root: Path) -> None:
        # Absolute, so nothing downstream (Flask's send_file) resolves it against another folder.
        root = root.resolve()
        self.root = root
        self.inputs = root / "inputs"
        self.outputs = root / "outputs"
        self.incoming = root / "incoming"  # uploads being received
        self.work = root / "work"  # one directory per running conversion

    def ensure(self) -> None:
        for folder in (self.inputs, self.outputs, self.incoming, self.work):
            folder.mkdir(parents=True, exist_ok=True)

    def input_path(self, key: str) -> Path:
        return self.inputs / _checked(key)

    def output_path(self, key: str) -> Path:
        return self.outputs / _checked(key)

    def incoming_file(self) -> IO[bytes]:
        """An open file on the storage filesystem, so adopting it is a rename, not a copy."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        return tempfile.NamedTemporaryFile(dir=self.incoming, delete=False)

    def adopt_input(self, path: Path) -> str:
        key = str(uuid.uuid4())
        os.replace(path, self.input_path(key))
        return key

    def adopt_output(self, path: Path) -> str:
        key = str(uuid.uuid4())
        os.replace(path, self.output_path(key))
        return key

    @contextmanager
    def work_dir(self, job_id: str) -> Iterator[Path]:
        """A private directory for one job's run, removed whatever happens."""
        self.work.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"{_checked(job_id)}-", dir=self.work))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def work_dir_path(self, job_id: str, name: str) -> Path:
        """A named work folder of the job, for work that outlives one task (workers/upload_conversion.py)."""
        return self.work / f"{_checked(job_id)}-{name}"

    def remove_work_dirs(self, job_id: str) -> None:
        for path in self.work.glob(f"{_checked(job_id)}-*"):
            shutil.rmtree(path, ignore_errors=True)


def remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _checked(key: str) -> str:
    # Keys are UUIDs made here; refuse anything else rather than join it into a path.
    return str(uuid.UUID(key))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
