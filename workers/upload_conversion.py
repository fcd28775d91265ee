"""Converting an upload while it arrives (CONVERT_WHILE_UPLOADING).

An upload into a job that has one conversion and no input yet (a plain WAV, converted
without normalization or a start offset) would otherwise be converted only after its last
byte, and after the client starts the job (the official SDK uploads into a job created with
process=false, then starts it): on a large file, a noticeable share of the job's time passes
before the conversion begins. So when the file part begins, the API queues
`workers.tasks.convert_arriving`, which feeds the file to ffmpeg's stdin as the API writes
it, on a worker nobody else is waiting for. The upload is complete when the API renames the
file into the inputs, and dropped when it unlinks it.

The job's own run (`UploadConversion.take`) uses the result only if it was made from that
very file (the same inode, size and modification time: the API never writes an input again)
for the same conversion with the same ffmpeg command; its usual checks (output size, the
seconds ffmpeg reported writing) then apply as to its own encode. Otherwise, or if this gave up, it converts
as usual. This gives up when the upload is dropped or stalls for STALL_SECONDS, and as soon
as any other job waits for a worker: a slow client, or a job never started, does not hold a
worker others need. A result never taken goes with the job's work folders, or with the
sweeper's stray folders after an hour.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from jobs_api.storage import Storage
from workers.ffmpeg import runner, wavheader
from workers.ffmpeg.commands import convert_args, progress_seconds
from workers.ffmpeg.plan import Limits, Plan, SourceInfo
from workers.ffmpeg.sandbox import Sees

STALL_SECONDS = 2.0
ASK_EVERY = 0.25  # seconds between looks at the queue for other jobs
WAIT_STEP = 0.005
CHUNK = 1024 * 1024
HEADER_BYTES = 1024 * 1024  # a WAV's header is there by then, or it is not a plain WAV
INCOMING_NAME = re.compile(r"tmp[a-z0-9_]{1,32}")  # tempfile's names, nothing that could leave the folder


class Arrival:
    """An upload's file in the incoming folder, held open while the API writes it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    @classmethod
    def open(cls, storage: Storage, name: str) -> Arrival | None:
        """None if the name is not one of ours or the upload is over already."""
        if not INCOMING_NAME.fullmatch(name):
            return None
        path = storage.incoming / name
        try:
            return cls(path, os.open(path, os.O_RDONLY))
        except FileNotFoundError:
            return None

    def __enter__(self) -> Arrival:
        return self

    def __exit__(self, *_exc: object) -> None:
        os.close(self.fd)

    def state(self) -> str:
        """"arriving", "complete" (renamed into the inputs) or "dropped" (unlinked)."""
        held = os.fstat(self.fd)
        if held.st_nlink == 0:
            return "dropped"
        try:
            named = os.stat(self.path)
        except FileNotFoundError:  # renamed or unlinked since the first look: the link count says which
            return "dropped" if os.fstat(self.fd).st_nlink == 0 else "complete"
        return "arriving" if named.st_ino == held.st_ino else "complete"

    def source(self) -> SourceInfo | None:
        """The WAV's stream once its header has arrived; None if it is no plain WAV or the
        upload ended or stalled first."""
        waited_since = time.monotonic()
        while True:
            try:
                info = wavheader.read(self.path, arriving=True)
            except FileNotFoundError:
                return None  # complete or dropped already: nothing to win
            if info is not None:
                return info
            if (os.fstat(self.fd).st_size >= HEADER_BYTES or self.state() != "arriving"
                    or time.monotonic() - waited_since > STALL_SECONDS):
                return None
            time.sleep(WAIT_STEP)

    def feed(self, out: int, stop: threading.Event) -> bool:
        """A `runner.run_fed` feed: the file as it grows, to its end once the upload is complete."""
        idle_since = time.monotonic()
        while not stop.is_set():
            if _copy(self.fd, out):
                idle_since = time.monotonic()
                continue
            state = self.state()
            if state == "complete":
                while _copy(self.fd, out):  # what was written before the rename
                    pass
                return True
            if state == "dropped" or time.monotonic() - idle_since > STALL_SECONDS:
                return False
            time.sleep(WAIT_STEP)
        return False

    def identity(self) -> list[int]:
        return _identity(os.fstat(self.fd))


def _identity(found: os.stat_result) -> list[int]:
    """Which file, as it is now: an input is never written again once adopted."""
    return [found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns]


def _copy(source: int, out: int) -> bool:
    """Up to a chunk from `source` to the pipe `out`, page by page in the kernel (splice):
    the worker does not copy a large upload through its own memory. False at the current
    end of `source`."""
    return os.splice(source, out, CHUNK) > 0


class UploadConversion:
    """A job's conversion of its arriving upload, in a folder of the job's own (removed with the
    job's work folders, `Storage.remove_work_dirs`)."""

    def __init__(self, storage: Storage, job_id: str, limits: Limits, deadline_seconds: float) -> None:
        self.folder = storage.work_dir_path(job_id, "early")
        self.job_id, self.limits, self.deadline_seconds = job_id, limits, deadline_seconds

    def convert(self, conversion_id: str, arrival: Arrival, plan: Plan, others_waiting: Callable[[], bool]) -> str:
        """Convert the arriving file; what happened, for RQ's log."""
        folder = self.folder
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            return "skipped: converting already"
        with (folder / "lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # `take` waits for this
            output = folder / f"output.{plan.target.extension}"
            reached = [0.0]
            try:
                runner.run_fed(convert_args(None, output, plan, self.limits), arrival.feed,
                               sees=Sees(writes=(folder,), job=self.job_id), deadline_seconds=self.deadline_seconds,
                               should_stop=runner.Every(ASK_EVERY, others_waiting),
                               on_line=lambda line: _progress(line, reached))
                result = {"conversion": conversion_id, "command": self.command(plan), "file": arrival.identity(),
                          "output": output.name, "reached": reached[0]}
                (folder / "result.tmp").write_text(json.dumps(result))
                os.replace(folder / "result.tmp", folder / "result.json")
            except (runner.ProcessFailed, OSError) as exc:
                shutil.rmtree(folder, ignore_errors=True)
                return f"gave up: {exc}"
        return "converted"

    def take(self, conversion_id: str, source: Path, plan: Plan, partial: Path,
             should_stop: Callable[[], bool]) -> float | None:
        """Move the conversion of `source` with `plan` to `partial`, waiting for it if it is
        still running; the seconds ffmpeg reported writing, or None to convert as usual."""
        folder = self.folder
        try:
            lock = (folder / "lock").open("r")
        except FileNotFoundError:
            return None
        deadline = time.monotonic() + self.deadline_seconds
        with lock:
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if should_stop() or time.monotonic() > deadline:
                        return None
                    time.sleep(WAIT_STEP)
            try:
                result = json.loads((folder / "result.json").read_text())
                usable = (result["conversion"] == conversion_id and result["command"] == self.command(plan)
                          and result["file"] == _identity(os.stat(source)))
                if usable:
                    os.replace(folder / result["output"], partial)
                    return float(result["reached"])
                return None
            except (OSError, ValueError, KeyError):
                return None
            finally:
                shutil.rmtree(folder, ignore_errors=True)

    def command(self, plan: Plan) -> list[str]:
        """What the plan makes ffmpeg do, to compare plans made in two processes."""
        return convert_args(None, Path("output"), plan, self.limits)


def _progress(line: str, reached: list[float]) -> None:
    seconds = progress_seconds(line)
    if seconds is not None:
        reached[0] = max(reached[0], seconds)
