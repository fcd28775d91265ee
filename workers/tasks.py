"""RQ tasks. They take a job id, reload the job, and own every later change of it."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, joinedload, sessionmaker

from jobs_api import callbacks, catalog, outbound
from jobs_api.config import Config
from jobs_api.db import make_engine, make_sessionmaker
from jobs_api.errors import RequestInvalid
from jobs_api.jobs import display_name
from jobs_api.lifecycle import record_note, transition
from jobs_api.models import WITH_SPEC, Conversion, InputFile, Job, JobStatus, OutputFile
from jobs_api.presets import PresetService
from jobs_api.storage import Storage, remove_quietly, sha256_file
from workers import early, ffmpeg, loudness, runner, wavheader
from workers.queue import PROCESS_JOB, enqueue, enqueue_in, queue_for, rq_job_id

log = logging.getLogger(__name__)

# A job is read with its outputs too: a queued job has none yet, so joining them adds no rows,
# and the first output published does not load the empty list with a query of its own.
WITH_OUTPUTS = (*WITH_SPEC, joinedload(Job.outputs))

PROBE_SECONDS = 30
PROGRESS_EVERY = 0.25
CANCEL_CHECK_EVERY = 0.25
FIRST_CALLBACK_TIMEOUT = 3.0
CALLBACK_TIMEOUT = 10.0


class Code:
    """Stable numeric codes of job errors."""

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
    OPTION_IGNORED = 4001  # warnings
    NO_OUTPUT = 3001
    STUCK = 3002


class JobProblem(Exception):
    """A failure to report on the job: the message is written for the user."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Canceled(Exception):
    pass


@dataclass(frozen=True)
class Context:
    config: Config
    sessions: sessionmaker[Session]
    storage: Storage

    @property
    def limits(self) -> ffmpeg.Limits:
        return ffmpeg.Limits.of(self.config)


@cache
def context() -> Context:
    """Built on first use inside the process that runs tasks (after RQ's fork)."""
    config = Config.from_env()
    storage = Storage(config.storage_dir)
    storage.ensure()
    return Context(config, make_sessionmaker(make_engine(config.database_url)), storage)


def process_job(job_id: str) -> str:
    ctx = context()
    with ctx.sessions() as session:
        job = session.get(Job, job_id, options=WITH_OUTPUTS)
        if job is None or not transition(
            session, job_id, JobStatus.DOWNLOADING, allowed_from=[JobStatus.QUEUED]
        ):
            return "skipped"
        session.commit()
        announce(ctx, session, job_id)
        try:
            outcome = _run(ctx, session, job)
        except Canceled:
            outcome = "canceled"
        except Exception:
            # Unexpected: the job fails with a generic message; details go to the log
            # (and to RQ's failed registry when we re-raise).
            session.rollback()
            fail(session, job_id, "job", job_id, Code.CONVERSION_FAILED,
                  "An internal error stopped the conversion. Please try again.")
            session.commit()
            announce(ctx, session, job_id, last=True)
            raise
        if outcome == "canceled":
            _discard_outputs(ctx, session, job_id)
        else:
            announce(ctx, session, job_id, last=True)
        return outcome


def _run(ctx: Context, session: Session, job: Job) -> str:
    for item in job.inputs:
        if item.storage_key is None and item.type == "remote":
            try:
                _download(ctx, session, item)
            except JobProblem as problem:
                item.status = "failed"
                if _problem(session, job, "input", item.id, problem, job.fail_on_input_error):
                    return "failed"
    if not transition(session, job.id, JobStatus.PROCESSING, allowed_from=[JobStatus.DOWNLOADING]):
        raise Canceled()  # only a cancel moves a job out of downloading meanwhile
    session.commit()
    announce(ctx, session, job.id)

    ready = [item for item in job.inputs if item.status == "ready" and item.storage_key]
    steps = len(job.conversions) * len(ready)
    with ctx.storage.work_dir(job.id) as work:
        for number, conversion in enumerate(job.conversions):
            try:
                options = _options(session, job, conversion)
                # No read (a preset's, say) stays in a transaction while ffmpeg runs: on
                # PostgreSQL, a connection idle in transaction all that time.
                session.commit()
                results: list[Result] = []
                for index, item in enumerate(ready):
                    progress = _Progress(ctx, job.id, number * len(ready) + index, steps)
                    try:
                        results += _convert(ctx, session, job, conversion, options, item, work, progress)
                    except JobProblem as problem:
                        if _problem(session, job, "conversion", conversion.id, problem, job.fail_on_conversion_error):
                            return "failed"
                _publish(ctx, session, job, conversion, options, results, work)
            except JobProblem as problem:
                if _problem(session, job, "conversion", conversion.id, problem, job.fail_on_conversion_error):
                    return "failed"
    if not job.outputs:
        fail(session, job.id, "job", job.id, Code.NO_OUTPUT, "The job produced no output.")
        session.commit()
        return "failed"
    if not transition(session, job.id, JobStatus.COMPLETED, allowed_from=[JobStatus.PROCESSING], progress=100):
        session.rollback()
        return "canceled"
    session.commit()
    return "completed"


