"""Files on disk. Every name is server-made (a UUID); clients only ever name display text."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
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
        self.work = root / "work"  # files and folders of running jobs, each named "<job id>-..."

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
    def work_files(self, job_id: str) -> Iterator[Callable[[str], Path]]:
        """Names for one run's files, `work/<job id>-run-<name>`, all removed afterwards
        whatever happens. Flat, not in a folder of the run's own: on ext4, removing a folder
        just emptied waited for the journal, about 1.5 ms a job under load (bench/throughput.py)."""
        self.work.mkdir(parents=True, exist_ok=True)
        prefix = f"{_checked(job_id)}-run-"
        try:
            yield lambda name: self.work / f"{prefix}{name}"
        finally:
            for path in self.work.glob(f"{prefix}*"):
                remove_quietly(path)

    def work_dir_path(self, job_id: str, name: str) -> Path:
        """A named work folder of the job, for work that outlives one task (workers/early.py)."""
        return self.work / f"{_checked(job_id)}-{name}"

    def remove_work(self, job_id: str) -> None:
        """Every work file and folder of the job."""
        for path in self.work.glob(f"{_checked(job_id)}-*"):
            remove_work_entry(path)


def remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def remove_work_entry(path: Path) -> None:
    """A file or a folder of the work area."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        remove_quietly(path)


def _checked(key: str) -> str:
    # Keys are UUIDs made here; refuse anything else rather than join it into a path.
    return str(uuid.UUID(key))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
