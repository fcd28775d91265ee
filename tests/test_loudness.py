"""Riding the gain: the gates agree with ffmpeg's meter, and the predicted result is what
ffmpeg then measures on the audio the curve was multiplied into."""
from __future__ import annotations

import subprocess
from array import array
from pathlib import Path

import pytest
from conftest import TEST_RUNS, make_audio, probe
from conftest import loudness as measured_loudness

from jobs_api.catalog import TARGETS
from workers import loudness
from workers.ffmpeg import runner
from workers.ffmpeg.meters import (
    FRAME_LOG,
    SPLIT_SECONDS,
    Levels,
    joined_levels,
    measure_args,
    measure_halves_args,
    parse_levels,
)
from workers.ffmpeg.plan import Limits, plan_conversion
from workers.ffmpeg.probe import parse_probe, probe_args

# Seeded: the same audio every run (the gates' agreement, within 0.2 LU, was 0.2000001 off once in CI on a random draw)
NOISE = "anoisesrc=color=pink:duration={seconds}:amplitude=0.5:sample_rate={rate}:seed=1,volume='{level}':eval=frame"
STEPS = NOISE.format(seconds=30, rate=48000, level="if(lt(mod(t,10),5),1,0.12)")  # 5 s loud, 5 s 18 dB down
SWELL = NOISE.format(seconds=40, rate=44100, level="0.1+0.9*abs(sin(t*0.3))")
LIMITS = Limits(max_duration=3600, max_output_bytes=1 << 30, max_channels=8, max_sample_rate=192000)


def logged(path: Path) -> tuple[Levels, loudness.Frames]:
    frames = loudness.Frames()
    log = runner.run_for_log(["ffmpeg", "-hide_banner", "-nostats", "-i", str(path),
                              "-af", FRAME_LOG["ebu"], "-f", "null", "-"],
                             sees=TEST_RUNS, deadline_seconds=60, log_line=frames.feed)
    return parse_levels(log), frames


@pytest.fixture(scope="module", params=[STEPS, SWELL], ids=["steps", "swell"])
def wide(request: pytest.FixtureRequest, audio_dir: Path) -> Path:
    return make_audio(audio_dir / f"wide-{request.param_index}.wav", source=request.param)


def test_the_gates_agree_with_ffmpeg(wide: Path) -> None:
    levels, frames = logged(wide)
    assert len(frames) >= 299
    assert loudness.integrated_of(frames.momentary) == pytest.approx(levels.integrated, abs=0.1)
    assert loudness.range_of(frames.short_term) == pytest.approx(levels.loudness_range, abs=0.2)


@pytest.mark.parametrize("target, target_range", [(-16.0, 7.0), (-23.0, 4.0)])
def test_the_ride_lands_on_the_target_and_within_the_range(wide: Path, tmp_path: Path, target: float,
                                                           target_range: float) -> None:
    levels, frames = logged(wide)
    assert levels.integrated is not None and levels.loudness_range is not None
    assert levels.loudness_range > target_range + 1
    curve = loudness.ride(frames, levels.integrated, levels.loudness_range, target, target_range)
    rate = int(probe(wide)["sample_rate"])
    envelope = loudness.write_envelope(tmp_path / "gain.f32", curve)
    out = tmp_path / "out.wav"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(wide),
                    "-f", "f32le", "-ar", "10", "-ac", "1", "-i", str(envelope), "-filter_complex",
                    f"[1:a]aresample={rate},pan=stereo|c0=c0|c1=c0[g];[0:a][g]amultiply", "-c:a", "pcm_f32le",
                    str(out)], check=True)
    result = measured_loudness(out)
    assert result["integrated"] == pytest.approx(target, abs=0.3)
    assert result["lra"] <= target_range + 0.5  # the range is a ceiling
    assert result["true_peak"] == pytest.approx(loudness.peak_after(frames, curve), abs=1.0)
    # the curve glides: no step between two 100 ms frames over 1.5 dB (4-5 dB unsmoothed here)
    assert max(abs(a - b) for a, b in zip(curve, curve[1:], strict=False)) < 1.5


def test_quiet_passages_are_not_lifted_past_the_range_gate() -> None:
    frames = loudness.Frames()
    for level, count in ((-20.0, 100), (-90.0, 100), (-20.0, 100)):  # a silent gap
        frames.momentary.extend([level] * count)
        frames.short_term.extend([level] * count)
        frames.true_peak.extend([level + 10] * count)
    curve = loudness.ride(frames, -20.0, 40.0, -20.0, 5.0)
    assert max(curve) - min(curve) <= loudness.RANGE_GATE + 0.01  # at most the gate's depth of lift
    assert curve[150] > curve[0]  # the gap is lifted, towards the gate


def test_the_envelope_holds_linear_factors_and_outlasts_the_audio(tmp_path: Path) -> None:
    path = loudness.write_envelope(tmp_path / "gain.f32", [0.0, -6.0, 6.0])
    factors = array("f")
    factors.frombytes(path.read_bytes())
    assert len(factors) == 3 + 2 * loudness.FRAMES_PER_SECOND
    assert list(factors[:3]) == pytest.approx([1.0, 0.501, 1.995], abs=0.001)
    assert factors[-1] == factors[2]


@pytest.mark.parametrize("options", [{}, {"start": "00:00:05.5", "end": "00:01:10"}])
def test_halves_measured_side_by_side_make_the_single_pass(options: dict[str, str], audio_dir: Path) -> None:
    long = make_audio(audio_dir / "long-swell.wav",
                      source=NOISE.format(seconds=75, rate=44100, level="0.1+0.9*abs(sin(t*0.3))"))
    info = parse_probe(runner.run(probe_args(long), sees=TEST_RUNS, deadline_seconds=30))
    plan = plan_conversion(TARGETS["flac"], {"normalize": True, **options}, info, LIMITS)
    assert plan.duration >= SPLIT_SECONDS
    single = loudness.Frames()
    whole = parse_levels(runner.run_for_log(measure_args(long, ("ebu",), plan), sees=TEST_RUNS, deadline_seconds=60,
                                                   log_line=single.feed))
    halves = [loudness.Frames(), loudness.Frames()]
    commands, each = measure_halves_args(long, plan)
    logs = runner.run_side_by_side(commands, sees=TEST_RUNS, deadline_seconds=60,
                                   log_lines=[half.feed for half in halves])
    joined = loudness.joined(halves, each)
    assert list(joined.momentary) == list(single.momentary)
    assert list(joined.short_term) == list(single.short_term)
    levels = joined_levels(joined, logs)
    assert levels.integrated == pytest.approx(whole.integrated, abs=0.1)
    assert levels.loudness_range == pytest.approx(whole.loudness_range, abs=0.2)
    assert levels.true_peak == whole.true_peak