def convert_arriving(job_id: str, incoming_name: str) -> str:
    """Convert an upload into the job while it arrives (workers/early.py)."""
    ctx = context()
    arrival = early.Arrival.open(ctx.storage, incoming_name)
    if arrival is None:
        return "skipped: the upload is over"
    with arrival:
        source = arrival.source()
        if source is None:
            return "skipped: not a plain WAV"
        with ctx.sessions() as session:
            job = session.get(Job, job_id)
            if job is None or len(job.conversions) != 1:
                return "skipped: not one conversion"
            conversion = job.conversions[0]
            try:
                plan = _plan(ctx, conversion, _options(session, job, conversion), source)
            except JobProblem:
                return "skipped: the job's own task reports this"
        if plan.normalization is not None or plan.start:
            return "skipped: needs the whole input first"
        if arrival.state() != "arriving":
            return "skipped: the upload is over"
        queue, own = queue_for(ctx.config), rq_job_id(PROCESS_JOB, (job_id,))
        return early.convert(ctx.storage, job_id, conversion.id, arrival, plan, ctx.limits,
                             ctx.config.ffmpeg_timeout_seconds,
                             others_waiting=lambda: any(queued != own for queued in queue.get_job_ids(0, 2)))


def _problem(session: Session, job: Job, source: str, source_id: str, problem: JobProblem, fatal: bool) -> bool:
    """Record a problem as the job's failure (returns True) or as a warning."""
    if fatal:
        fail(session, job.id, source, source_id, problem.code, problem.message)
        session.commit()
        return True
    job.warnings = [*job.warnings, error_message(source, source_id, problem.code, problem.message)]
    session.commit()
    return False


def fail(session: Session, job_id: str, source: str, source_id: str, code: int, message: str) -> bool:
    """Move a started job to failed with this error; False if it was no longer running. The caller commits."""
    job = session.get(Job, job_id)
    assert job is not None
    if not transition(session, job_id, JobStatus.FAILED, info=message,
                      allowed_from=[JobStatus.QUEUED, JobStatus.DOWNLOADING, JobStatus.PROCESSING]):
        return False
    job.errors = [*job.errors, error_message(source, source_id, code, message)]
    return True


def error_message(source: str, source_id: str, code: int, message: str) -> dict[str, Any]:
    return {"source": source, "id_source": source_id, "code": code, "message": message, "details": {}}


def _download(ctx: Context, session: Session, item: InputFile) -> None:
    assert item.source is not None
    allow = outbound.Allowance.parse(ctx.config.outbound_allow)
    with ctx.storage.incoming_file() as handle:
        path = Path(handle.name)
        try:
            fetched = outbound.fetch_to_file(
                item.source, handle, allow=allow, max_bytes=ctx.config.max_input_bytes,
                timeout=ctx.config.download_timeout_seconds,
            )
        except outbound.OutboundRefused as exc:
            remove_quietly(path)
            raise JobProblem(Code.INPUT_REFUSED, f"The input URL is not allowed: {exc}") from exc
        except outbound.OutboundFailed as exc:
            remove_quietly(path)
            raise JobProblem(Code.INPUT_UNREACHABLE, f"The input could not be downloaded: {exc}") from exc
        except BaseException:
            remove_quietly(path)
            raise
    item.filename = item.filename or display_name(fetched.filename or "") or "file"
    item.content_type = fetched.content_type
    item.size = fetched.size
    item.checksum = fetched.sha256
    item.storage_key = ctx.storage.adopt_input(path)
    item.status = "ready"
    session.commit()


