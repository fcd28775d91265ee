"""ffmpeg and ffprobe command lines, built by pure functions and tested as lists.

User options only ever become validated numbers and catalog-made codec names here;
nothing a client sends reaches ffmpeg as a raw argument or a filter string.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from jobs_api.catalog import CHANNELS, DEFAULTS, TAGS, Codec, Target, parse_time
from jobs_api.config import Config
from workers import loudness

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
class Levels:
    """What ffmpeg's ebur128 and astats meters reported; None where a meter did not run."""

    integrated: float | None = None  # LUFS
    loudness_range: float | None = None  # LU
    true_peak: float | None = None  # dBTP
    peak: float | None = None  # dBFS, sample peak
    rms: float | None = None  # dBFS


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


def probe_args(path: Path) -> list[str]:
    return [
        "ffprobe", *COMMON, *INPUT_GUARD,
        "-show_entries",
        "format=format_name,duration,bit_rate:stream=index,codec_type,codec_name,sample_rate,"
        "channels,bits_per_raw_sample,bits_per_sample,duration,bit_rate:stream_tags=DURATION",
        "-of", "json", f"file:{path}",
    ]


def parse_probe(text: str) -> SourceInfo:
    """The first audio stream of an ffprobe answer, or NotAudio."""
    return parse_streams(text)[0]


