"""The options catalog: every target, every option, one table.

It serves `GET /v2/conversions`, validates conversion options on the way in, and tells
the ffmpeg command builder what each target can hold. Adding an option or a target is
one edit here (plus, for a new option, its effect in `workers/ffmpeg/plan.py`); the
encoders' abilities are `encoders.py`'s.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any

from jobs_api import encoders
from jobs_api.encoders import FREQUENCIES, Codec
from jobs_api.errors import RequestInvalid, did_you_mean

CATEGORY = "audio"

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
    content_type: str
    codecs: tuple[Codec, ...]  # the first is the default
    muxer_args: tuple[str, ...] = ()
    tags: bool = True  # whether the container holds title/artist/... tags

    @property
    def codec(self) -> Codec:
        return self.codecs[0]

    @property
    def lossless(self) -> bool:
        return self.codec.lossless

    def codec_named(self, name: str | None) -> Codec:
        return next((codec for codec in self.codecs if codec.name == name), self.codec)

    @cached_property
    def options(self) -> Mapping[str, Option]:
        """Built once per target: every job's JSON lists them (a tenth of a GET /v2/jobs/{id})."""
        return MappingProxyType({option.name: option for option in _options_for(self)})


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target("mp3", "mp3", "mp3", "audio/mpeg", (encoders.MP3,)),
        Target("wav", "wav", "wav", "audio/wav", (encoders.WAV_PCM,)),
        Target("flac", "flac", "flac", "audio/flac", (encoders.FLAC,)),
        Target("ogg", "ogg", "ogg", "audio/ogg", (encoders.VORBIS, encoders.OPUS, encoders.SPEEX)),
        Target("opus", "opus", "opus", "audio/opus", (encoders.OPUS,)),
        Target("aac", "aac", "adts", "audio/aac", (encoders.AAC,), tags=False),
        Target("m4a", "m4a", "ipod", "audio/mp4", (encoders.AAC,), muxer_args=encoders.MP4_ARGS),
        Target("webm", "webm", "webm", "audio/webm", (encoders.OPUS, encoders.VORBIS)),
        Target("aiff", "aiff", "aiff", "audio/aiff", (encoders.AIFF_PCM,), muxer_args=("-write_id3v2", "1")),
        Target("wma", "wma", "asf", "audio/x-ms-wma", (encoders.WMA,)),
        Target("alac", "m4a", "ipod", "audio/mp4", (encoders.ALAC,), muxer_args=encoders.MP4_ARGS),
    )
}


# espeak-ng voice for each language of the seed's language_tts enum. Where espeak-ng has
# no voice for the region, the nearest one of the same language speaks (listed below).
TTS_VOICES = {
    "ar-SA": "ar", "bg-BG": "bg", "ca-ES": "ca", "cs-CZ": "cs", "da-DK": "da", "de-CH": "de",
    "de-DE": "de", "el-GR": "el", "en-AU": "en-gb", "en-CA": "en-us", "en-GB": "en-gb",
    "en-IE": "en-gb", "en-IN": "en-gb", "en-US": "en-us", "es-ES": "es", "es-MX": "es-419",
    "fi-FI": "fi", "fr-CA": "fr-fr", "fr-CH": "fr-ch", "fr-FR": "fr-fr", "hi-IN": "hi",
    "hr-HR": "hr", "hu-HU": "hu", "id-ID": "id", "it-IT": "it", "ja-JP": "ja", "nb-NO": "nb",
    "nl-BE": "nl", "nl-NL": "nl", "pl-PL": "pl", "pt-BR": "pt-br", "pt-PT": "pt", "ro-RO": "ro",
    "ru-RU": "ru", "sv-SE": "sv", "ta-IN": "ta", "tr-TR": "tr", "vi-VN": "vi", "zh-CN": "cmn",
    "zh-HK": "yue",
}
TTS_APPROXIMATE = ("de-CH", "en-AU", "en-CA", "en-IE", "en-IN", "fr-CA", "nl-BE")

# Conversion metadata: tag name -> what ffmpeg's muxers call it.
TAGS = {
    "title": "title", "artist": "artist", "author": "artist", "album": "album",
    "album_artist": "album_artist", "comment": "comment", "genre": "genre", "date": "date",
    "track": "track", "composer": "composer", "copyright": "copyright",
}
TAG_MAX_LENGTH = 1000
NORMALIZE_TYPES = ("ebu", "rms", "peak")
# Defaults of the options the worker reads when they are unset: the catalog serves them,
# the command builder applies them.
DEFAULTS: dict[str, Any] = {
    "normalize_type": "ebu", "normalize_target_level": -23, "normalize_target_level_ebu": -23,
    "normalize_loudness_range_target_ebu": 7, "normalize_true_peak_ebu": -2, "language_tts": "en-US",
    "allow_multiple_outputs_threshold": 400,
}
CHANNELS = {"mono": 1, "stereo": 2}  # the channels option's values, as channel counts
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


