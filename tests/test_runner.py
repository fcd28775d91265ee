"""An encode measured while it is made: what the meter reads, the size limit, a dying meter;
the throttled stop check; and reaping a process that closed its stdout early."""
from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TEST_RUNS, loudness, make_audio

from jobs_api.catalog import TARGETS
from workers.ffmpeg import forkserver, runner
from workers.ffmpeg.commands import convert_args
from workers.ffmpeg.forkserver import Forkserver
from workers.ffmpeg.meters import Levels, meter_args, parse_levels
from workers.ffmpeg.plan import Limits, Plan, plan_conversion
from workers.ffmpeg.probe import parse_probe, probe_args
from workers.ffmpeg.sandbox import LIBRARY, NOTHING, STOP_SIGNALS, stop_signals_held

LIMITS = Limits(max_duration=3600, max_output_bytes=64 * 1024 * 1024, max_channels=8, max_sample_rate=192000)


@pytest.fixture(scope="module")
def noise(audio_dir: Path) -> Path:
    return make_audio(audio_dir / "runner-noise.wav", seconds=8.0,
                      source="anoisesrc=color=pink:duration=8:amplitude=0.3:sample_rate=44100")


def plan_for(source: Path, target: str, limits: Limits = LIMITS) -> Plan:
    info = parse_probe(runner.run(probe_args(source), sees=TEST_RUNS, deadline_seconds=30))
    return plan_conversion(TARGETS[target], {}, info, limits)


def metered(source: Path, out: Path, plan: Plan, limits: Limits = LIMITS,
            meter: list[str] | None = None) -> Levels:
    log = runner.run_metered(lambda fd: convert_args(source, out, plan, limits, copy_fd=fd),
                             meter or meter_args(("ebu",)), sees=TEST_RUNS, deadline_seconds=60)
    return parse_levels(log)


@pytest.mark.parametrize("target", ["m4a", "mp3", "flac"])
def test_the_meter_measures_what_the_file_holds(target: str, noise: Path, tmp_path: Path) -> None:
    out = tmp_path / f"out.{TARGETS[target].extension}"
    levels = metered(noise, out, plan_for(noise, target))
    on_file = loudness(out)
    assert levels.integrated == pytest.approx(on_file["integrated"], abs=0.2)
    assert levels.true_peak == pytest.approx(on_file["true_peak"], abs=0.3)
    written = parse_probe(runner.run(probe_args(out), sees=TEST_RUNS, deadline_seconds=30))
    assert written.duration == pytest.approx(8.0, abs=0.05)


def test_the_kernel_stops_the_output_at_the_size_limit(noise: Path, tmp_path: Path) -> None:
    limits = Limits(max_duration=3600, max_output_bytes=100_000, max_channels=8, max_sample_rate=192000)
    out = tmp_path / "big.wav"
    with pytest.raises(runner.ProcessFailed):
        metered(noise, out, plan_for(noise, "wav", limits), limits)
    assert out.stat().st_size == 100_000  # 8 s of CD audio would be 1.4 MB


def test_a_meter_that_dies_fails_the_encode_instead_of_stalling_it(noise: Path, tmp_path: Path) -> None:
    broken = [*meter_args(("ebu",))[:-5], "-af", "no_such_filter", "-f", "null", "-"]
    with pytest.raises(runner.ProcessFailed) as failed:
        metered(noise, tmp_path / "out.flac", plan_for(noise, "flac"), meter=broken)
    assert not isinstance(failed.value, runner.ProcessTimedOut)


def test_every_asks_at_most_once_per_interval_and_keeps_the_answer() -> None:
    asked: list[float] = []

    def canceled() -> bool:
        asked.append(time.monotonic())
        return True

    check = runner.Every(0.2, canceled)
    assert check() is False and asked == []  # not before the first interval
    time.sleep(0.25)
    assert check() is True and len(asked) == 1
    assert check() is True and len(asked) == 1  # the last answer, without asking
    time.sleep(0.25)
    assert check() is True and len(asked) == 2


# After stdout closes: a process is reaped when it exits, however long after -----------------

@pytest.mark.usefixtures("unsandboxed")
def test_a_process_that_closes_stdout_early_still_gives_its_output_and_status() -> None:
    # stdout closes; the process lives on past several waits, then ends: its output and its status.
    script = "echo early; exec 1>&-; sleep {pause}; exit {code}"
    assert runner.run(["sh", "-c", script.format(pause=0.3, code=0)], sees=NOTHING, deadline_seconds=30) == "early\n"
    with pytest.raises(runner.ProcessFailed) as failed:
        runner.run(["sh", "-c", script.format(pause=0.3, code=3)], sees=NOTHING, deadline_seconds=30)
    assert failed.value.returncode == 3


@pytest.mark.usefixtures("unsandboxed")
def test_a_process_that_closes_stdout_and_hangs_is_stopped_at_its_deadline() -> None:
    with pytest.raises(runner.ProcessTimedOut):
        runner.run(["sh", "-c", "exec 1>&-; sleep 30"], sees=NOTHING, deadline_seconds=0.5)


