"""What can go wrong in a job's run, and what the user is told: one table.

Code raises `JobProblem(Failure.X, **details)`; the table gives the stable numeric code and
the message written for the user. A failed process (ffprobe, ffmpeg, espeak-ng) is
classified in one place, `failures_of`: by the stage it ran for and by how it ended (exit
status, killed by a signal, past its deadline, at the output size limit, stopped by a
cancel). What is logged (ffmpeg's stderr) is kept apart from what is returned.
"""
from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum, IntEnum
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from jobs_api import outbound
from jobs_api.lifecycle import transition
from jobs_api.models import Job, JobStatus
from workers.ffmpeg import runner
from workers.ffmpeg.plan import PlanInvalid
from workers.ffmpeg.probe import NotAudio
from workers.shutdown import Interrupted, Shutdown

log = logging.getLogger(__name__)


class ErrorCode(IntEnum):
    """Stable numeric codes of a job's errors and warnings, as clients see them."""

    INPUT_UNREACHABLE = 1001
    INPUT_REFUSED = 1002
    NOT_AUDIO = 2001
    DAMAGED = 2002
    TOO_LONG = 2003
    OUTPUT_TOO_LARGE = 2004
    TIMED_OUT = 2005
    CONVERSION_FAILED = 2006
    OPTIONS_NOT_APPLICABLE = 2007
    TEXT_INVALID = 2008
    NO_OUTPUT = 3001
    STUCK = 3002
    OPTION_IGNORED = 4001  # warnings


class Failure(Enum):
    DOWNLOAD_REFUSED = "download refused"
    DOWNLOAD_FAILED = "download failed"
    PROBE_DEADLINE = "probe past its deadline"
    PROBE_UNREADABLE = "probe failed"
    NO_AUDIO_STREAM = "no audio stream"
    TOO_LONG = "input too long"
    TOO_MANY_STREAMS = "more streams than a job may convert"
    JOB_TOO_LONG = "more decoded seconds than a job may make"
    TOO_LONG_UNSAID = "input of unknown length reached the limit"
    OPTIONS_DO_NOT_FIT = "options do not fit the input"
    PRESET_GONE = "preset gone"
    PRESET_CHANGED = "preset changed to options that do not fit"
    TEXT_TOO_LONG = "text too long"
    TEXT_NOT_UTF8 = "text not UTF-8"
    TEXT_NOT_SPOKEN = "espeak-ng failed"
    SPEECH_TOO_LONG = "speech at the length limit"
    FFMPEG_EXIT = "ffmpeg exited non-zero"
    FFMPEG_SIGNAL = "ffmpeg killed by a signal"
    SANDBOX = "no sandbox for the run"
    DEADLINE = "past the deadline"
    OUTPUT_TOO_LARGE = "output at the size limit"
    ZIP_TOO_LARGE = "zip at the size limit"
    TRUNCATED = "fewer seconds decoded than planned"
    NO_OUTPUT = "no output"
    INTERNAL = "unexpected error"
    STORAGE = "file storage unavailable"
    WORKER_GONE = "running past the job deadline"
    WORKER_LOST = "worker lost in every attempt"


