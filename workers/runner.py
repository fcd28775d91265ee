"""The one place that starts processes (ffmpeg, ffprobe).

Each run gets a deadline and its own process group; on time-out, cancel or any error
the whole group is killed and reaped. RQ's own job time-out would not kill children.

ffmpeg and ffprobe run as forks of a copy of the program that was started once and stopped
before its main() (forkserver.c, built by scripts/setup.sh): binding the symbols of Debian's
ffmpeg's 215 libraries costs about as much CPU as converting a five-second clip. Where the
library is not built, or FFMPEG_FORKSERVER=0, they are started with an exec like the rest.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, TextIO

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
STDERR_TAIL = 8000  # enough for ebur128's and astats' summaries


class ProcessFailed(Exception):
    """The process exited non-zero. `stderr_tail` is for logs, never for clients."""

    def __init__(self, message: str, returncode: int | None = None, stderr_tail: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class ProcessTimedOut(ProcessFailed):
    pass


class ProcessStopped(ProcessFailed):
    """Stopped on request (the job was canceled)."""


def run(
    args: list[str], *, deadline_seconds: float,
    should_stop: Callable[[], bool] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> str:
    """Run `args`; return stdout (or feed it line by line to `on_line`)."""
    return _Process(args, on_line).finish(deadline_seconds, should_stop)[0]


def run_for_log(
    args: list[str], *, deadline_seconds: float, should_stop: Callable[[], bool] | None = None,
    log_line: Callable[[str], None] | None = None,
) -> str:
    """Run `args`; return the end of stderr, where ffmpeg's meters print their summaries.
    `log_line`, if given, then reads the whole of stderr line by line."""
    return _Process(args, None).finish(deadline_seconds, should_stop, log_line)[1]


def run_side_by_side(
    commands: list[list[str]], *, deadline_seconds: float, should_stop: Callable[[], bool] | None = None,
    log_lines: list[Callable[[str], None]],
) -> list[str]:
    """Run the commands at once (one per core); each one's log tail, its lines to `log_lines`."""
    started: list[_Process] = []
    deadline = time.monotonic() + deadline_seconds
    try:
        for args in commands:
            started.append(_Process(args, None))
        return [process.finish(deadline - time.monotonic(), should_stop, log_line)[1]
                for process, log_line in zip(started, log_lines, strict=True)]
    finally:
        for process in started:
            process.kill()


def run_metered(
    make_args: Callable[[int], list[str]], meter_args: list[str], *, deadline_seconds: float,
    should_stop: Callable[[], bool] | None = None, on_line: Callable[[str], None] | None = None,
) -> str:
    """Run a producer that writes a copy of its output to the file descriptor it is given
    (`make_args(fd)`) and, beside it on the other core, a meter that reads that copy on its
    stdin; return the meter's log tail. The meter ends when the producer's copy does."""
    meter, write_end = _reading_a_pipe(meter_args, None)  # if the meter dies, the producer fails
    outcome: list[str | ProcessFailed] = []

    def finish_meter() -> None:
        try:
            outcome.append(meter.finish(deadline_seconds, None)[1])
        except ProcessFailed as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=finish_meter, daemon=True)
    waiter.start()
    try:
        producer = _Process(make_args(write_end), on_line, pass_fds=(write_end,))
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
    args: list[str], feed: Callable[[int, threading.Event], bool], *, deadline_seconds: float,
    should_stop: Callable[[], bool] | None = None, on_line: Callable[[str], None] | None = None,
) -> str:
    """Run `args` with its stdin written by `feed(fd, stop)` on a thread of its own; return stdout.
    `feed` returns whether it wrote everything; if it gives up, the process is stopped
    (ProcessStopped). `stop` is set when the process has ended, so a waiting feed can leave."""
    process, write_end = _reading_a_pipe(args, on_line)
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


def _reading_a_pipe(args: list[str], on_line: Callable[[str], None] | None) -> tuple[_Process, int]:
    """`args` started with a new pipe as its stdin, and the pipe's write end. The process holds
    the only read end: once it is gone, writes fail instead of waiting."""
    read_end, write_end = os.pipe()
    try:
        return _Process(args, on_line, stdin=read_end), write_end
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)