@pytest.mark.usefixtures("unsandboxed")
def test_the_wait_for_the_exit_works_with_many_files_open() -> None:
    # select() cannot watch a descriptor above 1023; a busy worker may hold that many.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip("the file descriptor limit is below 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        script = "echo early; exec 1>&-; sleep 0.2"
        assert runner.run(["sh", "-c", script], sees=NOTHING, deadline_seconds=30) == "early\n"
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ffmpeg forked from a server started once (forkserver.c) ------------------------------------

def _endless(marker: str) -> list[str]:
    """An ffmpeg run that goes on until it is stopped, named by `marker`."""
    return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi",
            "-i", "anullsrc=r=8000:cl=mono", "-t", "600", "-metadata", marker, "-f", "null", "-"]


def _run_until(args: list[str], look: Callable[[int], bool]) -> tuple[int, BaseException]:
    """Run `args` until `look(pid)` says stop (asked while it runs); its pid and what the run raised."""
    seen: list[int] = []

    def should_stop() -> bool:
        pids = _pids_of(" ".join(args))
        if not pids:
            return False
        seen.append(pids[0])
        return look(pids[0])

    with pytest.raises(runner.ProcessFailed) as raised:
        runner.run(args, sees=TEST_RUNS, deadline_seconds=20, should_stop=should_stop)
    return seen[-1], raised.value


def _pids_of(command: str) -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and command in _cmdline(int(name))]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


needs_forkserver = pytest.mark.skipif(not Forkserver.LIBRARY.exists(), reason="scripts/setup.sh builds it")


@pytest.fixture()
def forkserver_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """For the tests of the fork server itself, whatever CI's plain run sets."""
    monkeypatch.setenv("FFMPEG_FORKSERVER", "1")