class _Progress:
    """Writes the job's progress (throttled) and answers whether it was canceled."""

    def __init__(self, ctx: Context, job_id: str, step: int, steps: int) -> None:
        self.ctx, self.job_id, self.step, self.steps = ctx, job_id, step, steps
        self.total = 0.0
        self.reached = 0.0  # seconds of output the last ffmpeg run reported writing
        # The job was running when the step began, at the progress it had: a step shorter
        # than PROGRESS_EVERY writes nothing, and one shorter than CANCEL_CHECK_EVERY asks nothing.
        self.last_write = time.monotonic()
        self.should_stop = runner.Every(CANCEL_CHECK_EVERY, self._canceled)

    def line(self, text: str) -> None:
        seconds = ffmpeg.progress_seconds(text)
        if seconds is None:
            return
        self.reached = max(self.reached, seconds)
        if self.total <= 0:
            return
        now = time.monotonic()
        if now - self.last_write < PROGRESS_EVERY:
            return
        self.last_write = now
        fraction = min(1.0, max(0.0, seconds / self.total))
        percent = int(100 * (self.step + fraction) / self.steps)
        with self.ctx.sessions() as session:
            session.execute(
                update(Job).where(Job.id == self.job_id, Job.status == JobStatus.PROCESSING.value)
                .values(progress=min(percent, 99))
            )
            session.commit()

    def _canceled(self) -> bool:
        with self.ctx.sessions() as session:
            status = session.scalar(select(Job.status).where(Job.id == self.job_id))
        return status != JobStatus.PROCESSING.value


def _probe(path: Path) -> list[ffmpeg.SourceInfo]:
    """Every audio stream of the file, or a JobProblem for the user."""
    plain_wav = wavheader.read(path)
    if plain_wav is not None:
        return [plain_wav]
    try:
        text = runner.run(ffmpeg.probe_args(path), deadline_seconds=PROBE_SECONDS)
    except runner.ProcessTimedOut as exc:
        raise JobProblem(Code.NOT_AUDIO, "The input could not be read in time.") from exc
    except runner.ProcessFailed as exc:
        raise JobProblem(
            Code.NOT_AUDIO,
            "The input is not an audio file in a supported format (or it is empty or damaged).",
        ) from exc
    try:
        return ffmpeg.parse_streams(text)
    except ffmpeg.NotAudio as exc:
        raise JobProblem(Code.NOT_AUDIO, "The input has no audio stream.") from exc


@dataclass(frozen=True)
class Result:
    """One converted audio stream, in the work folder until it is published."""

    path: Path
    filename: str
    input_id: str
    stream: int
    metadata: dict[str, Any]


def _options(session: Session, job: Job, conversion: Conversion) -> dict[str, Any]:
    """The conversion's options over its preset's."""
    try:
        return PresetService(session).effective_options(job.api_key_id, conversion.options)
    except RequestInvalid as exc:
        raise JobProblem(Code.OPTIONS_NOT_APPLICABLE, f"The preset {conversion.options.get('preset')!r} "
                         "no longer exists.") from exc


def _convert(
    ctx: Context, session: Session, job: Job, conversion: Conversion, options: dict[str, Any],
    item: InputFile, work: Path, progress: _Progress,
) -> list[Result]:
    """Convert every audio stream of one input."""
    target = catalog.TARGETS[conversion.target]
    notes = catalog.ignored_options(target, options, conversion.metadata_)
    source_path = ctx.storage.input_path(item.storage_key or "")
    if _is_text(item):
        source_path = _speak(ctx, source_path, options, work / f"{conversion.id}-{item.id}-speech.wav", progress)
    elif "language_tts" in conversion.options:
        notes.append("language_tts ignored: the input is audio, not plain text.")
    streams = _probe(source_path)
    stem = display_name(options.get("output_filename") or "") or Path(item.filename or "file").stem or "file"
    results = []
    for source in streams:
        name = f"{stem}-track{source.stream + 1}" if len(streams) > 1 else stem
        partial = work / f"{conversion.id}-{item.id}-{source.stream}.{target.extension}"
        metadata = _convert_stream(ctx, job, conversion, options, source_path, source, partial, progress, notes)
        results.append(Result(partial, f"{name}.{target.extension}", item.id, source.stream, metadata))
    for note in dict.fromkeys(notes):
        job.warnings = [*job.warnings, error_message("conversion", conversion.id, Code.OPTION_IGNORED, note)]
    session.commit()
    return results


