"""The one place that starts processes (ffmpeg, ffprobe, espeak-ng).

Each run gets a deadline and its own process group; on time-out, cancel or any error
the whole group is killed and reaped. RQ's own job time-out would not kill children.
Each run is sandboxed: it sees what its `Sees` names and nothing else (`sandbox`).
ffmpeg and ffprobe are forked from a copy started once where the fork server is on
(`forkserver`); everything else, and everything when it is off, starts with an exec.
"""
from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable

from workers.ffmpeg.forkserver import Forked, Forkserver
from workers.ffmpeg.sandbox import FAILED_EXIT, LIBRARY, Sees, environment, stop_signals_held

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
# Nothing outlives its worker: an exec'd run gets SIGKILL when the thread that started it dies
# (util-linux's setpriv sets PR_SET_PDEATHSIG, which the exec keeps). The fork server's runs
# get the same from forkserver.c. Without setpriv, a run outlives a killed worker.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
STDERR_TAIL = 8000  # enough for ebur128's and astats' summaries


class ProcessFailed(Exception):
    """The process exited non-zero. `stderr_tail` is for logs, never for clients."""

    def __init__(self, message: str, returncode: int | None = None, stderr_tail: str = "", program: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode  # negative: the number of the signal that killed it
        self.stderr_tail = stderr_tail
        self.program = program


class ProcessTimedOut(ProcessFailed):
    pass


class SandboxFailed(ProcessFailed):
    """The run could not enter its sandbox: the service's fault (its kernel, its build), not the input's."""


class ProcessStopped(ProcessFailed):
    """Stopped on request (the job was canceled)."""


def run(
    args: list[str], *, sees: Sees, deadline_seconds: float,
    should_stop: Callable[[], bool] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> str:
    """Run `args`; return stdout (or feed it line by line to `on_line`)."""
    return _Process(args, on_line, sees).finish(deadline_seconds, should_stop)[0]


def run_for_log(
    args: list[str], *, sees: Sees, deadline_seconds: float, should_stop: Callable[[], bool] | None = None,
    log_line: Callable[[str], None] | None = None,
) -> str:
    """Run `args`; return the end of stderr, where ffmpeg's meters print their summaries.
    `log_line`, if given, then reads the whole of stderr line by line."""
    return _Process(args, None, sees).finish(deadline_seconds, should_stop, log_line)[1]


def run_side_by_side(
    commands: list[list[str]], *, sees: Sees, deadline_seconds: float,
    should_stop: Callable[[], bool] | None = None, log_lines: list[Callable[[str], None]],
) -> list[str]:
    """Run the commands at once (one per core); each one's log tail, its lines to `log_lines`."""
    started: list[_Process] = []
    deadline = time.monotonic() + deadline_seconds
    try:
        for args in commands:
            started.append(_Process(args, None, sees))
        return [process.finish(deadline - time.monotonic(), should_stop, log_line)[1]
                for process, log_line in zip(started, log_lines, strict=True)]
    finally:
        for process in started:
            process.kill()


def run_metered(
    make_args: Callable[[int], list[str]], meter_args: list[str], *, sees: Sees, deadline_seconds: float,
    should_stop: Callable[[], bool] | None = None, on_line: Callable[[str], None] | None = None,
) -> str:
    """Run a producer that writes a copy of its output to the file descriptor it is given
    (`make_args(fd)`) and, beside it on the other core, a meter that reads that copy on its
    stdin; return the meter's log tail. The meter ends when the producer's copy does."""
    # The meter reads its stdin and no file; if it dies, the producer fails.
    meter, write_end = _reading_a_pipe(meter_args, None, Sees(job=sees.job))
    outcome: list[str | ProcessFailed] = []

    def finish_meter() -> None:
        try:
            outcome.append(meter.finish(deadline_seconds, None)[1])
        except ProcessFailed as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=finish_meter, daemon=True)
    waiter.start()
    try:
        producer = _Process(make_args(write_end), on_line, sees, pass_fds=(write_end,))
    except BaseException:
        meter.kill()
        raise
    finally:
        os.close(write_end)
    try:
        producer.finish(deadline_seconds, should_stop)
    except BaseException:
        meter.kill()
        raise
    finally:
        waiter.join()
    if isinstance(outcome[0], ProcessFailed):
        raise outcome[0]
    return outcome[0]


def run_fed(
    args: list[str], feed: Callable[[int, threading.Event], bool], *, sees: Sees, deadline_seconds: float,
    should_stop: Callable[[], bool] | None = None, on_line: Callable[[str], None] | None = None,
) -> str:
    """Run `args` with its stdin written by `feed(fd, stop)` on a thread of its own; return stdout.
    `feed` returns whether it wrote everything; if it gives up, the process is stopped
    (ProcessStopped). `stop` is set when the process has ended, so a waiting feed can leave."""
    process, write_end = _reading_a_pipe(args, on_line, sees)
    gave_up, stop = threading.Event(), threading.Event()

    def pump() -> None:
        try:
            if not feed(write_end, stop):
                gave_up.set()
        except OSError:  # the process stopped reading: its exit status tells why
            pass
        except BaseException:
            gave_up.set()
            raise
        finally:
            os.close(write_end)  # set gave_up first: the process may end as soon as its input does

    feeder = threading.Thread(target=pump, daemon=True)
    feeder.start()
    try:
        output = process.finish(deadline_seconds, lambda: gave_up.is_set() or bool(should_stop and should_stop()))[0]
    finally:
        stop.set()
        feeder.join()
    if gave_up.is_set():
        raise ProcessStopped(f"{args[0]} was stopped: its input ended early")
    return output


def _program(args: list[str]) -> str:
    """The program a command line runs: prlimit execs the one after its `--`."""
    return args[args.index("--") + 1] if args[0] == "prlimit" and "--" in args[:-1] else args[0]


class Every:
    """A `should_stop` that asks `check()` at most once per `seconds` (the first time after
    `seconds`), and gives the last answer in between: checks that cost a query or a Redis
    round trip are not run on every wake-up of a waiting runner."""

    def __init__(self, seconds: float, check: Callable[[], bool]) -> None:
        self.seconds, self.check = seconds, check
        self.asked, self.answer = time.monotonic(), False

    def __call__(self) -> bool:
        if time.monotonic() - self.asked >= self.seconds:
            self.asked, self.answer = time.monotonic(), self.check()
        return self.answer


def _reading_a_pipe(args: list[str], on_line: Callable[[str], None] | None, sees: Sees) -> tuple[_Process, int]:
    """`args` started with a new pipe as its stdin, and the pipe's write end. The process holds
    the only read end: once it is gone, writes fail instead of waiting."""
    read_end, write_end = os.pipe()
    try:
        return _Process(args, on_line, sees, stdin=read_end), write_end
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)