@needs_forkserver
@pytest.mark.usefixtures("forkserver_on")
def test_a_forked_run_that_ends_before_its_pid_is_read_is_still_seen_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its keeper's two reports (pid, then exit) then wait together in the socket: reading the
    first must leave the second there, or the runner waits for it until the deadline (a job
    of the 500-job test did, under load)."""
    read_line = forkserver._line

    def late(connection: socket.socket) -> str:
        time.sleep(0.5)  # ffmpeg -version is over by now
        return read_line(connection)

    monkeypatch.setattr(forkserver, "_line", late)
    assert "ffmpeg version" in runner.run(["ffmpeg", "-hide_banner", "-version"], sees=TEST_RUNS, deadline_seconds=20)


@needs_forkserver
@pytest.mark.usefixtures("forkserver_on")
def test_a_forked_run_shows_its_command_holds_only_its_own_files_and_is_stopped() -> None:
    marker = f"title=run-{os.getpid()}-{time.monotonic_ns()}"
    args = _endless(marker)
    seen: dict[str, object] = {}

    def look(pid: int) -> bool:
        seen["command"] = _cmdline(pid).split()
        seen["files"] = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
        seen["parent"] = _parent(pid)
        seen["group"] = os.getpgid(pid)
        return True

    pid, raised = _run_until(args, look)
    assert isinstance(raised, runner.ProcessStopped)
    assert seen["command"] == args  # as ps shows it
    assert seen["files"] == [0, 1, 2]  # nothing of the worker's, the server's or another run's
    assert seen["parent"] != os.getpid()  # forked by the server's keeper, not started here
    assert seen["group"] == pid  # its own process group, which the stop killed
    deadline = time.monotonic() + 5  # its keeper reaps it once the runner has its status
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped


@needs_forkserver
@pytest.mark.usefixtures("forkserver_on")
def test_a_run_that_crashes_replaces_the_server() -> None:
    runner.run(["ffmpeg", "-version"], sees=TEST_RUNS, deadline_seconds=30)
    before = Forkserver.servers["ffmpeg"]

    def crash(pid: int) -> bool:
        os.kill(pid, signal.SIGSEGV)
        return False

    _, raised = _run_until(_endless(f"title=crash-{os.getpid()}-{time.monotonic_ns()}"), crash)
    assert raised.returncode == -signal.SIGSEGV
    assert before.retired and before.process.poll() is not None  # the server is gone
    runner.run(["ffmpeg", "-version"], sees=TEST_RUNS, deadline_seconds=30)
    assert Forkserver.servers["ffmpeg"] is not before


@needs_forkserver
@pytest.mark.usefixtures("forkserver_on")
def test_a_run_whose_keeper_is_killed_is_killed_too() -> None:
    def kill_keeper(pid: int) -> bool:
        assert _parent(pid) != os.getpid()  # a keeper, not this process (were the run started here)
        os.kill(_parent(pid), signal.SIGKILL)
        return False

    pid, raised = _run_until(_endless(f"title=orphan-{os.getpid()}-{time.monotonic_ns()}"), kill_keeper)
    assert not isinstance(raised, runner.ProcessStopped) and raised.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while _state(pid) not in ("", "Z") and time.monotonic() < deadline:  # the kill takes a moment
        time.sleep(0.01)
    assert _state(pid) in ("", "Z")  # gone, or dead and waiting for init to reap it


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


@needs_forkserver
@pytest.mark.usefixtures("forkserver_on")
def test_a_server_that_died_is_replaced_without_failing_a_run() -> None:
    runner.run(["ffmpeg", "-version"], sees=TEST_RUNS, deadline_seconds=30)
    before = Forkserver.servers["ffmpeg"]
    before.process.kill()
    before.process.wait()
    version = runner.run(["ffmpeg", "-hide_banner", "-version"], sees=TEST_RUNS, deadline_seconds=30)
    assert version.startswith("ffmpeg version")
    assert Forkserver.servers["ffmpeg"] is not before


@needs_forkserver
def test_without_the_server_ffmpeg_is_started_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FFMPEG_FORKSERVER", "0")

    def parent(pid: int) -> bool:
        assert _parent(pid) == os.getpid()
        return True

    _run_until(_endless(f"title=exec-{os.getpid()}-{time.monotonic_ns()}"), parent)


STOP_SIGNAL_BITS = sum(1 << (number - 1) for number in STOP_SIGNALS)


def _signal_masks(status: str) -> dict[str, int]:
    """The blocked and pending signal masks /proc/<pid>/status shows."""
    names = ("SigBlk", "SigPnd", "ShdPnd")
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if line.startswith(names))
    return {name: int(value, 16) for name, value in fields.items()}


@pytest.mark.skipif(not LIBRARY.exists(), reason="scripts/setup.sh builds the library")
def test_a_stop_that_reaches_a_run_before_its_setsid_is_dropped_not_kept() -> None:
    """The moment between fork and setsid, when a stop sent to the worker's group reaches the
    child too: the child raises SIGTERM on itself there, then execs a program with the library."""
    child = ("import os, signal, sys; os.kill(os.getpid(), signal.SIGTERM); "
             "os.execve('/bin/cat', ['cat', '/proc/self/status'], {'LD_PRELOAD': sys.argv[1]})")
    with stop_signals_held():
        ran = subprocess.run([sys.executable, "-c", child, str(LIBRARY)], capture_output=True, text=True, timeout=30)
    assert ran.returncode == 0, ran.stderr
    masks = _signal_masks(ran.stdout)
    assert len(masks) == 3 and all(mask & STOP_SIGNAL_BITS == 0 for mask in masks.values()), masks


@pytest.mark.usefixtures("unsandboxed")
def test_a_run_starts_with_no_signal_held_or_pending() -> None:
    """Runs are started with the stop signals held (stop_signals_held); the run must not keep
    them held, or a SIGTERM sent to it would wait for ever."""
    masks = _signal_masks(runner.run(["cat", "/proc/self/status"], sees=NOTHING, deadline_seconds=30))
    assert len(masks) == 3 and all(mask & STOP_SIGNAL_BITS == 0 for mask in masks.values()), masks


ORPHAN_CHECK = """
import sys
from workers.ffmpeg import runner
from workers.ffmpeg.sandbox import Sees
print("started", flush=True)
runner.run(["ffmpeg", "-hide_banner", "-nostdin", "-f", "lavfi", "-i", "anoisesrc", "-metadata",
            "title=" + sys.argv[1], "-f", "null", "-"], sees=Sees(job="orphan-check"), deadline_seconds=600)
"""


@pytest.mark.parametrize("forkserver", ["1", "0"])
def test_a_killed_worker_leaves_no_ffmpeg_behind(forkserver: str) -> None:
    """kill -9 of the process that runs ffmpeg (as the OOM killer would do to a worker): its
    ffmpeg goes within 2 s, forked from the fork server or exec'd."""
    if forkserver == "1" and not Forkserver.LIBRARY.exists():
        pytest.skip("scripts/setup.sh builds the fork server")
    marker = f"orphan-{forkserver}-{os.getpid()}-{time.monotonic_ns()}"
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN_CHECK, marker], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "FFMPEG_FORKSERVER": forkserver}, cwd=Path(__file__).parent.parent)

    def running() -> list[int]:
        found = subprocess.run(["pgrep", "-f", f"title={marker}"], capture_output=True, text=True).stdout.split()
        return [int(pid) for pid in found if int(pid) != parent.pid]

    try:
        assert parent.stdout is not None and parent.stdout.readline() == "started\n"
        deadline = time.monotonic() + 20
        while not running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running(), "ffmpeg did not start"
        parent.kill()
        parent.wait()
        gone_by = time.monotonic() + 2
        while running() and time.monotonic() < gone_by:
            time.sleep(0.05)
        assert running() == []
    finally:
        for pid in running():
            os.kill(pid, signal.SIGKILL)
