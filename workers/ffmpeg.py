"""ffmpeg and ffprobe command lines, built by pure functions and tested as lists.

User options only ever become validated numbers and catalog-made codec names here;
nothing a client sends reaches ffmpeg as a raw argument or a filter string.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs_api.catalog import Target, parse_time

# Demuxers we accept. Everything else (HLS playlists, concat lists, images, ...) is
# refused at probe time, whatever the file is called; this is what stops a playlist
# named x.mp3 from reading another user's file.
FORMAT_WHITELIST = ",".join((
    "mp3", "wav", "flac", "ogg", "matroska", "webm", "mov", "mp4", "m4a", "3gp", "aac",
    "aiff", "asf", "caf", "w64", "au", "amr", "ac3", "eac3", "dts", "wv", "ape", "tta",
    "mpc", "mpc8", "truehd", "mlp", "voc", "rf64", "s337m", "spdif",
))
COMMON = ["-hide_banner", "-loglevel", "error"]
INPUT_GUARD = ["-format_whitelist", FORMAT_WHITELIST, "-protocol_whitelist", "file"]


class NotAudio(Exception):
    """The probed file holds no audio stream we can read."""


class PlanInvalid(Exception):
    """The options cannot be applied to this input (e.g. start past its end)."""


@dataclass(frozen=True)
class SourceInfo:
    format_name: str
    codec: str
    duration: float
    sample_rate: int
    channels: int
    bits: int | None  # lossless sources only
    bit_rate: int | None


@dataclass(frozen=True)
class Limits:
    max_duration: float
    max_output_bytes: int
    max_channels: int
    max_sample_rate: int


@dataclass(frozen=True)
class Plan:
    codec: str
    sample_fmt: str | None
    sample_rate: int
    channels: int
    bit_depth: int | None
    bitrate_k: int | None
    start: float | None
    duration: float  # of the output
    target: Target


def probe_args(path: Path) -> list[str]:
    return [
        "ffprobe", *COMMON, *INPUT_GUARD,
        "-show_entries",
        "format=format_name,duration,bit_rate:stream=index,codec_type,codec_name,sample_rate,"
        "channels,bits_per_raw_sample,bits_per_sample,duration,bit_rate",
        "-of", "json", f"file:{path}",
    ]


def parse_probe(text: str) -> SourceInfo:
    """The first audio stream of an ffprobe answer, or NotAudio."""
    try:
        data: dict[str, Any] = json.loads(text or "{}")
    except ValueError as exc:
        raise NotAudio("unreadable probe output") from exc
    streams = [s for s in data.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        raise NotAudio("no audio stream")
    stream, container = streams[0], data.get("format", {})
    rate = _int(stream.get("sample_rate"))
    channels = _int(stream.get("channels"))
    if not rate or not channels:
        raise NotAudio("audio stream without sample rate or channels")
    duration = _float(stream.get("duration")) or _float(container.get("duration")) or 0.0
    bits = _int(stream.get("bits_per_raw_sample")) or _int(stream.get("bits_per_sample")) or None
    return SourceInfo(
        format_name=str(container.get("format_name", "")),
        codec=str(stream.get("codec_name", "")),
        duration=duration,
        sample_rate=rate,
        channels=channels,
        bits=bits,
        bit_rate=_int(stream.get("bit_rate")) or _int(container.get("bit_rate")) or None,
    )


def plan_conversion(target: Target, options: dict[str, Any], source: SourceInfo, limits: Limits) -> Plan:
    rate = options.get("frequency") or _nearest_rate(source.sample_rate, target.sample_rates, limits)
    channels = {"mono": 1, "stereo": 2}.get(options.get("channels") or "") or min(
        source.channels, target.max_channels, limits.max_channels
    )
    codec, sample_fmt, depth = target.codec, None, None
    if target.lossless:
        depth = options.get("audio_bitdepth") or _default_depth(source.bits, tuple(target.depths))
        codec, sample_fmt = target.depths[depth]
    start = parse_time(options["start"]) if options.get("start") else None
    end = parse_time(options["end"]) if options.get("end") else None
    available = source.duration - (start or 0.0) if source.duration else limits.max_duration
    if start is not None and source.duration and start >= source.duration:
        raise PlanInvalid(
            f"start ({options['start']}) is at or after the end of the input ({source.duration:.2f} s)"
        )
    wanted = (end - (start or 0.0)) if end is not None else available
    duration = min(wanted, available, limits.max_duration)
    return Plan(
        codec=codec, sample_fmt=sample_fmt, sample_rate=rate, channels=channels,
        bit_depth=depth, bitrate_k=None if target.lossless else options.get("audio_bitrate") or target.default_bitrate,
        start=start, duration=duration, target=target,
    )


def convert_args(source: Path, output: Path, plan: Plan, limits: Limits) -> list[str]:
    args = ["ffmpeg", *COMMON, "-nostdin", "-nostats", *INPUT_GUARD]
    if plan.start:
        args += ["-ss", _seconds(plan.start)]
    args += ["-i", f"file:{source}", "-map", "0:a:0", "-vn", "-sn", "-dn"]
    args += ["-c:a", plan.codec]
    if plan.sample_fmt:
        args += ["-sample_fmt", plan.sample_fmt]
    if plan.bitrate_k:
        args += ["-b:a", f"{plan.bitrate_k}k"]
    args += ["-ar", str(plan.sample_rate), "-ac", str(plan.channels)]
    args += ["-t", _seconds(plan.duration), "-fs", str(limits.max_output_bytes)]
    args += [*plan.target.muxer_args, "-f", plan.target.muxer]
    args += ["-progress", "pipe:1", "-y", f"file:{output}"]
    return args


def _nearest_rate(rate: int, allowed: tuple[int, ...], limits: Limits) -> int:
    usable = [r for r in allowed if r <= limits.max_sample_rate] or list(allowed)
    if rate in usable:
        return rate
    higher = [r for r in usable if r > rate]
    return min(higher) if higher else max(usable)


def _default_depth(bits: int | None, depths: tuple[int, ...]) -> int:
    if bits in depths:
        return bits  # type: ignore[return-value]
    if bits and bits > 16 and 24 in depths:
        return 24
    return 16


def _seconds(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0