def _convert_stream(
    ctx: Context, job: Job, conversion: Conversion, options: dict[str, Any], source_path: Path,
    source: ffmpeg.SourceInfo, partial: Path, progress: _Progress, notes: list[str],
) -> dict[str, Any]:
    """Encode one audio stream to `partial`; returns the result's metadata."""
    plan = _plan(ctx, conversion, options, source)
    loudness = None
    if plan.normalization is None:
        reached = early.take(ctx.storage, job.id, conversion.id, source_path, plan, ctx.limits, partial,
                             progress.should_stop, ctx.config.ffmpeg_timeout_seconds)
        if reached is None:
            _encode(ctx, job, source_path, partial, plan, progress)
        else:
            progress.reached = reached
            with ctx.sessions() as session:
                record_note(session, job.id, "Converted while the upload arrived.")
                session.commit()
    else:
        loudness = _encode_normalized(ctx, job, source_path, partial, plan, progress, notes)
    if partial.stat().st_size >= ctx.config.max_output_bytes:
        raise _too_large(ctx)
    # ffmpeg's own progress report says how much it wrote: no ffprobe of the output, which
    # cost as much as a short clip's encoding (bench/small_file.py).
    written = progress.reached
    expected = plan.duration
    if expected - written > max(0.5, 0.1 * expected):
        raise JobProblem(
            Code.DAMAGED,
            f"The input is truncated or damaged: only {written:.2f} s of {expected:.2f} s could be decoded.",
        )
    metadata = _metadata(plan, written, partial.stat().st_size)
    if loudness:
        metadata["loudness"] = loudness
    return metadata


def _plan(ctx: Context, conversion: Conversion, options: dict[str, Any], source: ffmpeg.SourceInfo) -> ffmpeg.Plan:
    """How ffmpeg converts `source` for the conversion, or a JobProblem for the user."""
    if source.duration > ctx.config.max_duration_seconds:
        raise JobProblem(
            Code.TOO_LONG,
            f"The input is {source.duration:.0f} s long; the limit is {ctx.config.max_duration_seconds} s.",
        )
    target = catalog.TARGETS[conversion.target]
    try:
        return ffmpeg.with_tags(ffmpeg.plan_conversion(target, options, source, ctx.limits), conversion.metadata_)
    except ffmpeg.PlanInvalid as exc:
        raise JobProblem(Code.OPTIONS_NOT_APPLICABLE, f"The options do not fit the input: {exc}.") from exc


def _publish(ctx: Context, session: Session, job: Job, conversion: Conversion, options: dict[str, Any],
             results: list[Result], work: Path) -> None:
    """Make the conversion's results downloadable: each on its own, or packed into one zip
    (several results without allow_multiple_outputs, or more than its threshold)."""
    target = catalog.TARGETS[conversion.target]
    threshold = options.get("allow_multiple_outputs_threshold") or catalog.DEFAULTS["allow_multiple_outputs_threshold"]
    if len(results) > 1 and (not options.get("allow_multiple_outputs") or len(results) > threshold):
        inputs = list(dict.fromkeys(result.input_id for result in results))
        names = {item.id: Path(item.filename or "file").stem for item in job.inputs}
        stem = display_name(options.get("output_filename") or "") or (
            names[inputs[0]] if len(inputs) == 1 else f"{target.name}-files")
        archive = work / f"{conversion.id}.zip"
        members = _zip(results, archive)
        if archive.stat().st_size >= ctx.config.max_output_bytes:
            raise JobProblem(Code.OUTPUT_TOO_LARGE,
                             f"The zip of all results would exceed the limit of {ctx.config.max_output_bytes} bytes.")
        _adopt_output(ctx, job, conversion, archive, f"{stem}.zip", inputs, "application/zip", {"files": members})
    else:
        for result in results:
            _adopt_output(ctx, job, conversion, result.path, result.filename, [result.input_id],
                          target.content_type, result.metadata)
    session.commit()


def _zip(results: list[Result], archive: Path) -> list[dict[str, Any]]:
    """Pack the results into `archive`, file by file from disk (stored: audio does not deflate)."""
    members, taken = [], set()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as packed:
        for result in results:
            stem, _dot, extension = result.filename.rpartition(".")
            name, count = result.filename, 1
            while name.lower() in taken:
                count += 1
                name = f"{stem} ({count}).{extension}"
            taken.add(name.lower())
            packed.write(result.path, arcname=name)
            members.append({"filename": name, "size": result.path.stat().st_size, "input": result.input_id,
                            "stream": result.stream, **result.metadata})
    return members


