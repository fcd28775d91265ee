"""The worker's own stop: once SIGTERM (or SIGINT) has reached it, a running job gets
STOP_GRACE_SECONDS to finish; after that its ffmpeg is stopped and the job is queued again
for another worker, not failed (docker stop waits 10 s before SIGKILL).

The worker also signals itself, to start anew after Redis came back empty (worker.Upkeep):
that signal is not a stop, and a job running then finishes as usual."""
from __future__ import annotations

import time


class Shutdown:
    requested_at: float | None = None  # time.monotonic() of the first stop signal from outside
    grace_seconds: float = 8.0
    own_signal = False  # the next signal is the worker's own, to start anew

    @classmethod
    def request(cls) -> None:
        """A stop signal reached the worker."""
        if cls.own_signal:
            cls.own_signal = False
        elif cls.requested_at is None:
            cls.requested_at = time.monotonic()

    @classmethod
    def grace_over(cls) -> bool:
        return cls.requested_at is not None and time.monotonic() - cls.requested_at >= cls.grace_seconds


class Interrupted(Exception):
    """The worker is stopping and its grace is over: the job goes back to the queue."""
