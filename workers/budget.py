"""A job's budget: what one job may make, all its inputs and conversions together, checked while
it works. The limits of one stream (duration, output size) do not bound a job: a small file can
hold hundreds of audio streams, each within them, and a job can have several conversions."""
from __future__ import annotations

from jobs_api.config import Config
from workers.problems import Failure, JobProblem


class Budget:
    """Streams converted, seconds decoded and bytes written by one job's run so far."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.streams, self.seconds, self.bytes = 0, 0.0, 0

    def take_streams(self, count: int) -> None:
        """Before an input's streams are converted."""
        self.streams += count
        if self.streams > self.config.max_job_streams:
            raise JobProblem(Failure.TOO_MANY_STREAMS, streams=self.streams, limit=self.config.max_job_streams)

    def take_seconds(self, seconds: float) -> None:
        """Before a stream is decoded for its encode."""
        self.seconds += seconds
        if self.seconds > self.config.max_job_seconds:
            raise JobProblem(Failure.JOB_TOO_LONG, limit=self.config.max_job_seconds)

    def bytes_left(self) -> int:
        """What the next output may still write: the kernel or ffmpeg stops it there."""
        return max(0, self.config.max_output_bytes - self.bytes)

    def wrote(self, size: int) -> None:
        self.bytes += size
        if self.bytes >= self.config.max_output_bytes:
            raise JobProblem(Failure.OUTPUT_TOO_LARGE, limit=self.config.max_output_bytes)