def _adopt_output(ctx: Context, job: Job, conversion: Conversion, path: Path, filename: str, inputs: list[str],
                  content_type: str, metadata: dict[str, Any]) -> None:
    job.outputs.append(OutputFile(
        conversion_id=conversion.id, input_ids=inputs, filename=filename, size=path.stat().st_size,
        checksum=sha256_file(path), content_type=content_type, metadata_=metadata,
        password_hashes=[conversion.password_hash] if conversion.password_hash else [],
        storage_key=ctx.storage.adopt_output(path),
    ))


def _encode(ctx: Context, job: Job, source: Path, partial: Path, plan: ffmpeg.Plan, progress: _Progress) -> None:
    progress.total, progress.reached = plan.duration, 0.0
    with _ffmpeg_problems(ctx, job):
        runner.run(ffmpeg.convert_args(source, partial, plan, ctx.limits),
                   deadline_seconds=ctx.config.ffmpeg_timeout_seconds, should_stop=progress.should_stop,
                   on_line=progress.line)


def _encode_measured(ctx: Context, job: Job, source: Path, partial: Path, plan: ffmpeg.Plan, progress: _Progress,
                     meters: tuple[str, ...]) -> ffmpeg.Levels:
    """Encode, and measure the result while it is made: the meter reads a copy of the encoded
    stream on the other core, so it measures what the file holds without a pass of its own
    (which cost 2.3 s on a 10-minute AAC here)."""
    progress.total, progress.reached = plan.duration, 0.0
    with _ffmpeg_problems(ctx, job, partial):
        log = runner.run_metered(
            lambda fd: ffmpeg.convert_args(source, partial, plan, ctx.limits, copy_fd=fd), ffmpeg.meter_args(meters),
            deadline_seconds=ctx.config.ffmpeg_timeout_seconds, should_stop=progress.should_stop,
            on_line=progress.line)
    return ffmpeg.parse_levels(log)


@contextmanager
def _ffmpeg_problems(ctx: Context, job: Job, output: Path | None = None) -> Iterator[None]:
    """What a failed ffmpeg run means for the job. A run killed at the output size limit
    (`output` reached it) made an output too large, not a damaged input."""
    try:
        yield
    except runner.ProcessStopped as exc:
        raise Canceled() from exc
    except runner.ProcessTimedOut as exc:
        raise JobProblem(
            Code.TIMED_OUT, f"The conversion took longer than {ctx.config.ffmpeg_timeout_seconds} s and was stopped."
        ) from exc
    except runner.ProcessFailed as exc:
        if output is not None and output.exists() and output.stat().st_size >= ctx.config.max_output_bytes:
            raise _too_large(ctx) from exc
        log.warning("ffmpeg failed for job %s: %s", job.id, exc.stderr_tail)
        raise JobProblem(
            Code.DAMAGED, "The input could not be decoded; it may be damaged or truncated."
        ) from exc


def _too_large(ctx: Context) -> JobProblem:
    limit = ctx.config.max_output_bytes
    return JobProblem(Code.OUTPUT_TOO_LARGE, f"The output would exceed the limit of {limit} bytes.")


# How far a normalized result may be from its target before it is encoded again with
# the difference added: half the promised tolerance (1 LU for EBU, 0.5 dB otherwise).
# A linear gain lands on target at once; limiting and lossy encoders lose some loudness.
CORRECT_BEYOND = {"ebu": 0.5, "rms": 0.25, "peak": 0.25}
MAX_ENCODES = 3


