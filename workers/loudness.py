"""Riding the gain: narrow a wide loudness range from what ebur128 logged every 100 ms.

loudnorm's dynamic mode does this job inside ffmpeg, but it works at 192 kHz, which makes it
cost several times what multiplying by a curve and encoding does (bench/RESULTS.md). The
measuring pass we run
anyway logs, every 100 ms, the loudness of the last 400 ms (momentary), of the last 3 s
(short-term) and the true peak of the last 100 ms. From those a gain per 100 ms is chosen
here, so that the predicted short-term loudness spans the target range and the predicted
integrated loudness is the target; ffmpeg then multiplies the audio by that curve (`amultiply`).
The predictions follow EBU Tech 3341/3342 (the gates of BS.1770); the result is measured anyway.
"""
from __future__ import annotations

import math
import re
import sys
from array import array
from collections.abc import Sequence
from itertools import accumulate
from pathlib import Path

FRAMES_PER_SECOND = 10  # ebur128 reports every 100 ms
BLOCK = 4  # frames in a momentary (400 ms) block
WINDOW = 30  # frames in a short-term (3 s) window
SMOOTHING = 5  # frames each side of one whose gains are averaged: the gain glides over a second
ABSOLUTE_GATE = -70.0  # LUFS
RANGE_GATE = 20.0  # LU under the short-term values' own loudness (Tech 3342)
INTEGRATED_GATE = 10.0  # LU under the blocks' own loudness (BS.1770)
RANGE_AIM = 0.3  # LU under the target range the prediction aims for

# t: 0.0999773  TARGET:-23 LUFS    M:-120.7 S:-120.7     I: -70.0 LUFS  ...  FTPK: -11.9 -11.9 dBFS  TPK: ...
FRAME_LINE = re.compile(r"\bM:\s*(\S+)\s+S:\s*(\S+)\s.*\bFTPK:((?:\s+\S+)+?)\s+dBFS")


class Frames:
    """ebur128's report every 100 ms (`ffmpeg.meters.FRAME_LOG`: logged at info, true peak), fed line by line."""

    def __init__(self) -> None:
        self.momentary = array("d")
        self.short_term = array("d")
        self.true_peak = array("d")  # of the loudest channel

    def __len__(self) -> int:
        return len(self.momentary)

    def feed(self, line: str) -> None:
        found = FRAME_LINE.search(line)
        if found:
            self.momentary.append(float(found[1]))
            self.short_term.append(float(found[2]))
            self.true_peak.append(max(float(value) for value in found[3].split()))


def joined(parts: Sequence[Frames], each: int) -> Frames:
    """One series from parts measured side by side, each covering `each` reports but the
    last. A part after the first starts a short-term window (3 s) before the previous one
    ends: its first WINDOW reports only fill its meter's window again. A part's meter also
    reads on to the end of the decoded packet in which its time ran out: that goes too."""
    whole = Frames()
    for index, part in enumerate(parts):
        start = WINDOW if index else 0
        end = None if index == len(parts) - 1 else start + each
        whole.momentary.extend(part.momentary[start:end])
        whole.short_term.extend(part.short_term[start:end])
        whole.true_peak.extend(part.true_peak[start:end])
    return whole


