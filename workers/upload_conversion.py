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
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from jobs_api.config import fence_on
from jobs_api.storage import Storage
from workers.ffmpeg import flac_split, runner, wavheader
from workers.ffmpeg.commands import convert_args, progress_seconds, second_half_args
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
        self.wav: tuple[SourceInfo, int, int] | None = None  # `source()`'s stream, where its samples begin, their bytes

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
                self.wav = wavheader.read_with_data(self.path, arriving=True)
            except FileNotFoundError:
                return None  # complete or dropped already: nothing to win
            if self.wav is not None:
                return self.wav[0]
            if (os.fstat(self.fd).st_size >= HEADER_BYTES or self.state() != "arriving"
                    or time.monotonic() - waited_since > STALL_SECONDS):
                return None
            time.sleep(WAIT_STEP)

    def feed(self, start: int = 0, stop: int | None = None) -> Callable[[int, threading.Event], bool]:
        """A `runner.run_fed` feed: the file's bytes from `start` to `stop` (None: to the end of
        the complete upload), as they arrive."""
        def run(out: int, halt: threading.Event) -> bool:
            # Page by page in the kernel (splice): the worker does not copy a large upload
            # through its own memory.
            return self.follow(start, stop, lambda at, most: os.splice(self.fd, out, most, offset_src=at), halt)
        return run

    def follow(self, start: int, stop: int | None, take: Callable[[int, int], int], halt: threading.Event) -> bool:
        """Hand the file's bytes from `start` to `stop` to `take(at, most)`, which returns how
        many it took (0 at the file's current end), as they arrive; whether all of them came."""
        at, idle_since, complete = start, time.monotonic(), False
        while not halt.is_set():
            most = CHUNK if stop is None else min(CHUNK, stop - at)
            if most <= 0:
                return True
            taken = take(at, most)
            if taken:
                at, idle_since = at + taken, time.monotonic()
                continue
            if complete:  # and read to the end of what was written before the rename
                return stop is None
            state = self.state()
            if state == "complete":
                complete = True
            elif state == "dropped" or time.monotonic() - idle_since > STALL_SECONDS:
                return False
            else:
                time.sleep(WAIT_STEP)
        return False

    def identity(self) -> list[int]:
        return _identity(os.fstat(self.fd))


def _identity(found: os.stat_result) -> list[int]:
    """Which file, as it is now: an input is never written again once adopted."""
    return [found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns]


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
            try:
                if _in_halves(arrival, plan):
                    reached = self._encode_in_halves(arrival, plan, output, others_waiting)
                else:
                    reached = self._encode(convert_args(None, output, plan, self.limits), arrival.feed(),
                                           runner.Every(ASK_EVERY, others_waiting))
                result = {"conversion": conversion_id, "command": self.command(plan), "file": arrival.identity(),
                          "output": output.name, "reached": reached}
                (folder / "result.tmp").write_text(json.dumps(result))
                os.replace(folder / "result.tmp", folder / "result.json")
            except (runner.ProcessFailed, OSError, flac_split.NotJoinable) as exc:
                shutil.rmtree(folder, ignore_errors=True)
                return f"gave up: {exc}"
        return "converted"

    def _encode(self, args: list[str], feed: Callable[[int, threading.Event], bool],
                should_stop: Callable[[], bool]) -> float:
        """Run an ffmpeg fed by `feed`; the seconds of output it reported writing."""
        reached = [0.0]
        runner.run_fed(args, feed, sees=Sees(writes=(self.folder,), job=self.job_id),
                       deadline_seconds=self.deadline_seconds, should_stop=should_stop,
                       on_line=lambda line: _progress(line, reached))
        return reached[0]

    def _encode_in_halves(self, arrival: Arrival, plan: Plan, output: Path,
                          others_waiting: Callable[[], bool]) -> float:
        """Encode the samples before and after the middle at once, with the MD5 of all of them
        beside, and join the halves into `output` (workers/ffmpeg/flac_split.py)."""
        assert arrival.wav is not None
        info, begin, length = arrival.wav
        sample = info.channels * (info.bits or 0) // 8
        end, cut = begin + length, begin + (flac_split.cut(length // sample) or 0) * sample
        second, md5, failed = self.folder / "second.flac", hashlib.md5(), threading.Event()
        halves = [(convert_args(None, output, plan, self.limits), arrival.feed(0, cut)),
                  (second_half_args(second, plan, self.limits, info.codec[4:], (end - cut) // sample),
                   arrival.feed(cut, end))]

        def hashed(at: int, most: int) -> int:
            data = os.pread(arrival.fd, most, at)
            md5.update(data)
            return len(data)

        def hash_all() -> float:
            if not arrival.follow(begin, end, hashed, failed):
                raise flac_split.NotJoinable("the upload ended before its samples")
            return 0.0

        with ThreadPoolExecutor(len(halves) + 1) as pool:
            runs = [pool.submit(self._encode, args, feed,
                                runner.Every(ASK_EVERY, lambda: failed.is_set() or others_waiting()))
                    for args, feed in halves] + [pool.submit(hash_all)]
            for done in as_completed(runs):
                if done.exception() is not None:
                    failed.set()  # the others stop too
            reached = sum(run.result() for run in runs)  # or the first failure, raised
        flac_split.join(output, second, md5.digest())
        return reached

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


def _in_halves(arrival: Arrival, plan: Plan) -> bool:
    """Whether to encode in two halves at once (workers/ffmpeg/flac_split.py): a FLAC of every
    sample of a plain 16- or 24-bit WAV at its own rate, channels and depth, long enough to win."""
    if arrival.wav is None or not fence_on(flac_split.SWITCH):
        return False
    info, _begin, length = arrival.wav
    return (plan.codec == "flac" and plan.target.muxer == "flac" and not plan.filters and plan.envelope is None
            and plan.normalization is None
            and not plan.start and plan.duration == info.duration and info.codec in ("pcm_s16le", "pcm_s24le")
            and (plan.sample_rate, plan.channels, plan.bit_depth) == (info.sample_rate, info.channels, info.bits)
            and flac_split.cut(length // (info.channels * (info.bits or 8) // 8)) is not None)


def _progress(line: str, reached: list[float]) -> None:
    seconds = progress_seconds(line)
    if seconds is not None:
        reached[0] = max(reached[0], seconds)