def parse_streams(text: str) -> list[SourceInfo]:
    """Every audio stream of an ffprobe answer, in order, or NotAudio."""
    try:
        data: dict[str, Any] = json.loads(text or "{}")
    except ValueError as exc:
        raise NotAudio("unreadable probe output") from exc
    streams = [s for s in data.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        raise NotAudio("no audio stream")
    container = data.get("format", {})
    return [_stream_info(stream, container, index) for index, stream in enumerate(streams)]


TAGGED_TIME = re.compile(r"^\d+:\d\d:\d\d(\.\d+)?$")


def _stream_info(stream: dict[str, Any], container: dict[str, Any], index: int) -> SourceInfo:
    rate = _int(stream.get("sample_rate"))
    channels = _int(stream.get("channels"))
    if not rate or not channels:
        raise NotAudio("audio stream without sample rate or channels")
    # Matroska keeps each track's length in a DURATION tag (HH:MM:SS.fraction) instead.
    tagged = str(stream.get("tags", {}).get("DURATION", ""))
    from_tag = parse_time(tagged) if TAGGED_TIME.match(tagged) else 0.0
    duration = _float(stream.get("duration")) or from_tag or _float(container.get("duration")) or 0.0
    bits = _int(stream.get("bits_per_raw_sample")) or _int(stream.get("bits_per_sample")) or None
    return SourceInfo(
        format_name=str(container.get("format_name", "")),
        codec=str(stream.get("codec_name", "")),
        duration=duration,
        sample_rate=rate,
        channels=channels,
        bits=bits,
        bit_rate=_int(stream.get("bit_rate")) or _int(container.get("bit_rate")) or None,
        stream=index,
    )


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


def _source_args(source: Path | None, start: float | None, stream: int = 0, mapped: bool = True) -> list[str]:
    """Read `source`; None: a WAV on stdin (an upload converted as it arrives, workers/early.py)."""
    if source is None:
        args = ["-format_whitelist", "wav", "-protocol_whitelist", "pipe", "-f", "wav", "-i", "pipe:0"]
        return [*args, "-map", f"0:a:{stream}", "-vn", "-sn", "-dn"] if mapped else args
    args = [*INPUT_GUARD]
    if start:
        args += ["-ss", _seconds(start)]
    args += ["-i", f"file:{source}"]
    return [*args, "-map", f"0:a:{stream}", "-vn", "-sn", "-dn"] if mapped else args


def _envelope_args(plan: Plan) -> list[str]:
    """The gain curve as a second input, multiplied into the shaped audio before the filters."""
    assert plan.envelope is not None
    layout = _layout(plan.channels)
    copies = "|".join(f"c{index}=c0" for index in range(plan.channels))
    graph = (f"[0:a:{plan.stream}]{_shape(plan)}[audio];"
             f"[1:a]aresample={plan.sample_rate},pan={layout}|{copies}[gain];"
             f"[audio][gain]{','.join(('amultiply', *plan.filters))}[out]")
    return ["-format_whitelist", "f32le", "-protocol_whitelist", "file", "-f", "f32le",
            "-ar", str(loudness.FRAMES_PER_SECOND), "-ac", "1", "-i", f"file:{plan.envelope}",
            "-filter_complex", graph, "-map", "[out]"]


def _layout(channels: int) -> str:
    names = {count: name for name, count in CHANNELS.items()}
    return names.get(channels, f"{channels}c")


def _shape(plan: Plan) -> str:
    """Brings the decoded audio to the output's rate and layout before anything measures it."""
    return f"aformat=sample_rates={plan.sample_rate}:channel_layouts={_layout(plan.channels)}"


def convert_args(source: Path | None, output: Path, plan: Plan, limits: Limits,
                 copy_fd: int | None = None) -> list[str]:
    """Encode `source` (None: a WAV on stdin) to `output`; with `copy_fd`, also write the encoded
    stream (in Matroska) to that file descriptor, for a meter to measure the result while it is made."""
    args = ["ffmpeg", *COMMON, "-nostdin", "-nostats"]
    if plan.envelope is not None:
        args += [*_source_args(source, plan.start, mapped=False), *_envelope_args(plan)]
    else:
        args += _source_args(source, plan.start, plan.stream)
        if plan.filters:
            args += ["-af", ",".join((_shape(plan), *plan.filters))]
    args += ["-c:a", plan.codec]
    if plan.sample_fmt:
        args += ["-sample_fmt", plan.sample_fmt]
    if plan.bitrate_k:
        args += ["-b:a", f"{plan.bitrate_k}k"]
    args += [*plan.codec_args, "-ar", str(plan.sample_rate), "-ac", str(plan.channels)]
    if plan.clear_tags:
        args += ["-map_metadata", "-1"]
    for name, value in plan.tags:
        args += ["-metadata", f"{name}={value}"]
    args += ["-t", _seconds(plan.duration)]
    if copy_fd is None:
        args += ["-fs", str(limits.max_output_bytes), *plan.target.muxer_args, "-f", plan.target.muxer]
        return [*args, "-progress", "pipe:1", "-y", f"file:{output}"]
    # The tee muxer ignores -fs, so the kernel's file size limit stands in for it: a write
    # past the limit kills ffmpeg, leaving the output at the limit, where the worker checks it.
    pairs = zip(plan.target.muxer_args[::2], plan.target.muxer_args[1::2], strict=True)
    options = [f"f={plan.target.muxer}", *(f"{name.lstrip('-')}={value}" for name, value in pairs)]
    return ["prlimit", f"--fsize={limits.max_output_bytes}", "--", *args, "-progress", "pipe:1", "-y",
            "-f", "tee", f"[{':'.join(options)}]file:{output}|[f=matroska]pipe:{copy_fd}"]


# Loudness: measure, decide the gain, measure again --------------------------------------

METERS = {
    "ebu": "ebur128=peak=true:framelog=verbose",  # verbose: the 100 ms reports stay out of an info log
    "levels": "astats=measure_perchannel=none",
}
FRAME_LOG = {"ebu": "ebur128=peak=true:framelog=info"}  # every 100 ms, for riding the gain


def measure_args(source: Path, meters: tuple[str, ...], plan: Plan | None = None) -> list[str]:
    """Decode (the planned part of) `source` through the meters; they report on stderr.
    Measuring an input for a plan, ebur128 also logs each 100 ms (loudness.Frames)."""
    args = ["ffmpeg", "-hide_banner", "-loglevel", "info", "-nostdin", "-nostats"]
    args += _source_args(source, plan.start, plan.stream) if plan else _source_args(source, None)
    chain = [METERS[m] for m in meters]
    if plan is not None:
        args += ["-t", _seconds(plan.duration)]
        chain = [_shape(plan), *(FRAME_LOG.get(m, METERS[m]) for m in meters)]
    return [*args, "-af", ",".join(chain), "-f", "null", "-"]


SPLIT_SECONDS = 60.0  # EBU-measure inputs this long in two halves at once (measure_halves_args)


def measure_halves_args(source: Path, plan: Plan) -> tuple[list[list[str]], int]:
    """EBU-measure the planned audio as two halves side by side, the second starting a
    short-term window early; and the reports the first covers (loudness.joined). On
    10 minutes here: 1.0-1.1 s instead of 2.0 s."""
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


def progress_seconds(line: str) -> float | None:
    """The seconds of output a `-progress` line reports written, if it is that line."""
    key, _, value = line.strip().partition("=")
    return int(value) / 1e6 if key == "out_time_us" and value.lstrip("-").isdigit() else None


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


# Below this the meters have nothing to go on: EBU's integrated loudness needs 400 ms
# blocks above the -70 LUFS gate, RMS and peak need any sound at all.
SILENT = -70.0
# Riding the gain needs the 3 s short-term loudness; shorter clips keep their loudness range.
RIDE_MIN_SECONDS = 3.0
RMS_CEILING = -0.3  # dBFS: where rms normalization starts limiting rather than clipping
TRUE_PEAK_MARGIN = 0.5  # dB the limiter keeps below the limit: lossy encoders overshoot a little


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
        wide = levels.loudness_range is not None and levels.loudness_range > norm.loudness_range
        if wide and plan.duration >= RIDE_MIN_SECONDS and frames:
            assert levels.loudness_range is not None
            curve = loudness.ride(frames, levels.integrated, levels.loudness_range, target, norm.loudness_range)
            over = loudness.peak_after(frames, curve) > norm.true_peak
            limiter = _limiter(norm.true_peak - TRUE_PEAK_MARGIN, plan.sample_rate) if over else ()
            return Gain(limiter, "dynamic", tuple(curve))
        if peak_after <= norm.true_peak:
            return Gain((_volume(gain),), "linear")
        # Transients over the limit: our own oversampled limiter. loudnorm's dynamic mode
        # misses the target by several LU on such material (measured: -22.5 for -16).
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


def tts_args(text: Path, wav: Path, voice: str) -> list[str]:
    """espeak-ng reads the text as plain text (no SSML: that needs -m) and writes a WAV."""
    return ["espeak-ng", "-v", voice, "-w", str(wav), "-f", str(text)]


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
