"""Every ffmpeg, ffprobe and espeak-ng run in a sandbox: it reads its own inputs, writes in its
own work folder, and sees nothing else (no other job's files, no /etc, no storage root); it
opens no socket.

The second wall behind the demuxer whitelist (commands.INPUT_GUARD): should a hostile file get
past the whitelist or exploit a decoder, the process it takes over can reach nothing. The run
enters the sandbox itself, after the dynamic loader and before the program's main()
(`sandbox.c`, in `libpreload.so`): a forked run from the fork server, an exec'd run from the
same library, preloaded. It relies on Landlock (Linux 5.13 or later) and seccomp; where the
kernel refuses either, runs fail with `SandboxFailed` and /readyz says so.

`FFMPEG_SANDBOX=0` turns it off. That relaxes the service's security; it is meant for kernels
without Landlock, and nothing else turns it off.
"""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LIBRARY = Path(__file__).with_name("libpreload.so")  # built from forkserver.c and sandbox.c
SWITCH = "FFMPEG_SANDBOX"
FAILED_EXIT = 125  # sandbox.h's SANDBOX_FAILED: the run could not enter its sandbox
STOP_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM}  # forkserver.c's stops


def espeak_data() -> Path:
    """Where espeak-ng reads its voices and dictionaries, which it opens after main()."""
    for folder in Path("/usr/lib").glob("*/espeak-ng-data"):
        return folder
    return Path("/usr/share/espeak-ng-data")


@dataclass(frozen=True)
class Sees:
    """What one run may see: files or folders it reads, folders it reads and writes in; and
    whose input it reads. A fork server forks the runs of one job only (forkserver.py), so
    that no job can learn the memory layout another job's runs will have; a run of no job's
    (None) starts with an exec."""

    reads: tuple[Path, ...] = ()
    writes: tuple[Path, ...] = ()
    job: str | None = None

    def spec(self) -> str | None:
        """The sandbox as sandbox.c reads it; None when the sandbox is turned off."""
        if os.environ.get(SWITCH, "1").strip() == "0":
            return None
        lines = [*(f"read {path}" for path in self.reads), *(f"write {path}" for path in self.writes)]
        if any("\n" in line for line in lines):
            raise ValueError("a sandboxed path holds a newline")
        return "\n".join(lines)


def environment(spec: str | None, program: str) -> dict[str, str]:
    """The environment of an exec'd run of `program` in the sandbox `spec` (Sees.spec): the
    library preloaded, which enters it. Without a sandbox the library is still preloaded where
    it is built, for stop_signals_held."""
    if spec is None:
        return {**os.environ, "LD_PRELOAD": str(LIBRARY)} if LIBRARY.exists() else dict(os.environ)
    return {**os.environ, "LD_PRELOAD": str(LIBRARY), "SANDBOX": spec, "SANDBOX_PROGRAM": program}


@contextmanager
def stop_signals_held() -> Iterator[None]:
    """The signals that stop the worker, held in this thread while it starts a process with
    the library preloaded. A child is in the worker's process group until its setsid(): a stop
    sent to the group then (SIGTERM to the group, Ctrl-C) would kill the run with the worker's
    stop, and the job would fail instead of going back to the queue. Held, the signal waits in
    the child until the library drops it, before the program's main() (forkserver.c,
    release_stop_signals); the worker gets its own copy once this thread lets go."""
    if not LIBRARY.exists():  # nothing would let go of them in the child
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


NOTHING = Sees()  # a run that reads and writes no file (ffprobe -version)
