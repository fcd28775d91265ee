"""Running an encode for a job: ffmpeg with the job's deadline, progress and cancel, its
failures turned into the job's problems; and the metadata of what was encoded."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.ffmpeg import runner
from workers.ffmpeg.commands import convert_args
from workers.ffmpeg.meters import Levels, meter_args, parse_levels
from workers.ffmpeg.plan import Plan
from workers.problems import Stage, failures_of

if TYPE_CHECKING:
    from workers.run import ConversionRun


def encode(run: ConversionRun, source: Path, partial: Path, plan: Plan) -> None:
    run.progress.start(plan.duration)
    with failures_of(Stage.CONVERT, deadline=run.deadline):
        runner.run(convert_args(source, partial, plan, run.limits), sees=run.sees(source),
                   deadline_seconds=run.deadline, should_stop=run.stop_requested, on_line=run.progress.line)


def encode_measured(run: ConversionRun, source: Path, partial: Path, plan: Plan, meters: tuple[str, ...]) -> Levels:
    """Encode, and measure the result while it is made: the meter reads a copy of the encoded
    stream on the other core, so it measures what the file holds without a pass of its own."""
    run.progress.start(plan.duration)
    limits = run.limits
    with failures_of(Stage.CONVERT, deadline=run.deadline, output=partial,
                     max_output_bytes=limits.max_output_bytes):
        log = runner.run_metered(
            lambda fd: convert_args(source, partial, plan, limits, copy_fd=fd), meter_args(meters),
            sees=run.sees(source), deadline_seconds=run.deadline, should_stop=run.stop_requested,
            on_line=run.progress.line)
    return parse_levels(log)


def metadata_of(plan: Plan, duration: float, size: int) -> dict[str, Any]:
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