def _encode_normalized(
    ctx: Context, job: Job, source: Path, partial: Path, plan: ffmpeg.Plan, progress: _Progress,
    notes: list[str],
) -> dict[str, Any] | None:
    """Measure the input, encode with the gain that reaches the target, measure the result.

    Input and result go through the one meter the kind needs: ebur128 (integrated, range,
    true peak, and every 100 ms for riding the gain) for EBU, astats (sample peak, RMS)
    otherwise. Running both cost each pass over a 10-minute 44.1 kHz stereo file about
    2.2 s more here (astats alone)."""
    norm = plan.normalization
    assert norm is not None
    meters = ("ebu",) if norm.kind == "ebu" else ("levels",)
    with _ffmpeg_problems(ctx, job):
        before, frames = measure_input(source, plan, meters, deadline_seconds=ctx.config.ffmpeg_timeout_seconds,
                                       should_stop=progress.should_stop)
    try:
        with _ffmpeg_problems(ctx, job):
            gain, correction = aimed_gain(source, partial, plan, before, frames, ctx.limits,
                                          deadline_seconds=ctx.config.ffmpeg_timeout_seconds,
                                          should_stop=progress.should_stop)
    except ffmpeg.NotMeasurable as exc:
        notes.append(f"normalize skipped: {exc}.")
        _encode(ctx, job, source, partial, plan, progress)
        return None
    for attempt in range(1, MAX_ENCODES + 1):
        envelope = None
        if gain.curve:
            envelope = loudness.write_envelope(partial.with_name(f"{partial.stem}.gain.f32"), gain.curve)
        after = _encode_measured(ctx, job, source, partial, replace(plan, filters=gain.filters, envelope=envelope),
                                 progress, meters)
        reached = {"ebu": after.integrated, "rms": after.rms, "peak": after.peak}[norm.kind]
        miss = norm.level - reached if reached is not None else 0.0
        if attempt == MAX_ENCODES or abs(miss) <= CORRECT_BEYOND[norm.kind]:
            break
        correction += miss
        gain = ffmpeg.gain_filters(norm, before, plan, correction, frames)
    measured = {
        "integrated_lufs": after.integrated, "true_peak_dbtp": after.true_peak,
        "loudness_range_lu": after.loudness_range, "peak_dbfs": after.peak, "rms_dbfs": after.rms,
        "input_integrated_lufs": before.integrated, "input_peak_dbfs": before.peak, "input_rms_dbfs": before.rms,
    }
    return {"type": norm.kind, "target": norm.level, "method": gain.method, "encodes": attempt,
            **{name: value for name, value in measured.items() if value is not None}}


# A lossy encoder takes some loudness, which a gain aimed at the target then misses by: AAC at
# 192 kbit/s took 0.3 LU from 10 minutes of pink noise, where ffmpeg-normalize's result was 0.2
# off. So before a lossy encode of a minute or more, PILOT_SECONDS from its middle are encoded
# with the gain twice side by side, as planned and as 32-bit PCM, and both measured; the gain
# makes up the difference (0.5 s on 10 minutes here, where a second encode of the whole takes
# 6-9 s). The result is measured anyway, and encoded again if it still misses (CORRECT_BEYOND).
PILOT_SECONDS = 20
PILOT_MAX_LOSS = 1.0  # LU: a pilot that measured more is not trusted for the whole


def aimed_gain(source: Path, work: Path, plan: ffmpeg.Plan, levels: ffmpeg.Levels, frames: loudness.Frames,
               limits: ffmpeg.Limits, *, deadline_seconds: float,
               should_stop: Callable[[], bool] | None = None) -> tuple[ffmpeg.Gain, float]:
    """The gain that brings the measured input to the planned normalization's target, and the
    correction (dB) it already holds: for an EBU gain (from the input's 100 ms reports) before a
    lossy encode of a minute or more, the pilot's. ffmpeg.NotMeasurable for a silent input."""
    norm = plan.normalization
    assert norm is not None
    gain = ffmpeg.gain_filters(norm, levels, plan, frames=frames)
    if norm.kind != "ebu" or not frames or plan.target.lossless or plan.duration < ffmpeg.SPLIT_SECONDS:
        return gain, 0.0
    correction = pilot_correction(source, work, plan, gain, levels, frames, limits,
                                  deadline_seconds=deadline_seconds, should_stop=should_stop)
    return (ffmpeg.gain_filters(norm, levels, plan, correction, frames) if correction else gain), correction