# Long because it is the table itself: one Option for each option of the seed, in its order.
def _options_for(target: Target) -> list[Option]:
    codecs = target.codecs
    rates = tuple(rate for rate in FREQUENCIES if any(rate in codec.sample_rates for codec in codecs))
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
        Option("preset", "string", "Id of a preset (GET /v2/presets). Its options apply "
               "first; the conversion's own options win.", pattern=r"^[\w\W]{1,255}$"),
        Option("download_password", "string", "A password that protects this conversion's "
               "downloads; send it in X-Oc-Download-Password, X-Api2convert-Download-Password or "
               "the cookie x-oc-download-password (comma-separated candidates). Stored hashed, "
               "never returned.", pattern=r"^[ -~]{1,1000}$"),
        Option("allow_multiple_outputs", "boolean", "When the conversion makes several files "
               "(several inputs, or an input with several audio streams): one download each "
               "instead of one zip.", default=False),
        Option("allow_multiple_outputs_threshold", "integer", "With allow_multiple_outputs: "
               "more files than this are still packed into one zip.", minimum=2, maximum=400,
               default=DEFAULTS["allow_multiple_outputs_threshold"]),
        Option("normalize", "boolean", "Normalize the audio volume (normalize_type, EBU "
               "R128 by default).", default=False),
        Option("normalize_type", "string", "ebu: EBU R128 loudness (two passes, linear gain "
               "where the true-peak limit allows); rms or peak: bring the RMS or sample-peak "
               "level to normalize_target_level.", enum=NORMALIZE_TYPES, default=DEFAULTS["normalize_type"]),
        Option("normalize_target_level", "integer", "Target level in dBFS for rms and peak. "
               "Ignored when normalize_type is ebu.", minimum=-99, maximum=0,
               default=DEFAULTS["normalize_target_level"]),
        Option("normalize_target_level_ebu", "number", "Integrated loudness target in LUFS. "
               "Ignored if normalize_type is not ebu.", minimum=-70, maximum=-5,
               default=DEFAULTS["normalize_target_level_ebu"]),
        Option("normalize_loudness_range_target_ebu", "number", "Loudness range target in LU; "
               "a wider source is compressed toward it (a gain that rides the short-term loudness, "
               "sources of 3 s or more). Ignored if normalize_type is not ebu.",
               minimum=1, maximum=50, default=DEFAULTS["normalize_loudness_range_target_ebu"]),
        Option("normalize_true_peak_ebu", "number", "Maximum true peak in dBTP. Ignored if "
               "normalize_type is not ebu.", minimum=-9, maximum=0, default=DEFAULTS["normalize_true_peak_ebu"]),
        Option("language_tts", "string", "Language of the speaker when the input is plain "
               "text (.txt). Spoken by espeak-ng; these use the nearest voice of the same "
               f"language: {', '.join(TTS_APPROXIMATE)}.", enum=tuple(TTS_VOICES),
               default=DEFAULTS["language_tts"]),
    ]
    if target.lossless:
        options.append(Option("audio_bitdepth", "integer", "Bit depth of the samples. "
                              "Default: the source's where the target can hold it.",
                              enum=tuple(target.codec.depths)))
    else:
        options.append(Option("audio_bitdepth", "integer", f"{target.name} is lossy and has no "
                              "bit depth: accepted and ignored, with a job warning.", enum=(8, 16, 24, 32)))
    bitrates = tuple(sorted({rate for codec in codecs for rate in codec.bitrates}))
    if bitrates:
        options.append(Option("audio_bitrate", "integer", "Audio bitrate in kbit/s (the average with "
                              "audio_vbr). Low sample rates allow only the lower values; a 400 lists them. "
                              "Vorbis without it encodes at quality 5.", enum=bitrates,
                              default=target.codec.default_bitrate))
    with_vbr = [codec.name for codec in codecs if codec.vbr is not None]
    if with_vbr:
        default = target.codec.vbr_default if target.codec.vbr is not None else None
        options.append(Option("audio_vbr", "boolean", "Variable bitrate around audio_bitrate "
                              f"(codecs: {', '.join(with_vbr)}).", default=default))
    if len(codecs) > 1:
        options.append(Option("audio_codec", "string", "Audio codec inside the container.",
                              enum=tuple(codec.name for codec in codecs), default=target.codec.name))
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
    """Check a conversion's target and options; raise RequestInvalid naming each problem.

    `options` are the effective ones: a preset's are already merged under the conversion's own.
    """
    target = TARGETS.get(target_name) if isinstance(target_name, str) else None
    if target is None:
        allowed = f"{did_you_mean(target_name, TARGETS)}allowed values: {', '.join(TARGETS)}"
        raise RequestInvalid(
            f"Unknown target {target_name!r}.", {f"{path}target": [f"unknown target {target_name!r}; {allowed}"]},
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
                f"unknown option for {target.name}; {did_you_mean(name, known)}allowed options: {', '.join(known)}"
            ]
        elif value is not None and (problem := option.problem(value)):
            problems[f"{path}options.{name}"] = [problem]
    if not problems:
        for name, problem in _combination_problems(target, options):
            problems[f"{path}options.{name}"] = [problem]
    if problems:
        raise RequestInvalid("Invalid conversion options.", problems)
    return target


