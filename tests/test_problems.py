"""The one table from failures to codes and messages, and how a failed process is classified
(real processes, ended each way)."""
from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TEST_RUNS, ffmpeg_runs

from jobs_api import outbound
from workers.ffmpeg import runner
from workers.ffmpeg.probe import NotAudio
from workers.ffmpeg.sandbox import NOTHING
from workers.problems import FAILURES, Canceled, ErrorCode, Failure, JobProblem, Stage, download_failures, failures_of


def test_every_failure_has_a_code_and_a_message() -> None:
    assert set(FAILURES) == set(Failure)
    assert all(isinstance(code, ErrorCode) and message for code, message in FAILURES.values())


def _problem(stage: Stage, script: str, output: Path | None = None, limit: int = 0) -> JobProblem:
    with pytest.raises(JobProblem) as raised, failures_of(stage, deadline=0.5, output=output, max_output_bytes=limit):
        runner.run(["sh", "-c", script], sees=NOTHING, deadline_seconds=0.5)
    return raised.value


def _terminate_ffmpeg_once_started() -> Callable[[], bool]:
    """A should_stop that never stops, but sends SIGTERM to this process's newest ffmpeg run
    (as systemd or a deploy would) once it runs."""
    sent: list[int] = []

    def look() -> bool:
        if not sent:
            runs = ffmpeg_runs()
            if runs:
                sent.append(max(runs))
                os.kill(sent[0], signal.SIGTERM)
        return False

    return look


def test_a_conversion_killed_by_a_signal_is_not_a_damaged_input() -> None:
    killed = _problem(Stage.CONVERT, "kill -TERM $$")
    assert (killed.failure, killed.code) == (Failure.FFMPEG_SIGNAL, ErrorCode.CONVERSION_FAILED)
    assert killed.message == "The conversion was interrupted (sh was stopped by SIGTERM); please try again."
    with pytest.raises(JobProblem) as raised, failures_of(Stage.CONVERT, deadline=30):
        runner.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "lavfi", "-i", "anoisesrc",
                    "-f", "null", "-"], sees=TEST_RUNS, deadline_seconds=30,
                   on_line=None, should_stop=_terminate_ffmpeg_once_started())
    assert raised.value.failure == Failure.FFMPEG_SIGNAL  # ffmpeg caught SIGTERM, finished, exited 255
    damaged = _problem(Stage.CONVERT, "exit 1")
    assert (damaged.failure, damaged.code) == (Failure.FFMPEG_EXIT, ErrorCode.DAMAGED)


@pytest.mark.usefixtures("unsandboxed")  # the shell execs sleep
def test_a_deadline_a_size_limit_and_a_probe_each_say_what_happened(tmp_path: Path) -> None:
    assert _problem(Stage.CONVERT, "sleep 5").message == "The conversion took longer than 0.5 s and was stopped."
    assert _problem(Stage.PROBE, "sleep 5").failure == Failure.PROBE_DEADLINE
    assert _problem(Stage.PROBE, "exit 1").failure == Failure.PROBE_UNREADABLE
    assert _problem(Stage.SPEAK, "exit 1").failure == Failure.TEXT_NOT_SPOKEN
    full = tmp_path / "out.mp3"
    full.write_bytes(b"x" * 100)
    at_limit = _problem(Stage.CONVERT, "kill -XFSZ $$", output=full, limit=100)
    assert at_limit.failure == Failure.OUTPUT_TOO_LARGE and "100 bytes" in at_limit.message


def test_a_stopped_run_is_a_cancel_and_no_audio_a_problem() -> None:
    with pytest.raises(Canceled), failures_of(Stage.CONVERT, deadline=5):
        runner.run(["sleep", "5"], sees=NOTHING, deadline_seconds=5, should_stop=lambda: True)
    with pytest.raises(JobProblem) as raised, failures_of(Stage.PROBE, deadline=5):
        raise NotAudio("no audio stream")
    assert raised.value.message == "The input has no audio stream."


def test_a_refused_or_failed_download_names_its_reason() -> None:
    with pytest.raises(JobProblem) as raised, download_failures():
        outbound.fetch_to_file("http://127.0.0.1:9/x", None, allow=outbound.Allowance.parse([]),  # type: ignore[arg-type]
                               max_bytes=10, timeout=1)
    assert raised.value.code == ErrorCode.INPUT_REFUSED
    assert raised.value.message.startswith("The input URL is not allowed: ")
