"""ffmpeg and espeak-ng command lines, built by pure functions and tested as lists.

Every input is read behind the demuxer and protocol whitelists (`INPUT_GUARD`): a playlist
named x.mp3 cannot make ffmpeg read another user's file.
"""
from __future__ import annotations

from pathlib import Path

from jobs_api.catalog import CHANNELS
from workers import loudness
from workers.ffmpeg.plan import Limits, Plan

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


def source_args(source: Path | None, start: float | None, stream: int = 0, mapped: bool = True) -> list[str]:
    """Read `source`; None: a WAV on stdin (an upload converted as it arrives, workers/upload_conversion.py)."""
    if source is None:
        args = ["-format_whitelist", "wav", "-protocol_whitelist", "pipe", "-f", "wav", "-i", "pipe:0"]
        return [*args, "-map", f"0:a:{stream}", "-vn", "-sn", "-dn"] if mapped else args
    args = [*INPUT_GUARD]
    if start:
        args += ["-ss", seconds(start)]
    args += ["-i", f"file:{source}"]
    return [*args, "-map", f"0:a:{stream}", "-vn", "-sn", "-dn"] if mapped else args


def envelope_args(plan: Plan) -> list[str]:
    """The gain curve as a second input, multiplied into the shaped audio before the filters."""
    assert plan.envelope is not None
    named = layout(plan.channels)
    copies = "|".join(f"c{index}=c0" for index in range(plan.channels))
    graph = (f"[0:a:{plan.stream}]{shape(plan)}[audio];"
             f"[1:a]aresample={plan.sample_rate},pan={named}|{copies}[gain];"
             f"[audio][gain]{','.join(('amultiply', *plan.filters))}[out]")
    return ["-format_whitelist", "f32le", "-protocol_whitelist", "file", "-f", "f32le",
            "-ar", str(loudness.FRAMES_PER_SECOND), "-ac", "1", "-i", f"file:{plan.envelope}",
            "-filter_complex", graph, "-map", "[out]"]


def layout(channels: int) -> str:
    names = {count: name for name, count in CHANNELS.items()}
    return names.get(channels, f"{channels}c")


def shape(plan: Plan) -> str:
    """Brings the decoded audio to the output's rate and layout before anything measures it."""
    return f"aformat=sample_rates={plan.sample_rate}:channel_layouts={layout(plan.channels)}"


def convert_args(source: Path | None, output: Path, plan: Plan, limits: Limits,
                 copy_fd: int | None = None) -> list[str]:
    """Encode `source` (None: a WAV on stdin) to `output`; with `copy_fd`, also write the encoded
    stream (in Matroska) to that file descriptor, for a meter to measure the result while it is made."""
    args = ["ffmpeg", *COMMON, "-nostdin", "-nostats"]
    if plan.envelope is not None:
        args += [*source_args(source, plan.start, mapped=False), *envelope_args(plan)]
    else:
        args += source_args(source, plan.start, plan.stream)
        if plan.filters:
            args += ["-af", ",".join((shape(plan), *plan.filters))]
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
    args += ["-t", seconds(plan.duration)]
    if copy_fd is None:
        args += ["-fs", str(limits.max_output_bytes), *plan.target.muxer_args, "-f", plan.target.muxer]
        return [*args, "-progress", "pipe:1", "-y", f"file:{output}"]
    # The tee muxer ignores -fs, so the kernel's file size limit stands in for it: a write
    # past the limit kills ffmpeg, leaving the output at the limit, where the worker checks it.
    pairs = zip(plan.target.muxer_args[::2], plan.target.muxer_args[1::2], strict=True)
    options = [f"f={plan.target.muxer}", *(f"{name.lstrip('-')}={value}" for name, value in pairs)]
    return ["prlimit", f"--fsize={limits.max_output_bytes}", "--", *args, "-progress", "pipe:1", "-y",
            "-f", "tee", f"[{':'.join(options)}]file:{output}|[f=matroska]pipe:{copy_fd}"]


def progress_seconds(line: str) -> float | None:
    """The seconds of output a `-progress` line reports written, if it is that line."""
    key, _, value = line.strip().partition("=")
    return int(value) / 1e6 if key == "out_time_us" and value.lstrip("-").isdigit() else None


SPEECH_BYTES_PER_SECOND = 22050 * 2  # espeak-ng's WAV: 22.05 kHz, mono, 16 bits
WAV_HEADER_BYTES = 44


def speech_bytes(seconds: float) -> int:
    """The size of espeak-ng's WAV of `seconds` of speech."""
    return WAV_HEADER_BYTES + int(seconds * SPEECH_BYTES_PER_SECOND)


def tts_args(text: Path, wav: Path, voice: str, max_seconds: float) -> list[str]:
    """espeak-ng reads the text as plain text (no SSML: that needs -m) and writes a WAV, which
    the kernel stops at `max_seconds` of speech (a few KB of text can make an hour)."""
    return ["prlimit", f"--fsize={speech_bytes(max_seconds)}", "--",
            "espeak-ng", "-v", voice, "-w", str(wav), "-f", str(text)]


def seconds(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")