class _Process:
    """One started process: stdout goes line by line to `on_line` (or is collected),
    stderr to a temporary file whose tail is kept."""

    def __init__(self, args: list[str], on_line: Callable[[str], None] | None, sees: Sees, *,
                 stdin: int = subprocess.DEVNULL, pass_fds: tuple[int, ...] = ()) -> None:
        self.args = args
        self.collected: list[str] = []
        spec = sees.spec()
        if spec is not None and not LIBRARY.exists():  # preloading a missing library is a warning only
            raise SandboxFailed(f"{LIBRARY.name} is not built (scripts/setup.sh builds it): no sandbox for "
                                f"{args[0]}", program=_program(args))
        self.stderr = tempfile.TemporaryFile()
        try:
            server = Forkserver.of(args[0], sees.job)
            forked = server.start(args, stdin, self.stderr.fileno(), pass_fds, spec) if server else None
            with stop_signals_held():
                self.process = forked or subprocess.Popen(
                    [*DIE_WITH_PARENT, *args], stdin=stdin, stdout=subprocess.PIPE, stderr=self.stderr,
                    pass_fds=pass_fds, env=environment(spec, _program(args)), start_new_session=True, text=True,
                    errors="replace",
                )
        except BaseException:
            self.stderr.close()
            raise
        self.reader = threading.Thread(target=_pump, args=(self.process, on_line or self.collected.append),
                                       daemon=True)
        self.reader.start()

    def finish(self, deadline_seconds: float, should_stop: Callable[[], bool] | None,
               log_line: Callable[[str], None] | None = None) -> tuple[str, str]:
        """Wait for the end (killing the group on time-out or stop); stdout and the stderr tail."""
        args, process = self.args, self.process
        deadline = time.monotonic() + deadline_seconds
        with self.stderr as stderr:
            try:
                while process.poll() is None:
                    if time.monotonic() > deadline:
                        raise ProcessTimedOut(f"{args[0]} took longer than {deadline_seconds:g} seconds")
                    if should_stop is not None and should_stop():
                        raise ProcessStopped(f"{args[0]} was stopped")
                    _wait(process, self.reader)
            finally:
                self.kill()
                self.reader.join(timeout=5)
            stderr.seek(0, os.SEEK_END)
            stderr.seek(max(0, stderr.tell() - STDERR_TAIL))
            tail = stderr.read().decode("utf-8", "replace")
            if log_line is not None and process.returncode == 0:
                stderr.seek(0)
                for line in stderr:
                    log_line(line.decode("utf-8", "replace"))
        if process.returncode == FAILED_EXIT and "sandbox: " in tail:
            raise SandboxFailed(f"{args[0]} could not enter its sandbox: {tail.strip()}", process.returncode, tail,
                                _program(args))
        if process.returncode != 0:
            raise ProcessFailed(f"{args[0]} exited with {process.returncode}", process.returncode, tail, _program(args))
        return "".join(self.collected), tail

    def kill(self) -> None:
        _kill_group(self.process)


def _wait(process: Started, reader: threading.Thread) -> None:
    """Up to POLL_SECONDS for the process to end. The reader sees stdout close the moment the
    process exits, so joining it wakes at once; Popen.wait(timeout) sleeps in steps of up to
    50 ms, which every one of a job's runs would add to its latency."""
    if reader.is_alive():
        reader.join(timeout=POLL_SECONDS)
    if reader.is_alive():
        process.poll()
    else:
        _exited(process, POLL_SECONDS)


def _exited(process: Started, seconds: float) -> None:
    """Reap the process if it exits within `seconds`, woken by its exit: its stdout closes a
    little before it can be reaped, and Popen.wait(timeout) then sleeps in steps of 0.5 ms and
    more, time in which the worker sits idle while it could convert."""
    if process.poll() is not None:
        return
    if isinstance(process, Forked):  # its keeper's report wakes the wait
        try:
            process.wait(seconds)
        except subprocess.TimeoutExpired:
            pass
        return
    try:
        handle = os.pidfd_open(process.pid)
    except OSError:  # no pidfds here: sleep in Popen's steps
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pass
        return
    try:
        waiting = select.poll()  # not select(): it cannot take a descriptor above 1023
        waiting.register(handle, select.POLLIN)
        waiting.poll(seconds * 1000)
    finally:
        os.close(handle)
    process.poll()


def _pump(process: Started, sink: Callable[[str], None]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        sink(line)


def _kill_group(process: Started) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


Started = subprocess.Popen[str] | Forked
