"""What an input holds: its audio streams, as ffprobe reports them.

The one probe of the service: the worker plans each conversion from it, and the File
Conversion endpoint refuses an upload it cannot read. A plain PCM WAV is read from its header
(`wavheader`); anything else goes to ffprobe, behind the demuxer and protocol whitelists.
"""
from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import IO, Any

from jobs_api.catalog import parse_time
from workers.ffmpeg import runner, wavheader
from workers.ffmpeg.commands import COMMON, FORMAT_WHITELIST, INPUT_GUARD
from workers.ffmpeg.plan import SourceInfo
from workers.ffmpeg.sandbox import NOTHING, Sees

PROBE_SECONDS = 30


class NotAudio(Exception):
    """The probed file holds no audio stream we can read."""


def probe(path: Path, job: str | None = None) -> list[SourceInfo]:
    """Every audio stream of the file, in order. NotAudio if it has none; runner.ProcessFailed
    (or ProcessTimedOut) if ffprobe cannot read it. `job`: whose input it is (sandbox.Sees)."""
    plain_wav = wavheader.read(path)
    if plain_wav is not None:
        return [plain_wav]
    return parse_streams(runner.run(probe_args(path), sees=Sees(reads=(path,), job=job),
                                    deadline_seconds=PROBE_SECONDS))


def probe_stream(reader: IO[bytes]) -> list[SourceInfo]:
    """`probe` for a file read front to back (an upload in a bucket), on ffprobe's stdin: no copy
    on disk. ffprobe stops reading once it knows the streams, so most files are read for their
    head only; an MP4 whose index comes last is read to it."""
    unread: list[Exception] = []  # the reader's failure (the bucket went away), raised as itself

    def feed(fd: int, stop: threading.Event) -> bool:
        while not stop.is_set():
            try:
                chunk = reader.read(FEED_BYTES)
            except Exception as exc:  # noqa: BLE001 - handed to the caller below
                unread.append(exc)
                return False
            if not chunk:
                break
            os.write(fd, chunk)  # once ffprobe has its answer and exits, this fails: the pump's OSError
        return True

    args = ["ffprobe", *COMMON, "-format_whitelist", FORMAT_WHITELIST, "-protocol_whitelist", "pipe",
            *SHOWN, "pipe:0"]
    try:
        return parse_streams(runner.run_fed(args, feed, sees=NOTHING, deadline_seconds=PROBE_SECONDS))
    except runner.ProcessStopped:
        if unread:
            raise unread[0] from None
        raise


def prober_version() -> str:
    """ffprobe's version line: that it starts at all (the API's readiness check)."""
    version = runner.run(["ffprobe", "-hide_banner", "-version"], sees=NOTHING, deadline_seconds=PROBE_SECONDS)
    return version.split("\n")[0]


SHOWN = [
    "-show_entries",
    "format=format_name,duration,bit_rate:stream=index,codec_type,codec_name,sample_rate,"
    "channels,bits_per_raw_sample,bits_per_sample,duration,bit_rate:stream_tags=DURATION",
    "-of", "json",
]
FEED_BYTES = 256 * 1024


def probe_args(path: Path) -> list[str]:
    return ["ffprobe", *COMMON, *INPUT_GUARD, *SHOWN, f"file:{path}"]


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