def pilot_correction(source: Path, work: Path, plan: ffmpeg.Plan, gain: ffmpeg.Gain, levels: ffmpeg.Levels,
                     frames: loudness.Frames, limits: ffmpeg.Limits, *, deadline_seconds: float,
                     should_stop: Callable[[], bool] | None = None) -> float:
    """The dB to add to the target so that an encode with `gain` lands on it: the loudness that
    encoding PILOT_SECONDS from the middle took, and what rounding the input's loudness (`levels`,
    to 0.1 LU) left out of the gain; 0 if the pilot says nothing trustworthy. `work` names the
    pilot's files (removed afterwards); `frames` are the input's 100 ms reports."""
    offset = int(plan.duration / 2) - PILOT_SECONDS // 2
    first = offset * loudness.FRAMES_PER_SECOND
    files = {name: work.with_name(f"{work.name}.pilot-{name}") for name in ("lossy", "pcm", "gain")}
    envelope = loudness.write_envelope(files["gain"], gain.curve[first:]) if gain.curve else None
    excerpt = replace(plan, start=(plan.start or 0.0) + offset, duration=PILOT_SECONDS, filters=gain.filters,
                      envelope=envelope)
    pcm = replace(excerpt, codec="pcm_f32le", sample_fmt=None, bitrate_k=None, codec_args=(), tags=(),
                  target=catalog.TARGETS["wav"])
    measured = [loudness.Frames(), loudness.Frames()]
    try:
        runner.run_side_by_side(
            [ffmpeg.convert_args(source, files["lossy"], excerpt, limits),
             ffmpeg.convert_args(source, files["pcm"], pcm, limits)],
            deadline_seconds=deadline_seconds, should_stop=should_stop, log_lines=[lambda _line: None] * 2)
        whole_excerpt = replace(excerpt, start=None, stream=0, filters=(), envelope=None)
        runner.run_side_by_side(
            [ffmpeg.measure_args(files[name], ("ebu",), whole_excerpt) for name in ("lossy", "pcm")],
            deadline_seconds=deadline_seconds, should_stop=should_stop, log_lines=[part.feed for part in measured])
    finally:
        for path in files.values():
            path.unlink(missing_ok=True)
    count = min(len(part) for part in measured)
    # the first three reports are not yet a whole 400 ms block
    reached, planned = (loudness.integrated_of(part.momentary[loudness.BLOCK - 1:count]) for part in measured)
    whole = loudness.integrated_of(frames.momentary)
    if planned is None or reached is None or whole is None or levels.integrated is None:
        return 0.0
    loss = planned - reached
    return loss + levels.integrated - whole if abs(loss) <= PILOT_MAX_LOSS else 0.0


def measure_input(source: Path, plan: ffmpeg.Plan, meters: tuple[str, ...], *, deadline_seconds: float,
                  should_stop: Callable[[], bool] | None = None) -> tuple[ffmpeg.Levels, loudness.Frames]:
    """The planned audio's levels and, for EBU, ebur128's 100 ms reports (none otherwise).
    A minute or more of EBU is measured as two halves side by side, one per core."""
    if meters == ("ebu",) and plan.duration >= ffmpeg.SPLIT_SECONDS:
        halves = [loudness.Frames(), loudness.Frames()]
        commands, each = ffmpeg.measure_halves_args(source, plan)
        logs = runner.run_side_by_side(commands, deadline_seconds=deadline_seconds, should_stop=should_stop,
                                       log_lines=[half.feed for half in halves])
        frames = loudness.joined(halves, each)
        return ffmpeg.joined_levels(frames, logs), frames
    frames = loudness.Frames()
    log = runner.run_for_log(ffmpeg.measure_args(source, meters, plan), deadline_seconds=deadline_seconds,
                             should_stop=should_stop, log_line=frames.feed if meters == ("ebu",) else None)
    return ffmpeg.parse_levels(log), frames


TEXT_TYPES = ("text/plain",)
TEXT_MAX_BYTES = 256 * 1024


def _is_text(item: InputFile) -> bool:
    content_type = (item.content_type or "").split(";")[0].strip().lower()
    return content_type in TEXT_TYPES or (item.filename or "").lower().endswith(".txt")


def _speak(ctx: Context, text: Path, options: dict[str, Any], wav: Path, progress: _Progress) -> Path:
    """Speak a plain-text input with espeak-ng; the WAV is then converted like any input."""
    if text.stat().st_size > TEXT_MAX_BYTES:
        raise JobProblem(Code.TEXT_INVALID, f"The text is longer than {TEXT_MAX_BYTES // 1024} KiB.")
    try:
        text.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobProblem(Code.TEXT_INVALID, "The text input is not UTF-8 plain text.") from exc
    voice = catalog.TTS_VOICES[options.get("language_tts") or catalog.DEFAULTS["language_tts"]]
    try:
        runner.run(ffmpeg.tts_args(text, wav, voice), deadline_seconds=ctx.config.ffmpeg_timeout_seconds,
                   should_stop=progress.should_stop)
    except runner.ProcessStopped as exc:
        raise Canceled() from exc
    except runner.ProcessFailed as exc:
        log.warning("espeak-ng failed: %s", exc.stderr_tail)
        raise JobProblem(Code.TEXT_INVALID, "The text could not be spoken.") from exc
    return wav


