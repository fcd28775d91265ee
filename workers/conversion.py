"""Converting one input for one conversion: probe it, plan each audio stream, encode each
(taking a conversion made while the upload arrived, or normalizing), and check the result."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs_api import catalog
from jobs_api.inputs import display_name
from jobs_api.lifecycle import record_note
from jobs_api.models import Conversion, InputFile
from workers import encoding, normalization, speech
from workers.ffmpeg import runner
from workers.ffmpeg.plan import Limits, Plan, PlanInvalid, SourceInfo, plan_conversion, with_tags
from workers.ffmpeg.probe import NotAudio, probe
from workers.problems import ErrorCode, Failure, JobProblem, Stage, failures_of, plan_problem
from workers.upload_conversion import UploadConversion

if TYPE_CHECKING:
    from workers.run import ConversionRun


@dataclass(frozen=True)
class Result:
    """One converted audio stream, in the work folder until it is published."""

    path: Path
    filename: str
    input_id: str
    stream: int
    metadata: dict[str, Any]


@dataclass
class Step:
    """One conversion of one input: what each of the input's streams shares."""

    conversion: Conversion
    options: dict[str, Any]
    item: InputFile
    source: Path  # what ffmpeg reads: the input, or the speech made of its text
    notes: list[str]  # options that did not apply, for the job's warnings


def convert_input(run: ConversionRun, conversion: Conversion, options: dict[str, Any],
                  item: InputFile) -> list[Result]:
    """Convert every audio stream of one input."""
    target = catalog.TARGETS[conversion.target]
    source = run.services.storage.readable_input(item.storage_key or "", run.work)
    step = Step(conversion, options, item, source, catalog.ignored_options(target, options, conversion.metadata_))
    # What claims to be text is probed first: a WAV sent as text/plain is audio, not text to speak.
    streams = _audio_streams(run, step.source) if speech.is_text(item) else None
    if speech.is_text(item) and streams is None:
        step.source = speech.speak(run, step.source, options, run.work / f"{conversion.id}-{item.id}-speech.wav")
    elif "language_tts" in conversion.options:
        step.notes.append("language_tts ignored: the input is audio, not plain text.")
    if streams is None:
        with failures_of(Stage.PROBE, deadline=run.deadline):
            streams = probe(step.source, run.job.id)
    run.budget.take_streams(len(streams))
    stem = display_name(options.get("output_filename") or "") or Path(item.filename or "file").stem or "file"
    results = []
    for stream in streams:
        name = f"{stem}-track{stream.stream + 1}" if len(streams) > 1 else stem
        partial = run.work / f"{conversion.id}-{item.id}-{stream.stream}.{target.extension}"
        metadata = convert_stream(run, step, stream, partial)
        results.append(Result(partial, f"{name}.{target.extension}", item.id, stream.stream, metadata))
    for note in dict.fromkeys(step.notes):
        run.warn("conversion", conversion.id, ErrorCode.OPTION_IGNORED, note)
    run.session.commit()
    return results


def _audio_streams(run: ConversionRun, source: Path) -> list[SourceInfo] | None:
    """The audio streams of `source`, or None where it holds none that ffprobe can read."""
    try:
        return probe(source, run.job.id)
    except (runner.ProcessFailed, NotAudio):
        return None


def convert_stream(run: ConversionRun, step: Step, stream: SourceInfo, partial: Path) -> dict[str, Any]:
    """Encode one audio stream to `partial`; returns the result's metadata."""
    limits = run.limits
    plan = plan_for(limits, step.conversion, step.options, stream)
    run.budget.take_seconds(plan.duration)
    loudness = None
    if plan.normalization is not None:
        loudness = normalization.encode_normalized(run, step.source, partial, plan, step.notes)
    elif not _take_upload_conversion(run, step, plan, partial):
        encoding.encode(run, step.source, partial, plan)
    if partial.stat().st_size >= limits.max_output_bytes:
        raise JobProblem(Failure.OUTPUT_TOO_LARGE, limit=run.config.max_output_bytes)
    run.budget.wrote(partial.stat().st_size)
    # ffmpeg's own progress report says how much it wrote: no ffprobe of the output, which
    # costs as much as a short clip's encoding (bench/small_file.py).
    written, expected = run.progress.reached, plan.duration
    if not stream.duration:  # a length the input does not say: the limit is all that was planned
        if written >= run.limits.max_duration - 0.5:
            raise JobProblem(Failure.TOO_LONG_UNSAID, limit=run.limits.max_duration)
    elif expected - written > max(0.5, 0.1 * expected):
        raise JobProblem(Failure.TRUNCATED, written=written, expected=expected)
    metadata = encoding.metadata_of(plan, written, partial.stat().st_size)
    if loudness:
        metadata["loudness"] = loudness
    return metadata


def _take_upload_conversion(run: ConversionRun, step: Step, plan: Plan, partial: Path) -> bool:
    """Use the conversion made while the upload arrived, if it was made of this very input
    with this plan (workers/upload_conversion.py)."""
    # The limits it was made with (not what is left of the budget): the command must match.
    early = UploadConversion(run.services.storage, run.job.id, run.services.limits, run.deadline)
    reached = early.take(step.conversion.id, step.source, plan, partial, run.stop_requested)
    if reached is None:
        return False
    run.progress.reached = reached
    with run.services.sessions() as session:
        record_note(session, run.job.id, "Converted while the upload arrived.")
        session.commit()
    return True


def plan_for(limits: Limits, conversion: Conversion, options: dict[str, Any], source: SourceInfo) -> Plan:
    """How ffmpeg converts `source` for the conversion, or a JobProblem for the user."""
    if source.duration > limits.max_duration:
        raise JobProblem(Failure.TOO_LONG, seconds=source.duration, limit=limits.max_duration)
    target = catalog.TARGETS[conversion.target]
    try:
        return with_tags(plan_conversion(target, options, source, limits), conversion.metadata_)
    except PlanInvalid as exc:
        raise plan_problem(exc) from exc
