"""Loudness normalization: the policy (which gain reaches the target, and how) and the passes
that apply it (measure the input, aim the gain, encode while measuring, correct).

EBU R128 (`ebu`) is measured with ebur128, whose 100 ms reports also let a wide loudness range
be narrowed by riding the gain (`loudness.ride`); `rms` and `peak` with astats. `loudness.py`
holds the pure maths; the command lines are `ffmpeg.meters`'.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs_api import catalog
from workers import encoding, loudness
from workers.ffmpeg import runner
from workers.ffmpeg.commands import convert_args
from workers.ffmpeg.meters import SPLIT_SECONDS, Levels, joined_levels, measure_args, measure_halves_args, parse_levels
from workers.ffmpeg.plan import Limits, Normalization, Plan
from workers.ffmpeg.sandbox import Sees
from workers.problems import Stage, failures_of

if TYPE_CHECKING:
    from workers.run import ConversionRun


# Below this the meters have nothing to go on: EBU's integrated loudness needs 400 ms
# blocks above the -70 LUFS gate, RMS and peak need any sound at all.
SILENT = -70.0
# Riding the gain needs the 3 s short-term loudness; shorter clips keep their loudness range.
RIDE_MIN_SECONDS = 3.0
RMS_CEILING = -0.3  # dBFS: where rms normalization starts limiting rather than clipping
TRUE_PEAK_MARGIN = 0.5  # dB a lossy gain and the limiter keep below the limit: lossy encoders overshoot


class NotMeasurable(Exception):
    """The input is silent (or too short to measure), so it cannot be normalized."""


@dataclass(frozen=True)
class Gain:
    """How a measured input reaches its target."""

    filters: tuple[str, ...]  # applied after the curve, if there is one
    method: str  # linear, limited or dynamic
    curve: tuple[float, ...] = ()  # dB per 100 ms (dynamic): loudness.write_envelope


def gain_filters(
    norm: Normalization, levels: Levels, plan: Plan, correction: float = 0.0,
    frames: loudness.Frames | None = None,
) -> Gain:
    """The gain that brings the measured input to the target, and how.

    `correction` (dB) is added to the target when a first result measured off target.
    `frames` (ebur128's 100 ms reports) let a wide loudness range be narrowed.
    """
    target = norm.level + correction
    if norm.kind == "ebu":
        if levels.integrated is None or levels.integrated <= SILENT:
            raise NotMeasurable("the input is silent or shorter than 0.4 s")
        gain = target - levels.integrated
        peak_after = (levels.true_peak if levels.true_peak is not None else 0.0) + gain
        # a lossy encoder's overshoot must fit under the limit too
        highest = norm.true_peak - (0.0 if plan.target.lossless else TRUE_PEAK_MARGIN)
        wide = levels.loudness_range is not None and levels.loudness_range > norm.loudness_range
        if wide and plan.duration >= RIDE_MIN_SECONDS and frames:
            assert levels.loudness_range is not None
            curve = loudness.ride(frames, levels.integrated, levels.loudness_range, target, norm.loudness_range)
            over = loudness.peak_after(frames, curve) > highest
            limiter = _limiter(norm.true_peak - TRUE_PEAK_MARGIN, plan.sample_rate) if over else ()
            return Gain(limiter, "dynamic", tuple(curve))
        if peak_after <= highest:
            return Gain((_volume(gain),), "linear")
        # Transients over the limit: our own oversampled limiter. loudnorm's dynamic mode
        # misses the target by several LU on such material.
        return Gain((_volume(gain), *_limiter(norm.true_peak - TRUE_PEAK_MARGIN, plan.sample_rate)), "limited")
    measured = levels.rms if norm.kind == "rms" else levels.peak
    if measured is None or measured <= SILENT - 20:
        raise NotMeasurable("the input is silent")
    gain = target - measured
    if norm.kind == "rms" and (levels.peak or 0.0) + gain > RMS_CEILING:
        return Gain((_volume(gain), *_limiter(RMS_CEILING, plan.sample_rate)), "limited")
    return Gain((_volume(gain),), "linear")


def _volume(gain_db: float) -> str:
    return f"volume={gain_db:.2f}dB"


def _limiter(ceiling_db: float, rate: int) -> tuple[str, ...]:
    # Oversampled four times, so that the limit holds between samples too (true peak).
    limit = 10 ** (ceiling_db / 20)
    return (f"aresample={rate * 4}", f"alimiter=limit={limit:.5f}:attack=1:release=50:level=false:latency=true",
            f"aresample={rate}")




@dataclass(frozen=True)
class Runs:
    """How the passes of one normalization run ffmpeg."""

    limits: Limits
    deadline_seconds: float
    sees: Sees  # the input, and the work folder the passes write in
    should_stop: Callable[[], bool] | None = None


@dataclass(frozen=True)
class Measured:
    """The planned audio's levels and, for EBU, ebur128's 100 ms reports (none otherwise)."""

    levels: Levels
    frames: loudness.Frames


# How far a normalized result may be from its target before it is encoded again with
# the difference added: half the promised tolerance (1 LU for EBU, 0.5 dB otherwise).
# A linear gain lands on target at once; limiting and lossy encoders lose some loudness.
CORRECT_BEYOND = {"ebu": 0.5, "rms": 0.25, "peak": 0.25}
MAX_ENCODES = 3


def encode_normalized(run: ConversionRun, source: Path, partial: Path, plan: Plan,
                      notes: list[str]) -> dict[str, Any] | None:
    """Measure the input, encode with the gain that reaches the target, measure the result
    while it is encoded, and encode again with the difference added while it misses.

    Input and result go through the one meter the kind needs: ebur128 (integrated, range,
    true peak, and every 100 ms for riding the gain) for EBU, astats (sample peak, RMS)
    otherwise; running both would cost every pass a second meter. Returns what was measured
    (the output's `metadata.loudness`), or None where the input cannot be normalized."""
    norm = plan.normalization
    assert norm is not None
    meters = ("ebu",) if norm.kind == "ebu" else ("levels",)
    runs = Runs(run.limits, run.deadline, run.sees(source), run.stop_requested)
    with failures_of(Stage.CONVERT, deadline=run.deadline):
        before = measure_input(source, plan, meters, runs)
        try:
            gain, correction = aimed_gain(source, partial, plan, before, runs)
        except NotMeasurable as exc:
            notes.append(f"normalize skipped: {exc}.")
            gain = None
    if gain is None:
        encoding.encode(run, source, partial, plan)
        return None
    for attempt in range(1, MAX_ENCODES + 1):
        envelope = None
        if gain.curve:
            envelope = loudness.write_envelope(partial.with_name(f"{partial.stem}.gain.f32"), gain.curve)
        after = encoding.encode_measured(run, source, partial, replace(plan, filters=gain.filters, envelope=envelope),
                                         meters)
        reached = {"ebu": after.integrated, "rms": after.rms, "peak": after.peak}[norm.kind]
        miss = norm.level - reached if reached is not None else 0.0
        if attempt == MAX_ENCODES or abs(miss) <= CORRECT_BEYOND[norm.kind]:
            break
        correction += miss
        gain = gain_filters(norm, before.levels, plan, correction, before.frames)
    measured = {
        "integrated_lufs": after.integrated, "true_peak_dbtp": after.true_peak,
        "loudness_range_lu": after.loudness_range, "peak_dbfs": after.peak, "rms_dbfs": after.rms,
        "input_integrated_lufs": before.levels.integrated, "input_peak_dbfs": before.levels.peak,
        "input_rms_dbfs": before.levels.rms,
    }
    return {"type": norm.kind, "target": norm.level, "method": gain.method, "encodes": attempt,
            **{name: value for name, value in measured.items() if value is not None}}


# A lossy encoder takes some loudness, which a gain aimed at the target then misses by (AAC
# at 192 kbit/s takes a few tenths of an LU from pink noise). So before a lossy encode of a
# minute or more, PILOT_SECONDS from its middle are encoded with the gain twice side by side,
# as planned and as 32-bit PCM, and both measured; the gain makes up the difference, at a
# fraction of the cost of a second encode of the whole. The result is measured anyway, and
# encoded again if it still misses (CORRECT_BEYOND).
PILOT_SECONDS = 20
PILOT_MAX_LOSS = 1.0  # LU: a pilot that measured more is not trusted for the whole


def aimed_gain(source: Path, work: Path, plan: Plan, measured: Measured, runs: Runs) -> tuple[Gain, float]:
    """The gain that brings the measured input to the planned normalization's target, and the
    correction (dB) it already holds: for an EBU gain (from the input's 100 ms reports) before a
    lossy encode of a minute or more, the pilot's. NotMeasurable for a silent input."""
    norm = plan.normalization
    assert norm is not None
    gain = gain_filters(norm, measured.levels, plan, frames=measured.frames)
    if norm.kind != "ebu" or not measured.frames or plan.target.lossless or plan.duration < SPLIT_SECONDS:
        return gain, 0.0
    correction = pilot_correction(source, work, plan, gain, measured, runs)
    return (gain_filters(norm, measured.levels, plan, correction, measured.frames) if correction else gain), correction


def pilot_correction(source: Path, work: Path, plan: Plan, gain: Gain, measured: Measured, runs: Runs) -> float:
    """The dB to add to the target so that an encode with `gain` lands on it: the loudness that
    encoding PILOT_SECONDS from the middle took, and what rounding the input's loudness (to
    0.1 LU) left out of the gain; 0 if the pilot says nothing trustworthy. `work` names the
    pilot's files (removed afterwards)."""
    offset = int(plan.duration / 2) - PILOT_SECONDS // 2
    first = offset * loudness.FRAMES_PER_SECOND
    files = {name: work.with_name(f"{work.name}.pilot-{name}") for name in ("lossy", "pcm", "gain")}
    envelope = loudness.write_envelope(files["gain"], gain.curve[first:]) if gain.curve else None
    excerpt = replace(plan, start=(plan.start or 0.0) + offset, duration=PILOT_SECONDS, filters=gain.filters,
                      envelope=envelope)
    pcm = replace(excerpt, codec="pcm_f32le", sample_fmt=None, bitrate_k=None, codec_args=(), tags=(),
                  target=catalog.TARGETS["wav"])
    parts = [loudness.Frames(), loudness.Frames()]
    try:
        runner.run_side_by_side(
            [convert_args(source, files["lossy"], excerpt, runs.limits),
             convert_args(source, files["pcm"], pcm, runs.limits)],
            sees=runs.sees, deadline_seconds=runs.deadline_seconds, should_stop=runs.should_stop,
            log_lines=[lambda _line: None] * 2)
        whole_excerpt = replace(excerpt, start=None, stream=0, filters=(), envelope=None)
        runner.run_side_by_side(
            [measure_args(files[name], ("ebu",), whole_excerpt) for name in ("lossy", "pcm")],
            sees=runs.sees, deadline_seconds=runs.deadline_seconds, should_stop=runs.should_stop,
            log_lines=[part.feed for part in parts])
    finally:
        for path in files.values():
            path.unlink(missing_ok=True)
    count = min(len(part) for part in parts)
    # the first three reports are not yet a whole 400 ms block
    reached, planned = (loudness.integrated_of(part.momentary[loudness.BLOCK - 1:count]) for part in parts)
    whole = loudness.integrated_of(measured.frames.momentary)
    integrated = measured.levels.integrated
    if planned is None or reached is None or whole is None or integrated is None:
        return 0.0
    loss = planned - reached
    return loss + integrated - whole if abs(loss) <= PILOT_MAX_LOSS else 0.0


def measure_input(source: Path, plan: Plan, meters: tuple[str, ...], runs: Runs) -> Measured:
    """Measure the planned audio. A minute or more of EBU is measured as two halves side by
    side, one per core."""
    if meters == ("ebu",) and plan.duration >= SPLIT_SECONDS:
        halves = [loudness.Frames(), loudness.Frames()]
        commands, each = measure_halves_args(source, plan)
        logs = runner.run_side_by_side(commands, sees=runs.sees, deadline_seconds=runs.deadline_seconds,
                                       should_stop=runs.should_stop, log_lines=[half.feed for half in halves])
        frames = loudness.joined(halves, each)
        return Measured(joined_levels(frames, logs), frames)
    frames = loudness.Frames()
    log = runner.run_for_log(measure_args(source, meters, plan), sees=runs.sees, deadline_seconds=runs.deadline_seconds,
                             should_stop=runs.should_stop, log_line=frames.feed if meters == ("ebu",) else None)
    return Measured(parse_levels(log), frames)
