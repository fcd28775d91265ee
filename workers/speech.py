"""Text to speech: a plain-text input is spoken by espeak-ng, then converted like any audio."""
from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs_api import catalog
from jobs_api.models import InputFile
from workers.ffmpeg import runner
from workers.ffmpeg.commands import tts_args
from workers.ffmpeg.sandbox import Sees, espeak_data
from workers.problems import Failure, JobProblem, Stage, failures_of

if TYPE_CHECKING:
    from workers.run import ConversionRun

TEXT_TYPES = ("text/plain",)
TEXT_MAX_BYTES = 256 * 1024


def is_text(item: InputFile) -> bool:
    content_type = (item.content_type or "").split(";")[0].strip().lower()
    return content_type in TEXT_TYPES or (item.filename or "").lower().endswith(".txt")


def speak(run: ConversionRun, text: Path, options: dict[str, Any], wav: Path) -> Path:
    """Speak a plain-text input into `wav`, in the voice of its `language_tts`."""
    if text.stat().st_size > TEXT_MAX_BYTES:
        raise JobProblem(Failure.TEXT_TOO_LONG, kib=TEXT_MAX_BYTES // 1024)
    try:
        text.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobProblem(Failure.TEXT_NOT_UTF8) from exc
    voice = catalog.TTS_VOICES[options.get("language_tts") or catalog.DEFAULTS["language_tts"]]
    seconds = run.limits.max_duration
    sees = Sees(reads=(text, espeak_data()), writes=(run.work,))
    with failures_of(Stage.SPEAK, deadline=run.deadline):
        try:
            runner.run(tts_args(text, wav, voice, seconds), sees=sees, deadline_seconds=run.deadline,
                       should_stop=run.stop_requested)
        except runner.ProcessFailed as exc:
            if exc.returncode == -signal.SIGXFSZ:  # the kernel stopped it at the size limit
                raise JobProblem(Failure.SPEECH_TOO_LONG, limit=seconds) from exc
            raise
    return wav
