"""The options catalog: every target, every option, one table.

It serves `GET /v2/conversions`, validates conversion options on the way in, and tells
the ffmpeg command builder what each target can hold. Adding an option or a target is
one edit here (plus, for a new option, its effect in `workers/ffmpeg.py`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from jobs_api.errors import RequestInvalid

CATEGORY = "audio"

# The seed table's frequency enum; each target keeps the part its encoder can produce.
SEED_FREQUENCIES = (1000, 8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 96000)
TIME_PATTERN = r"^\d\d:\d\d:\d\d(\.\d{1,3})?$"


@dataclass(frozen=True)
class Option:
    name: str
    type: str  # JSON Schema type: integer, number, string, boolean
    description: str
    enum: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None
    default: Any = None

    def schema(self) -> dict[str, Any]:
        described: dict[str, Any] = {"type": self.type, "description": self.description}
        for key in ("enum", "minimum", "maximum", "pattern", "default"):
            value = getattr(self, key)
            if value is not None:
                described[key] = list(value) if key == "enum" else value
        return described

    def problem(self, value: Any) -> str | None:
        """Why `value` is not acceptable, or None."""
        if not _has_type(value, self.type):
            return f"must be of type {self.type}"
        if self.enum is not None and value not in self.enum:
            allowed = ", ".join(str(item) for item in self.enum)
            return f"{value!r} is not allowed; allowed values: {allowed}"
        if self.minimum is not None and value < self.minimum:
            return f"must be at least {self.minimum:g}"
        if self.maximum is not None and value > self.maximum:
            return f"must be at most {self.maximum:g}"
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            return f"must match the pattern {self.pattern}"
        return None


def _has_type(value: Any, kind: str) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int)
    if kind == "number":
        return isinstance(value, (int, float))
    return isinstance(value, str)


@dataclass(frozen=True)
class Target:
    name: str
    extension: str
    muxer: str  # ffmpeg -f
    codec: str  # ffmpeg -c:a for lossy targets or the default depth of lossless ones
    content_type: str
    sample_rates: tuple[int, ...]  # what the encoder accepts
    max_channels: int
    # Lossless targets: bit depth -> (codec, sample_fmt or None).
    depths: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    bitrates: tuple[int, ...] = ()  # kbit/s, lossy targets
    default_bitrate: int | None = None
    muxer_args: tuple[str, ...] = ()

    @property
    def lossless(self) -> bool:
        return bool(self.depths)

    @property
    def options(self) -> dict[str, Option]:
        return {option.name: option for option in _options_for(self)}


ANY_RATE = tuple(sorted({*SEED_FREQUENCIES, 88200, 176400, 192000}))
LAME_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
LOSSY_BITRATES = (32, 48, 64, 96, 112, 128, 160, 192, 224, 256, 320)
MP4_ARGS = ("-movflags", "+faststart")

TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target("mp3", "mp3", "mp3", "libmp3lame", "audio/mpeg", LAME_RATES, 2,
               bitrates=LOSSY_BITRATES, default_bitrate=192),
        Target("wav", "wav", "wav", "pcm_s16le", "audio/wav", ANY_RATE, 8,
               depths={8: ("pcm_u8", None), 16: ("pcm_s16le", None),
                       24: ("pcm_s24le", None), 32: ("pcm_s32le", None)}),
        Target("flac", "flac", "flac", "flac", "audio/flac", ANY_RATE, 8,
               depths={16: ("flac", "s16"), 24: ("flac", "s32")}),
        Target("ogg", "ogg", "ogg", "libvorbis", "audio/ogg", ANY_RATE, 8,
               bitrates=LOSSY_BITRATES, default_bitrate=192),
        Target("opus", "opus", "opus", "libopus", "audio/opus", OPUS_RATES, 8,
               bitrates=LOSSY_BITRATES[:-1], default_bitrate=128),
        Target("aac", "aac", "adts", "aac", "audio/aac", AAC_RATES, 8,
               bitrates=LOSSY_BITRATES, default_bitrate=192),
        Target("m4a", "m4a", "ipod", "aac", "audio/mp4", AAC_RATES, 8,
               bitrates=LOSSY_BITRATES, default_bitrate=192, muxer_args=MP4_ARGS),
        Target("webm", "webm", "webm", "libopus", "audio/webm", OPUS_RATES, 8,
               bitrates=LOSSY_BITRATES[:-1], default_bitrate=128),
        Target("aiff", "aiff", "aiff", "pcm_s16be", "audio/aiff", ANY_RATE, 8,
               depths={8: ("pcm_s8", None), 16: ("pcm_s16be", None),
                       24: ("pcm_s24be", None), 32: ("pcm_s32be", None)}),
        Target("wma", "wma", "asf", "wmav2", "audio/x-ms-wma", LAME_RATES, 2,
               bitrates=LOSSY_BITRATES[:9], default_bitrate=128),
        Target("alac", "m4a", "ipod", "alac", "audio/mp4", ANY_RATE, 8,
               depths={16: ("alac", "s16p"), 24: ("alac", "s32p")}, muxer_args=MP4_ARGS),
    )
}


def _options_for(target: Target) -> list[Option]:
    rates = tuple(rate for rate in SEED_FREQUENCIES if rate in target.sample_rates)
    options = [
        Option("frequency", "integer", "Audio frequency (sample rate) in Hz. "
               "Default: the source's rate where the target can hold it.", enum=rates),
        Option("channels", "string", "Audio channels. Default: the source's layout.",
               enum=("stereo", "mono")),
        Option("start", "string", "Start of the part to keep, HH:MM:SS (fractional "
               "seconds allowed). Example: 00:02:23", pattern=TIME_PATTERN),
        Option("end", "string", "End of the part to keep, HH:MM:SS (fractional seconds "
               "allowed); must be after start. Example: 00:05:35", pattern=TIME_PATTERN),
        Option("output_filename", "string", "File name of the download WITHOUT the "
               "extension; the server adds it.", pattern=r"^[\w\W]{0,255}$"),
    ]
    if target.lossless:
        options.append(Option("audio_bitdepth", "integer", "Bit depth of the samples. "
                              "Default: the source's where the target can hold it.",
                              enum=tuple(target.depths)))
    else:
        options.append(Option("audio_bitrate", "integer", "Audio bitrate in kbit/s.",
                              enum=target.bitrates, default=target.default_bitrate))
    return options


def targets_page(target: str | None = None, category: str | None = None) -> list[dict[str, Any]]:
    """The catalog as `/v2/conversions` serves it."""
    if category not in (None, "", CATEGORY):
        return []
    return [
        {
            "id": f"{CATEGORY}-{item.name}",
            "category": CATEGORY,
            "target": item.name,
            "options": {name: option.schema() for name, option in item.options.items()},
        }
        for item in TARGETS.values()
        if target in (None, "", item.name)
    ]


def parse_time(value: str) -> float:
    hours, minutes, seconds = value.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def validate(target_name: Any, options: Any, path: str = "") -> Target:
    """Check a conversion's target and options; raise RequestInvalid naming each problem."""
    target = TARGETS.get(target_name) if isinstance(target_name, str) else None
    if target is None:
        allowed = ", ".join(TARGETS)
        raise RequestInvalid(
            f"Unknown target {target_name!r}.",
            {f"{path}target": [f"unknown target {target_name!r}; allowed values: {allowed}"]},
        )
    if options is None:
        return target
    if not isinstance(options, dict):
        raise RequestInvalid("Invalid options.", {f"{path}options": ["must be an object"]})
    known = target.options
    problems: dict[str, list[str]] = {}
    for name, value in options.items():
        option = known.get(name)
        if option is None:
            problems[f"{path}options.{name}"] = [
                f"unknown option for {target.name}; allowed options: {', '.join(known)}"
            ]
        elif value is not None and (problem := option.problem(value)):
            problems[f"{path}options.{name}"] = [problem]
    start, end = options.get("start"), options.get("end")
    if not problems and start is not None and end is not None:
        if parse_time(end) <= parse_time(start):
            problems[f"{path}options.end"] = [f"end ({end}) must be after start ({start})"]
    if problems:
        raise RequestInvalid("Invalid conversion options.", problems)
    return target
