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
from dataclasses import dataclass
from pathlib import Path

LIBRARY = Path(__file__).with_name("libpreload.so")  # built from forkserver.c and sandbox.c
SWITCH = "FFMPEG_SANDBOX"
FAILED_EXIT = 125  # sandbox.h's SANDBOX_FAILED: the run could not enter its sandbox


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
    library preloaded, which enters it."""
    if spec is None:
        return dict(os.environ)
    return {**os.environ, "LD_PRELOAD": str(LIBRARY), "SANDBOX": spec, "SANDBOX_PROGRAM": program}


NOTHING = Sees()  # a run that reads and writes no file (ffprobe -version)