class _Process:
    """One started process: stdout goes line by line to `on_line` (or is collected),
    stderr to a temporary file whose tail is kept."""

    def __init__(self, args: list[str], on_line: Callable[[str], None] | None, *,
                 stdin: int = subprocess.DEVNULL, pass_fds: tuple[int, ...] = ()) -> None:
        self.args = args
        self.collected: list[str] = []
        self.stderr = tempfile.TemporaryFile()
        try:
            server = Forkserver.of(args[0])
            forked = server.start(args, stdin, self.stderr.fileno(), pass_fds) if server else None
            self.process = forked or subprocess.Popen(
                args, stdin=stdin, stdout=subprocess.PIPE, stderr=self.stderr, pass_fds=pass_fds,
                start_new_session=True, text=True, errors="replace",
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
        if process.returncode != 0:
            raise ProcessFailed(f"{args[0]} exited with {process.returncode}", process.returncode, tail)
        return "".join(self.collected), tail

    def kill(self) -> None:
        _kill_group(self.process)


def _wait(process: Started, reader: threading.Thread) -> None:
    """Up to POLL_SECONDS for the process to end. The reader sees stdout close the moment the
    process exits, so joining it wakes at once; Popen.wait(timeout) sleeps in steps of up to
    50 ms, which three processes per job turned into 100 ms of latency."""
    if reader.is_alive():
        reader.join(timeout=POLL_SECONDS)
    if reader.is_alive():
        process.poll()
    else:
        _exited(process, POLL_SECONDS)


def _exited(process: Started, seconds: float) -> None:
    """Reap the process if it exits within `seconds`, woken by its exit: its stdout closes a
    little before it can be reaped, and Popen.wait(timeout) then sleeps 0.5 ms, then 1 ms. With
    the other core busy, that was 1.1 ms after every ffmpeg run here (idle, when the machine
    could have converted)."""
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


class Forked:
    """A run forked by a Forkserver, with the parts of Popen the runner uses. Its keeper (the
    run's parent) reports its end on `status`, and reaps it only once that socket is closed
    here, which happens when the end is known: a signal never reaches a reused pid."""

    def __init__(self, server: Forkserver, pid: int, status: socket.socket, reports: TextIO, stdout: int) -> None:
        self.server, self.pid, self.status, self.reports = server, pid, status, reports
        self.stdout = open(stdout, encoding="utf-8", errors="replace")  # noqa: SIM115 (_pump reads it to its end)
        self.returncode: int | None = None
        self.lock = threading.Lock()  # one thread reads the report; the others see returncode
        self.handle = os.pidfd_open(pid)  # the run itself, should its keeper go first (_ended)

    def poll(self) -> int | None:
        if not self.lock.acquire(blocking=False):  # another thread is waiting for the end
            return None
        try:
            return self._end(0)
        finally:
            self.lock.release()

    def wait(self, timeout: float | None = None) -> int:
        with self.lock:
            code = self._end(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
        return code

    def _end(self, timeout: float | None) -> int | None:
        if self.returncode is None and (timeout is None or _readable(self.status, timeout)):
            self._ended()
        return self.returncode

    def _ended(self) -> None:
        kind, _, number = self.reports.readline().strip().partition(" ")
        if kind not in ("exit", "signal"):
            # No report: the keeper was killed (the OOM killer, say). The run may go on, no
            # one's child to wait for; a pidfd reaches it, and no other process with its pid.
            try:
                signal.pidfd_send_signal(self.handle, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.returncode = int(number) if kind == "exit" else -int(number) if kind == "signal" else -signal.SIGKILL
        os.close(self.handle)
        self.reports.close()
        self.status.close()
        if kind == "signal" and self.returncode != -signal.SIGKILL:
            # A crash, which this runner's kills are not: later runs get a fresh layout (stack
            # canary, addresses) rather than forks of the one a crash may have probed.
            self.server.retire()


Started = subprocess.Popen[str] | Forked


class Forkserver:
    """A program started once with forkserver.c, forking a run per request; one per program
    in each process, replaced after RUNS runs and after a run that crashed."""

    LIBRARY = Path(__file__).with_name("forkserver.so")
    PROGRAMS = ("ffmpeg", "ffprobe")
    enabled = True  # Config.ffmpeg_forkserver
    RUNS = 1000
    ANSWER_SECONDS = 10.0  # for the run's pid; a server this slow is replaced
    TITLE_BYTES = 4096  # the room each run has to show its command line in ps
    servers: ClassVar[dict[str, Forkserver]] = {}
    lock = threading.Lock()

    @classmethod
    def of(cls, program: str) -> Forkserver | None:
        """The server for `program`, started if need be; None where there is none."""
        if not cls.enabled or program not in cls.PROGRAMS or not cls.LIBRARY.exists():
            return None
        with cls.lock:
            server = cls.servers.get(program)
            if server is not None and server.owner != os.getpid():
                server = None  # a forked copy of its owner (RQ's scheduler): not this process's child
            elif server is not None and (server.retired or server.runs >= cls.RUNS or not server.alive()):
                server.retire()
                server = None
            if server is None:
                server = cls.servers[program] = cls(program)
            server.runs += 1
            return server

    def __init__(self, program: str) -> None:
        self.program, self.runs, self.retired, self.owner = program, 0, False, os.getpid()
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.process = subprocess.Popen(
                [program, " " * self.TITLE_BYTES],
                env={**os.environ, "LD_PRELOAD": str(self.LIBRARY), "FORKSERVER_FD": str(theirs.fileno())},
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),), start_new_session=True,
            )

    def start(self, args: list[str], stdin: int, stderr: int, pass_fds: tuple[int, ...]) -> Forked | None:
        """`args` forked with these descriptors, stdout a new pipe; None if the server failed
        (it is retired): the caller then starts the program the usual way."""
        request = "\0".join([os.getcwd(), ",".join(map(str, pass_fds)), *args]).encode()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        mine.settimeout(self.ANSWER_SECONDS)
        reports = mine.makefile("r", encoding="ascii")
        read_end, write_end = os.pipe()
        null = os.open(os.devnull, os.O_RDONLY) if stdin == subprocess.DEVNULL else None
        try:
            with theirs:
                socket.send_fds(self.control, [request],
                                [stdin if null is None else null, write_end, stderr, theirs.fileno(), *pass_fds])
            pid = int(reports.readline().removeprefix("pid "))  # no line: no keeper was forked
            mine.settimeout(None)  # the run's end comes when it comes
        except (OSError, ValueError) as exc:
            log.warning("the %s fork server failed (%s); starting %s without it", self.program, exc, args[0])
            reports.close()
            mine.close()
            os.close(read_end)
            self.retire()
            return None
        finally:
            os.close(write_end)
            if null is not None:
                os.close(null)
        return Forked(self, pid, mine, reports, read_end)

    def alive(self) -> bool:
        return self.process.poll() is None

    def retire(self) -> None:
        """Take no more requests; the server exits as its socket closes, runs end on their own."""
        self.retired = True
        self.control.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _readable(status: socket.socket, seconds: float) -> bool:
    waiting = select.poll()  # not select(): it cannot take a descriptor above 1023
    waiting.register(status, select.POLLIN)
    return bool(waiting.poll(seconds * 1000))