def ride(frames: Frames, integrated: float, loudness_range: float, target: float, target_range: float) -> list[float]:
    """Gains in dB, one per 100 ms frame, for audio measured as `integrated` LUFS over
    `loudness_range` LU: deviations from its loudness shrink to fit `target_range`, quiet
    passages under the range gate are not lifted further, and the whole lands on `target`."""
    count = len(frames)
    # Each frame's loudness: the short-term window centred on it (held at the ends).
    level = [frames.short_term[min(max(index + WINDOW // 2, WINDOW - 1), count - 1)] for index in range(count)]
    floor = integrated - RANGE_GATE
    deviation = [max(value, floor) - integrated for value in level]
    # Each frame's energy, for weighing its gain: the momentary block centred on it.
    energy = [10 ** (frames.momentary[min(max(index + BLOCK // 2, BLOCK - 1), count - 1)] / 10)
              for index in range(count)]
    aim = max(1.0, target_range - RANGE_AIM)
    ratio = min(1.0, aim / loudness_range)
    for _ in range(8):  # the gain is smoothed and the windows overlap: correct the ratio by prediction
        gains = _moving_mean([(ratio - 1.0) * value for value in deviation], SMOOTHING)
        predicted = range_of(_after(frames.short_term, gains, energy, WINDOW))
        if predicted is None or predicted <= aim + 0.1 or ratio == 0.0:
            break
        ratio = max(0.0, ratio * aim / predicted)
    offset = 0.0
    for _ in range(3):  # the absolute gate can move a block in or out: settle the offset
        reached = integrated_of(_after(frames.momentary, [gain + offset for gain in gains], energy, BLOCK))
        if reached is None or abs(target - reached) < 0.01:
            break
        offset += target - reached
    return [gain + offset for gain in gains]


def peak_after(frames: Frames, gains: Sequence[float]) -> float:
    """The highest true peak (dBTP) the gains give, frame by frame."""
    return max((peak + gain for peak, gain in zip(frames.true_peak, gains, strict=True)), default=-math.inf)


def write_envelope(path: Path, gains: Sequence[float], pad_seconds: int = 2) -> Path:
    """The gains as linear factors, 32-bit float little-endian at FRAMES_PER_SECOND, padded at
    the end with the last one so that the curve outlasts the audio's last partial frame."""
    factors = array("f", (10 ** (gain / 20) for gain in gains))
    factors.extend([factors[-1]] * (pad_seconds * FRAMES_PER_SECOND))
    if sys.byteorder == "big":
        factors.byteswap()
    with path.open("wb") as handle:
        factors.tofile(handle)
    return path


def integrated_of(blocks: Sequence[float]) -> float | None:
    """Integrated loudness of momentary (400 ms) block loudnesses, gated as in BS.1770."""
    above = [value for value in blocks if value > ABSOLUTE_GATE]
    if not above:
        return None
    gate = _energy_mean(above) - INTEGRATED_GATE
    return _energy_mean([value for value in above if value > gate])


def range_of(short_term: Sequence[float]) -> float | None:
    """Loudness range of short-term (3 s) loudnesses: 10th to 95th percentile, gated (Tech 3342)."""
    above = [value for value in short_term if value > ABSOLUTE_GATE]
    if not above:
        return None
    gate = _energy_mean(above) - RANGE_GATE
    kept = sorted(value for value in above if value > gate)
    return _percentile(kept, 0.95) - _percentile(kept, 0.10)


def _after(loudness: Sequence[float], gains: Sequence[float], energy: Sequence[float], width: int) -> list[float]:
    """Each report's loudness once the gains apply: plus the mean gain, weighed by energy,
    of the `width` frames its window covers."""
    weighed = [0.0, *accumulate(power * 10 ** (gain / 10) for power, gain in zip(energy, gains, strict=True))]
    total = [0.0, *accumulate(energy)]
    after = []
    for index, value in enumerate(loudness):
        low = max(0, index + 1 - width)
        power = total[index + 1] - total[low]
        if value > ABSOLUTE_GATE and power > 0:
            value += 10 * math.log10((weighed[index + 1] - weighed[low]) / power)
        after.append(value)
    return after


def _moving_mean(values: list[float], each_side: int) -> list[float]:
    sums = [0.0, *accumulate(values)]
    count = len(values)
    means = []
    for index in range(count):
        low, high = max(0, index - each_side), min(count, index + each_side + 1)
        means.append((sums[high] - sums[low]) / (high - low))
    return means


def _energy_mean(values: Sequence[float]) -> float:
    return 10 * math.log10(sum(10 ** (value / 10) for value in values) / len(values))


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[round(fraction * (len(ordered) - 1))]
