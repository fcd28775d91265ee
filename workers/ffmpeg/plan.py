"""A conversion's plan: every choice ffmpeg needs, made from validated options and the probed input.

User options only ever become validated numbers and catalog-made codec names here;
nothing a client sends reaches ffmpeg as a raw argument or a filter string.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from jobs_api.catalog import CHANNELS, DEFAULTS, TAGS, Codec, Target, parse_time
from jobs_api.config import Config


class PlanInvalid(Exception):
    """The options cannot be applied to this input (e.g. start past its end)."""


@dataclass(frozen=True)
class SourceInfo:
    """One audio stream of an input, as the probe found it."""

    format_name: str
    codec: str
    duration: float
    sample_rate: int
    channels: int
    bits: int | None  # lossless sources only
    bit_rate: int | None
    stream: int = 0  # which audio stream of the file (ffmpeg's 0:a:N)


@dataclass(frozen=True)
class Limits:
    max_duration: float
    max_output_bytes: int
    max_channels: int
    max_sample_rate: int

    @classmethod
    def of(cls, config: Config) -> Limits:
        return cls(max_duration=config.max_duration_seconds, max_output_bytes=config.max_output_bytes,
                   max_channels=config.max_channels, max_sample_rate=config.max_sample_rate)


@dataclass(frozen=True)
class Normalization:
    kind: str  # ebu, rms or peak
    level: float  # LUFS for ebu, dBFS for rms and peak
    true_peak: float  # dBTP, ebu only
    loudness_range: float  # LU, ebu only


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
    codec_args: tuple[str, ...] = ()
    normalization: Normalization | None = None
    filters: tuple[str, ...] = ()  # gain stages decided after measuring the input
    envelope: Path | None = None  # a gain curve to multiply the audio by first (loudness.write_envelope)
    tags: tuple[tuple[str, str], ...] = ()
    clear_tags: bool = False
    stream: int = 0  # the input's audio stream to convert
    codec_name: str = ""  # the catalog's name of the codec (mp3, vorbis, flac, ...)


def plan_conversion(target: Target, options: dict[str, Any], source: SourceInfo, limits: Limits) -> Plan:
    """Every choice of the conversion, from validated options and the probed source."""
    codec = target.codec_named(options.get("audio_codec"))
    rate = options.get("frequency") or _nearest_rate(source.sample_rate, codec.sample_rates, limits)
    channels = CHANNELS.get(options.get("channels") or "") or min(
        source.channels, codec.max_channels, limits.max_channels
    )
    encoder, sample_fmt, depth = codec.encoder, None, None
    if codec.lossless:
        depth = options.get("audio_bitdepth") or _default_depth(source.bits, tuple(codec.depths))
        encoder, sample_fmt = codec.depths[depth]
    bitrate = _bitrate(codec, options.get("audio_bitrate"), rate, channels)
    codec_args: tuple[str, ...] = () if bitrate else codec.quality_args
    if codec.vbr is not None:
        codec_args += codec.vbr[bool(options.get("audio_vbr", codec.vbr_default))]
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
        codec=encoder, sample_fmt=sample_fmt, sample_rate=rate, channels=channels,
        bit_depth=depth, bitrate_k=bitrate, start=start, duration=duration, target=target,
        codec_args=codec_args, normalization=_normalization(options), stream=source.stream,
        codec_name=codec.name,
    )


def _bitrate(codec: Codec, asked: int | None, rate: int, channels: int) -> int | None:
    """The asked bitrate if the encoder produces it at this rate; else the default that fits."""
    fitting = codec.bitrates_for(rate, channels)
    if asked is not None:
        if asked not in fitting:
            allowed = ", ".join(str(kbps) for kbps in fitting) or "none"
            raise PlanInvalid(f"{codec.name} at {rate} Hz with {channels} channels cannot be encoded at "
                              f"{asked} kbit/s (possible: {allowed}); set frequency or audio_bitrate")
        return asked
    if codec.default_bitrate is None or not fitting:
        return None
    return max((kbps for kbps in fitting if kbps <= codec.default_bitrate), default=fitting[0])


def with_tags(plan: Plan, metadata: dict[str, Any]) -> Plan:
    """The plan writing the conversion's metadata as tags, where the container holds them."""
    if not plan.target.tags:
        return plan
    tags = tuple((TAGS[name], value) for name, value in metadata.items() if name in TAGS)
    return replace(plan, tags=tags, clear_tags=bool(metadata.get("clear_all")))


def _normalization(options: dict[str, Any]) -> Normalization | None:
    if not options.get("normalize"):
        return None
    settings = {**DEFAULTS, **{name: value for name, value in options.items() if value is not None}}
    kind = settings["normalize_type"]
    level = settings["normalize_target_level_ebu" if kind == "ebu" else "normalize_target_level"]
    return Normalization(
        kind=kind, level=float(level),
        true_peak=float(settings["normalize_true_peak_ebu"]),
        loudness_range=float(settings["normalize_loudness_range_target_ebu"]),
    )


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