FAILURES: dict[Failure, tuple[ErrorCode, str]] = {
    Failure.DOWNLOAD_REFUSED: (ErrorCode.INPUT_REFUSED, "The input URL is not allowed: {reason}"),
    Failure.DOWNLOAD_FAILED: (ErrorCode.INPUT_UNREACHABLE, "The input could not be downloaded: {reason}"),
    Failure.PROBE_DEADLINE: (ErrorCode.NOT_AUDIO, "The input could not be read in time."),
    Failure.PROBE_UNREADABLE: (
        ErrorCode.NOT_AUDIO, "The input is not an audio file in a supported format (or it is empty or damaged)."),
    Failure.NO_AUDIO_STREAM: (ErrorCode.NOT_AUDIO, "The input has no audio stream."),
    Failure.TOO_LONG: (ErrorCode.TOO_LONG, "The input is {seconds:.0f} s long; the limit is {limit} s."),
    Failure.TOO_LONG_UNSAID: (
        ErrorCode.TOO_LONG, "The input does not say how long it is, and it runs to the limit of {limit:g} s or "
                            "beyond; it was not converted, rather than cut there."),
    Failure.OPTIONS_DO_NOT_FIT: (ErrorCode.OPTIONS_NOT_APPLICABLE, "The options do not fit the input: {reason}."),
    Failure.PRESET_GONE: (ErrorCode.OPTIONS_NOT_APPLICABLE, "The preset {preset!r} no longer exists."),
    Failure.PRESET_CHANGED: (
        ErrorCode.OPTIONS_NOT_APPLICABLE, "The preset {preset!r} was changed after the job was created, and its "
                                          "options no longer fit this conversion: {reason}"),
    Failure.TEXT_TOO_LONG: (ErrorCode.TEXT_INVALID, "The text is longer than {kib} KiB."),
    Failure.TEXT_NOT_UTF8: (ErrorCode.TEXT_INVALID, "The text input is not UTF-8 plain text."),
    Failure.TEXT_NOT_SPOKEN: (ErrorCode.TEXT_INVALID, "The text could not be spoken."),
    Failure.SPEECH_TOO_LONG: (ErrorCode.TOO_LONG, "The text would take longer than the limit of {limit:g} s to speak."),
    Failure.FFMPEG_EXIT: (ErrorCode.DAMAGED, "The input could not be decoded; it may be damaged or truncated."),
    Failure.FFMPEG_SIGNAL: (
        ErrorCode.CONVERSION_FAILED, "The conversion was interrupted ({program} was stopped by {signal}); "
                                     "please try again."),
    Failure.SANDBOX: (
        ErrorCode.CONVERSION_FAILED, "The service could not start its converter safely (no sandbox); a fault of "
                                     "the service, not of the input. Please try again later."),
    Failure.DEADLINE: (ErrorCode.TIMED_OUT, "The conversion took longer than {limit} s and was stopped."),
    Failure.OUTPUT_TOO_LARGE: (
        ErrorCode.OUTPUT_TOO_LARGE, "The output would exceed the limit of {limit} bytes (a job's outputs together)."),
    Failure.TOO_MANY_STREAMS: (
        ErrorCode.TOO_LONG, "The job would convert {streams} audio streams; a job may convert at most {limit}."),
    Failure.JOB_TOO_LONG: (
        ErrorCode.TOO_LONG, "The job would decode more than {limit} s of audio, all its conversions together."),
    Failure.ZIP_TOO_LARGE: (
        ErrorCode.OUTPUT_TOO_LARGE, "The zip of all results would exceed the limit of {limit} bytes."),
    Failure.TRUNCATED: (
        ErrorCode.DAMAGED,
        "The input is truncated or damaged: only {written:.2f} s of {expected:.2f} s could be decoded."),
    Failure.NO_OUTPUT: (ErrorCode.NO_OUTPUT, "The job produced no output."),
    Failure.INTERNAL: (ErrorCode.CONVERSION_FAILED, "An internal error stopped the conversion. Please try again."),
    Failure.STORAGE: (
        ErrorCode.CONVERSION_FAILED, "The service's file storage (its S3 bucket) could not be reached or refused "
                                     "the service: a fault of the service, not of the input. Please try again later."),
    Failure.WORKER_GONE: (
        ErrorCode.STUCK, "The job did not finish within {limit} s (its worker may have stopped); "
                         "please submit it again."),
    Failure.WORKER_LOST: (
        ErrorCode.STUCK, "The service lost the worker running this job in each of its {attempts} attempts "
                         "(stopped, out of memory, or its host gone): a failure of the service, not of the "
                         "input. Please submit it again later."),
}


class JobProblem(Exception):
    """A failure to report on the job, with the table's code and message."""

    def __init__(self, failure: Failure, **details: Any) -> None:
        code, template = FAILURES[failure]
        self.failure, self.code, self.message = failure, code, template.format(**details)
        super().__init__(self.message)


