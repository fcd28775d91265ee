"""ffmpeg and ffprobe forked from a copy of the program started once, instead of an exec per run.

Fenced cleverness. Binding the symbols of Debian's ffmpeg's 215 shared libraries costs about
as much CPU as converting a five-second clip (bench/RESULTS.md). `forkserver.c`, loaded with
LD_PRELOAD, stops the program after the dynamic loader and before its main(), then forks a
run per request and calls main() with the request's argv.

It relies on glibc calling `__libc_start_main` from the program's entry (checked with glibc
2.36, Debian 12) and on ffmpeg keeping no state between loading and main() that a fork would
share (checked with ffmpeg 5.1). `FFMPEG_FORKSERVER=0` turns it off: every run is an exec, as
it is where the library is not built (`scripts/setup.sh` builds it). CI runs the suite once
with it off.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import threading
from typing import ClassVar, TextIO

from jobs_api.config import fence_on
from workers.ffmpeg.sandbox import LIBRARY, stop_signals_held

log = logging.getLogger(__name__)

SWITCH = "FFMPEG_FORKSERVER"  # read on each run: tests switch it


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



class Forkserver:
    """A program started once with forkserver.c, forking a run per request; one per program
    in each process, for one job's runs: replaced when another job's run comes, after RUNS
    runs, and after a run that crashed. Its runs share its memory layout (its stack canary,
    where its libraries are), which a hostile input could learn and another run then use: so
    no two jobs share a server. A spare, started when a job takes a server, is loaded by the
    time the next job comes, so that job does not wait for its server to start."""

    LIBRARY = LIBRARY
    PROGRAMS = ("ffmpeg", "ffprobe")
    RUNS = 1000
    ANSWER_SECONDS = 10.0  # for the run's pid; a server this slow is replaced
    TITLE_BYTES = 4096  # the room each run has to show its command line in ps
    servers: ClassVar[dict[str, Forkserver]] = {}
    spares: ClassVar[dict[str, Forkserver]] = {}
    lock = threading.Lock()

    @classmethod
    def of(cls, program: str, job: str | None) -> Forkserver | None:
        """The server for `program` that forks `job`'s runs, started if need be; None where
        there is none, and for a run of no job's."""
        if job is None or not fence_on(SWITCH) or program not in cls.PROGRAMS or not cls.LIBRARY.exists():
            return None
        with cls.lock:
            server = cls.servers.get(program)
            if server is not None and server.owner != os.getpid():
                server = None  # a forked copy of its owner (RQ's scheduler): not this process's child
            elif server is not None and (server.job != job or server.retired or server.runs >= cls.RUNS
                                         or not server.alive()):
                server.retire()
                server = None
            if server is None:
                server = cls.servers[program] = cls._spare(program) or cls(program)
                server.job = job
                cls.spares[program] = cls(program)  # it loads while this job runs
            server.runs += 1
            return server

    @classmethod
    def _spare(cls, program: str) -> Forkserver | None:
        spare = cls.spares.pop(program, None)
        if spare is not None and spare.owner == os.getpid() and spare.alive():
            return spare
        return None

    def __init__(self, program: str) -> None:
        self.job: str | None = None  # whose runs it forks, once a job takes it
        self.program, self.runs, self.retired, self.owner = program, 0, False, os.getpid()
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs, stop_signals_held():
            self.process = subprocess.Popen(
                [program, " " * self.TITLE_BYTES],
                env={**os.environ, "LD_PRELOAD": str(self.LIBRARY), "FORKSERVER_FD": str(theirs.fileno())},
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),), start_new_session=True,
            )

    def start(self, args: list[str], stdin: int, stderr: int, pass_fds: tuple[int, ...],
              sandbox: str | None) -> Forked | None:
        """`args` forked with these descriptors, stdout a new pipe, in `sandbox` (sandbox.Sees.spec);
        None if the server failed (it is retired): the caller then starts the program the usual way."""
        fields = [os.getcwd(), ",".join(map(str, pass_fds)), "-" if sandbox is None else sandbox, *args]
        request = "\0".join(fields).encode()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        mine.settimeout(self.ANSWER_SECONDS)
        read_end, write_end = os.pipe()
        null = os.open(os.devnull, os.O_RDONLY) if stdin == subprocess.DEVNULL else None
        try:
            with theirs:
                socket.send_fds(self.control, [request],
                                [stdin if null is None else null, write_end, stderr, theirs.fileno(), *pass_fds])
            pid = int(_line(mine).removeprefix("pid "))  # no line: no keeper was forked
            mine.settimeout(None)  # the run's end comes when it comes
        except (OSError, ValueError) as exc:
            log.warning("the %s fork server failed (%s); starting %s without it", self.program, exc, args[0])
            mine.close()
            os.close(read_end)
            self.retire()
            return None
        finally:
            os.close(write_end)
            if null is not None:
                os.close(null)
        return Forked(self, pid, mine, mine.makefile("r", encoding="ascii"), read_end)

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


def _line(connection: socket.socket) -> str:
    """One line, read a byte at a time. A buffered read could take the run's end report too,
    when the run ends that fast: the socket would then never turn readable for it (_readable)."""
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = connection.recv(1)
        if not byte:
            break
        line += byte
    return line.decode("ascii")


def _readable(status: socket.socket, seconds: float) -> bool:
    waiting = select.poll()  # not select(): it cannot take a descriptor above 1023
    waiting.register(status, select.POLLIN)
    return bool(waiting.poll(seconds * 1000))
