"""Every ffmpeg, ffprobe and espeak-ng run in a sandbox (workers/ffmpeg/sandbox.py): it reads its
own inputs and writes in its own work folder, nothing else, and opens no socket; forked from
the fork server or exec'd. Each test's hostile command relaxes the demuxer or protocol
whitelist on purpose, so that only the sandbox stands in the way, and runs once without the
sandbox to show that the same command does reach the file or the server then."""
from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_audio

from workers.ffmpeg import runner
from workers.ffmpeg.forkserver import Forkserver
from workers.ffmpeg.sandbox import LIBRARY, Sees, espeak_data
from workers.problems import ErrorCode, Failure, JobProblem, Stage, failures_of

pytestmark = pytest.mark.skipif(not LIBRARY.exists(), reason="scripts/setup.sh builds the library")


@pytest.fixture(params=["forked", "exec'd"])
def started(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FFMPEG_FORKSERVER", "1" if request.param == "forked" else "0")
    return str(request.param)


@pytest.fixture()
def job(tmp_path: Path) -> tuple[Path, Path]:
    """A job's input and its work folder, beside another job's input and a private file."""
    (tmp_path / "inputs").mkdir()
    (tmp_path / "work").mkdir()
    make_audio(tmp_path / "inputs" / "mine.wav", seconds=1.0)
    make_audio(tmp_path / "inputs" / "theirs.wav", seconds=2.0)
    (tmp_path / "private.txt").write_text("not for ffmpeg\n")
    return tmp_path / "inputs" / "mine.wav", tmp_path / "work"


def _ffmpeg(*args: str) -> list[str]:
    return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *args]


def _run(args: list[str], sees: Sees) -> str:
    """The run's stdout; its stderr's tail if it failed."""
    try:
        return runner.run(args, sees=sees, deadline_seconds=30)
    except runner.ProcessFailed as exc:
        return f"failed: {exc.stderr_tail}"


def test_a_run_converts_its_own_input_into_its_work_folder(started: str, job: tuple[Path, Path]) -> None:
    mine, work = job
    sees = Sees(reads=(mine,), writes=(work,), job="job-a")
    assert _run(_ffmpeg("-i", f"file:{mine}", "-y", f"file:{work / 'out.flac'}"), sees) == ""
    assert (work / "out.flac").stat().st_size > 0


def test_a_playlist_cannot_make_a_run_read_another_jobs_input(
        started: str, job: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    mine, work = job
    theirs = mine.with_name("theirs.wav")
    playlist = work / "list.ffconcat"  # what a hostile upload would hold
    playlist.write_text(f"ffconcat version 1.0\nfile 'file:{theirs}'\n")
    command = _ffmpeg("-f", "concat", "-safe", "0", "-i", f"file:{playlist}", "-f", "wav", "-y",
                      f"file:{work / 'stolen.wav'}")
    sees = Sees(reads=(mine,), writes=(work,), job="job-a")
    refused = _run(command, sees)
    assert "Permission denied" in refused and not (work / "stolen.wav").exists()
    monkeypatch.setenv("FFMPEG_SANDBOX", "0")
    assert _run(command, sees) == "" and (work / "stolen.wav").stat().st_size > 0  # what the sandbox stopped


@pytest.mark.parametrize("private", ["/etc/hostname", "private.txt"])
def test_a_run_reads_no_file_outside_its_job(started: str, job: tuple[Path, Path], private: str) -> None:
    mine, work = job
    path = Path(private) if private.startswith("/") else work.parent / private
    command = _ffmpeg("-f", "data", "-i", f"file:{path}", "-map", "0", "-c", "copy", "-f", "data", "pipe:1")
    assert _run(command, Sees(reads=(mine,), job="job-a")).startswith("failed:")
    assert _run(command, Sees(reads=(mine, path), job="job-a")) == path.read_text()  # the same run, allowed


def test_a_run_writes_nowhere_but_its_work_folder(started: str, job: tuple[Path, Path]) -> None:
    mine, work = job
    outside = work.parent / "inputs" / "planted.wav"
    assert "Permission denied" in _run(_ffmpeg("-i", f"file:{mine}", "-y", f"file:{outside}"),
                                       Sees(reads=(mine,), writes=(work,), job="job-a"))
    assert not outside.exists()


@pytest.fixture()
def listening() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on this machine, and the paths it was asked for."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            asked.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", asked
    server.shutdown()
    server.server_close()


def test_a_run_opens_no_socket(started: str, job: tuple[Path, Path], listening: tuple[str, list[str]],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    mine, work = job
    url, asked = listening
    command = _ffmpeg("-protocol_whitelist", "http,tcp", "-f", "data", "-i", f"{url}leak", "-map", "0",
                      "-c", "copy", "-f", "data", "pipe:1")
    refused = _run(command, Sees(reads=(mine,), writes=(work,), job="job-a"))
    assert refused.startswith("failed:") and "Permission denied" in refused and asked == []
    monkeypatch.setenv("FFMPEG_SANDBOX", "0")
    _run(command, Sees(job="job-a"))
    assert asked == ["/leak"]  # without the sandbox, the same run reached the server


def test_espeak_ng_speaks_in_its_sandbox_and_reads_nothing_else(tmp_path: Path) -> None:
    text, wav = tmp_path / "text.txt", tmp_path / "work" / "speech.wav"
    wav.parent.mkdir()
    text.write_text("Hello from the sandbox.")
    runner.run(["espeak-ng", "-v", "en", "-w", str(wav), "-f", str(text)],
               sees=Sees(reads=(text, espeak_data()), writes=(wav.parent,)), deadline_seconds=30)
    assert wav.stat().st_size > 1000
    with pytest.raises(runner.ProcessFailed):  # its voices are files like any other
        runner.run(["espeak-ng", "-v", "en", "-w", str(wav), "-f", str(text)],
                   sees=Sees(reads=(text,), writes=(wav.parent,)), deadline_seconds=30)


def test_a_run_that_cannot_enter_its_sandbox_fails_the_job_as_the_services_fault(
        started: str, job: tuple[Path, Path]) -> None:
    mine, _work = job
    with pytest.raises(JobProblem) as raised, failures_of(Stage.CONVERT, deadline=30):
        runner.run(_ffmpeg("-i", f"file:{mine}", "-f", "null", "-"),
                   sees=Sees(reads=(mine, mine.with_name("gone.wav")), job="job-a"), deadline_seconds=30)
    assert raised.value.failure == Failure.SANDBOX and raised.value.code == ErrorCode.CONVERSION_FAILED
    assert "not of the input" in raised.value.message


def test_no_two_jobs_share_a_fork_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server's runs share its memory layout: one job's runs must not teach it to another's."""
    monkeypatch.setenv("FFMPEG_FORKSERVER", "1")
    version = ["ffprobe", "-hide_banner", "-version"]
    runner.run(version, sees=Sees(job="job-a"), deadline_seconds=30)
    first = Forkserver.servers["ffprobe"]
    runner.run(version, sees=Sees(job="job-a"), deadline_seconds=30)
    assert Forkserver.servers["ffprobe"] is first  # the same job's runs: one server
    spare = Forkserver.spares["ffprobe"]
    runner.run(version, sees=Sees(job="job-b"), deadline_seconds=30)
    assert Forkserver.servers["ffprobe"] is spare and first.retired  # loaded while job-a ran
    assert first.process.poll() is not None  # the old layout is gone with its process


def test_a_run_of_no_job_is_never_forked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FFMPEG_FORKSERVER", "1")
    assert Forkserver.of("ffprobe", None) is None