def _combination_problems(target: Target, options: dict[str, Any]) -> list[tuple[str, str]]:
    """Values, each valid alone, that this target (with this codec) cannot produce together."""
    codec = target.codec_named(options.get("audio_codec"))
    what = target.name if len(target.codecs) == 1 else f"{target.name} with codec {codec.name}"
    problems = []
    rate = options.get("frequency")
    if rate is not None and rate not in codec.sample_rates:
        allowed = ", ".join(str(r) for r in FREQUENCIES if r in codec.sample_rates)
        problems.append(("frequency", f"{what} cannot be encoded at {rate} Hz; allowed values: {allowed}"))
    bitrate = options.get("audio_bitrate")
    if bitrate is not None:
        # Without a frequency or channels the source decides; the worker checks again then.
        channels = CHANNELS.get(options.get("channels") or "", 2)
        fitting = codec.bitrates_for(rate, channels) if rate in codec.sample_rates else codec.bitrates
        if bitrate not in fitting:
            at = f" at {rate} Hz {options.get('channels') or 'stereo'}" if rate in codec.sample_rates else ""
            allowed = ", ".join(str(b) for b in fitting) or "none (this codec has no bitrate setting)"
            problems.append(("audio_bitrate",
                             f"{what}{at} cannot be encoded at {bitrate} kbit/s; allowed values: {allowed}"))
    if options.get("audio_vbr") is not None and codec.vbr is None:
        allowed = ", ".join(c.name for c in target.codecs if c.vbr is not None)
        problems.append(("audio_vbr", f"{what} has no variable-bitrate switch; codecs that have one: {allowed}"))
    start, end = options.get("start"), options.get("end")
    if start is not None and end is not None and parse_time(end) <= parse_time(start):
        problems.append(("end", f"end ({end}) must be after start ({start})"))
    return problems


def validate_metadata(metadata: Any, path: str = "") -> dict[str, Any]:
    """Check conversion metadata (the tags to write); return it without null entries."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise RequestInvalid("Invalid metadata.", {f"{path}metadata": ["must be an object"]})
    problems: dict[str, list[str]] = {}
    for name, value in metadata.items():
        field_path = f"{path}metadata.{name}"
        if name == "clear_all":
            if not isinstance(value, bool):
                problems[field_path] = ["must be of type boolean"]
        elif name not in TAGS:
            problems[field_path] = [f"unknown tag; {did_you_mean(name, TAGS)}allowed: {', '.join(TAGS)}, clear_all"]
        elif value is not None and not isinstance(value, str):
            problems[field_path] = ["must be of type string"]
        elif value is not None and (len(value) > TAG_MAX_LENGTH or CONTROL_CHARACTERS.search(value)):
            problems[field_path] = [f"must be at most {TAG_MAX_LENGTH} characters, without control characters"]
    if problems:
        raise RequestInvalid("Invalid metadata.", problems)
    return {name: value for name, value in metadata.items() if value is not None}


def ignored_options(target: Target, options: dict[str, Any], metadata: dict[str, Any]) -> list[str]:
    """Warnings for options that are valid but have no effect on this target."""
    notes = []
    if options.get("audio_bitdepth") is not None and not target.lossless:
        notes.append(f"audio_bitdepth is ignored: {target.name} is a lossy format without a bit depth.")
    normalize_options = sorted(name for name in options if name.startswith("normalize_"))
    if normalize_options and not options.get("normalize"):
        notes.append(f"{', '.join(normalize_options)} ignored: normalize is not true.")
    elif options.get("normalize"):
        kind = options.get("normalize_type", DEFAULTS["normalize_type"])
        unused = [name for name in normalize_options
                  if name != "normalize_type" and name.endswith("_ebu") != (kind == "ebu")]
        if unused:
            notes.append(f"{', '.join(unused)} ignored for normalize_type {kind}.")
    if options.get("allow_multiple_outputs_threshold") is not None and not options.get("allow_multiple_outputs"):
        notes.append("allow_multiple_outputs_threshold ignored: allow_multiple_outputs is not true.")
    if any(name != "clear_all" for name in metadata) and not target.tags:
        notes.append(f"metadata ignored: the {target.name} container cannot hold tags.")
    return notes
