"""ffmpeg's meters: ebur128 (EBU R128 loudness, range, true peak) and astats (sample peak,
RMS); their command lines and what they report."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from workers import loudness
from workers.ffmpeg.commands import seconds, shape, source_args
from workers.ffmpeg.plan import Plan


@dataclass(frozen=True)
class Levels:
    """What ffmpeg's ebur128 and astats meters reported; None where a meter did not run."""

    integrated: float | None = None  # LUFS
    loudness_range: float | None = None  # LU
    true_peak: float | None = None  # dBTP
    peak: float | None = None  # dBFS, sample peak
    rms: float | None = None  # dBFS


METERS = {
    "ebu": "ebur128=peak=true:framelog=verbose",  # verbose: the 100 ms reports stay out of an info log
    "levels": "astats=measure_perchannel=none",
}
FRAME_LOG = {"ebu": "ebur128=peak=true:framelog=info"}  # every 100 ms, for riding the gain


def measure_args(source: Path, meters: tuple[str, ...], plan: Plan | None = None) -> list[str]:
    """Decode (the planned part of) `source` through the meters; they report on stderr.
    Measuring an input for a plan, ebur128 also logs each 100 ms (loudness.Frames)."""
    args = ["ffmpeg", "-hide_banner", "-loglevel", "info", "-nostdin", "-nostats"]
    args += source_args(source, plan.start, plan.stream) if plan else source_args(source, None)
    chain = [METERS[m] for m in meters]
    if plan is not None:
        args += ["-t", seconds(plan.duration)]
        chain = [shape(plan), *(FRAME_LOG.get(m, METERS[m]) for m in meters)]
    return [*args, "-af", ",".join(chain), "-f", "null", "-"]


SPLIT_SECONDS = 60.0  # EBU-measure inputs this long in two halves at once (measure_halves_args)


def measure_halves_args(source: Path, plan: Plan) -> tuple[list[list[str]], int]:
    """EBU-measure the planned audio as two halves side by side, the second starting a
    short-term window early (one per core, in about half the time of one pass); and the
    reports the first covers (loudness.joined)."""
    start, half = plan.start or 0.0, round(plan.duration / 2, 1)
    early = loudness.WINDOW / loudness.FRAMES_PER_SECOND
    return [measure_args(source, ("ebu",), replace(plan, duration=half)),
            measure_args(source, ("ebu",), replace(plan, start=start + half - early,
                                                    duration=plan.duration - half + early)),
            ], round(half * loudness.FRAMES_PER_SECOND)


def joined_levels(frames: loudness.Frames, logs: list[str]) -> Levels:
    """The EBU levels of halves measured side by side: integrated loudness and range from
    their joined 100 ms reports (as ebur128 gates them), true peak the higher half's."""
    peaks = [level.true_peak for level in map(parse_levels, logs) if level.true_peak is not None]
    integrated = loudness.integrated_of(frames.momentary)
    loudness_range = loudness.range_of(frames.short_term)
    return Levels(integrated=None if integrated is None else round(integrated, 1),
                  loudness_range=None if loudness_range is None else round(loudness_range, 1),
                  true_peak=max(peaks, default=None))


def meter_args(meters: tuple[str, ...]) -> list[str]:
    """Measure the Matroska stream `convert_args(..., copy_fd)` writes, read on stdin."""
    return ["ffmpeg", "-hide_banner", "-loglevel", "info", "-nostats", "-format_whitelist", "matroska",
            "-protocol_whitelist", "pipe", "-f", "matroska", "-i", "pipe:0",
            "-af", ",".join(METERS[m] for m in meters), "-f", "null", "-"]


def parse_levels(log: str) -> Levels:
    def number(pattern: str) -> float | None:
        found = re.findall(pattern, log)
        if not found:
            return None
        value = float(found[-1])  # "-inf" parses as float too
        return None if value == float("-inf") else value

    return Levels(
        integrated=number(r"\bI:\s+(-?[\d.]+|-inf) LUFS"),
        loudness_range=number(r"\bLRA:\s+(-?[\d.]+) LU"),
        true_peak=number(r"True peak:\s+Peak:\s+(-?[\d.]+|-inf) dBFS"),
        peak=number(r"Peak level dB:\s+(-?[\d.]+|-inf)"),
        rms=number(r"RMS level dB:\s+(-?[\d.]+|-inf)"),
    )