def _metadata(plan: ffmpeg.Plan, duration: float, size: int) -> dict[str, Any]:
    """The output's properties: what was encoded (the tests check each with ffprobe) and how
    long ffmpeg reported it to be."""
    data: dict[str, Any] = {
        "duration": round(duration, 3),
        "sample_rate": plan.sample_rate,
        "channels": plan.channels,
        "codec": plan.codec_name,
        "bitrate": round(size * 8 / duration) if duration > 0 else None,
    }
    if plan.bit_depth:
        data["bit_depth"] = plan.bit_depth
    return data


def _discard_outputs(ctx: Context, session: Session, job_id: str) -> None:
    session.expire_all()
    for output in session.scalars(select(OutputFile).where(OutputFile.job_id == job_id)):
        remove_quietly(ctx.storage.output_path(output.storage_key))
        session.delete(output)
    session.commit()



# Callbacks --------------------------------------------------------------------------

def announce(ctx: Context, session: Session, job_id: str, *, last: bool = False) -> None:
    """Queue the job's callback if its new status is one the callback wants to hear about.

    The `last` status of this task is delivered by it at once, unless earlier changes were
    announced too and may still wait in the queue: a callback would otherwise overtake them.
    That spares a queue job of its own: RQ's bookkeeping costs about 5 ms of CPU per job here,
    with hiredis (bench/throughput.py's clips cost ffmpeg about 200). A retry is queued as before."""
    # The job is in the session as the task (or the sweeper) has just stored it: its status set
    # by the transition, its lists as the task wrote them. What the body shows of a started job
    # changes only by this task (a cancel is a transition that the task's own would have lost),
    # so the body is built from it without reloading the job and its three lists.
    job = session.get(Job, job_id)
    if job is None or not job.callback or not callbacks.wanted(job):
        return
    body = callbacks.body(job, ctx.config)
    if last and not callbacks.hears_every_change(job):
        _deliver(ctx, session, job_id, job.callback, body, 1, job.status)
    else:
        enqueue(ctx.config, "workers.tasks.deliver_callback", job_id, body)


def deliver_callback(job_id: str, body: str, attempt: int = 1) -> int | None:
    """POST `body` (the job as it was when its status changed), signed when a secret is set,
    to the job's callback.

    Each attempt re-checks the URL with the outbound guard and is written to the job's
    history. A time-out or 5xx is retried later from the queue; a 4xx or a refused URL is final.
    """
    ctx = context()
    with ctx.sessions() as session:
        url = session.scalar(select(Job.callback).where(Job.id == job_id))
        return _deliver(ctx, session, job_id, url, body, attempt) if url else None


def _deliver(ctx: Context, session: Session, job_id: str, url: str, body: str, attempt: int,
             status: str | None = None) -> int | None:
    """One attempt (deliver_callback's), noted in the job's history through `session`;
    `status`: the job's, if the caller knows it."""
    session.commit()  # no transaction (nor a PostgreSQL connection) held during the request
    raw = body.encode("utf-8")
    headers = {"Content-Type": "application/json"}
    if ctx.config.webhook_secret:
        headers["X-Oc-Signature"] = hmac.new(ctx.config.webhook_secret.encode(), raw, hashlib.sha256).hexdigest()
    code: int | None = None
    retry = False
    try:
        code = outbound.post(
            url, raw, headers, allow=outbound.Allowance.parse(ctx.config.outbound_allow),
            timeout=FIRST_CALLBACK_TIMEOUT if attempt == 1 else CALLBACK_TIMEOUT,
        )
        outcome, retry = f"answered {code}", code >= 500
    except outbound.OutboundRefused as exc:
        outcome = f"not sent: {exc}"
    except outbound.OutboundFailed as exc:
        outcome, retry = f"failed: {exc}", True
    delays = ctx.config.callback_retry_delays
    if retry and attempt <= len(delays):
        outcome += f"; retry in {delays[attempt - 1]} s"
        enqueue_in(ctx.config, delays[attempt - 1], "workers.tasks.deliver_callback", job_id, body, attempt + 1)
    record_note(session, job_id, f"callback attempt {attempt} ({_status_of(body)}): {outcome}", status)
    session.commit()
    return code


def _status_of(body: str) -> str:
    """The status a callback body reports, for the history line."""
    data = json.loads(body)
    status = data.get("status")
    return str(status.get("code") if isinstance(status, dict) else status)