class Canceled(Exception):
    """The job was canceled while it ran: it ends without an error."""


# ffmpeg catches SIGINT and SIGTERM to finish its output, then exits with this status (5.x)
# instead of dying by the signal; its errors exit with 1.
FFMPEG_SIGNALED_EXIT = 255


class Stage(Enum):
    """What a process ran for: the same ending means something else for each."""

    PROBE = "probe"
    CONVERT = "convert"
    SPEAK = "speak"


@contextmanager
def failures_of(stage: Stage, *, deadline: float, output: Path | None = None,
                max_output_bytes: int = 0) -> Iterator[None]:
    """Turn a failed run of `stage` into the job's problem (or Canceled). A run killed with
    `output` at the size limit made an output too large, not a damaged input."""
    try:
        yield
    except runner.ProcessStopped as exc:
        raise (Interrupted() if Shutdown.grace_over() else Canceled()) from exc
    except runner.ProcessFailed as exc:
        raise _process_problem(stage, exc, deadline, output, max_output_bytes) from exc
    except NotAudio as exc:
        raise JobProblem(Failure.NO_AUDIO_STREAM) from exc


def _process_problem(stage: Stage, exc: runner.ProcessFailed, deadline: float, output: Path | None,
                     max_output_bytes: int) -> JobProblem:
    if output is not None and output.exists() and output.stat().st_size >= max_output_bytes:
        return JobProblem(Failure.OUTPUT_TOO_LARGE, limit=max_output_bytes)
    if isinstance(exc, runner.SandboxFailed):
        log.error("%s: %s", stage.value, exc)  # the operator's to fix: see workers/ffmpeg/sandbox.py
        return JobProblem(Failure.SANDBOX)
    if isinstance(exc, runner.ProcessTimedOut) and stage != Stage.SPEAK:
        return JobProblem(Failure.PROBE_DEADLINE if stage == Stage.PROBE else Failure.DEADLINE, limit=deadline)
    log.warning("%s failed (%s): %s", stage.value, exc, exc.stderr_tail)
    if stage == Stage.PROBE:
        return JobProblem(Failure.PROBE_UNREADABLE)
    if stage == Stage.SPEAK:
        return JobProblem(Failure.TEXT_NOT_SPOKEN)
    if exc.returncode is not None and exc.returncode < 0:
        return JobProblem(Failure.FFMPEG_SIGNAL, program=exc.program, signal=signal.Signals(-exc.returncode).name)
    if exc.program == "ffmpeg" and exc.returncode == FFMPEG_SIGNALED_EXIT:
        return JobProblem(Failure.FFMPEG_SIGNAL, program=exc.program, signal="a signal")
    return JobProblem(Failure.FFMPEG_EXIT)


@contextmanager
def download_failures() -> Iterator[None]:
    """A refused or failed download as the job's problem."""
    try:
        yield
    except outbound.OutboundRefused as exc:
        raise JobProblem(Failure.DOWNLOAD_REFUSED, reason=exc) from exc
    except outbound.OutboundFailed as exc:
        raise JobProblem(Failure.DOWNLOAD_FAILED, reason=exc) from exc


def plan_problem(exc: PlanInvalid) -> JobProblem:
    return JobProblem(Failure.OPTIONS_DO_NOT_FIT, reason=exc)


def error_entry(source: str, source_id: str, code: int, message: str) -> dict[str, Any]:
    """One item of a job's `errors` or `warnings`."""
    return {"source": source, "id_source": source_id, "code": int(code), "message": message, "details": {}}


def fail(session: Session, job_id: str, source: str, source_id: str, problem: JobProblem) -> bool:
    """Move a started job to failed with this problem; False if it was no longer running. The caller commits."""
    job = session.get(Job, job_id)
    assert job is not None
    if not transition(session, job_id, JobStatus.FAILED, info=problem.message,
                      allowed_from=[JobStatus.QUEUED, JobStatus.DOWNLOADING, JobStatus.PROCESSING]):
        return False
    job.errors = [*job.errors, error_entry(source, source_id, problem.code, problem.message)]
    return True
