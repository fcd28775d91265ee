"""A running job's progress, written for its pollers, and the check whether it was canceled."""
from __future__ import annotations

import time

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from jobs_api.models import Job, JobStatus
from workers.ffmpeg import runner
from workers.ffmpeg.commands import progress_seconds
from workers.outage import OUTAGE

PROGRESS_EVERY = 0.25
CANCEL_CHECK_EVERY = 0.25


class StepProgress:
    """One step of a job (a conversion of one input): follows ffmpeg's `-progress` lines and
    writes the job's percent, at most every PROGRESS_EVERY seconds."""

    def __init__(self, sessions: sessionmaker[Session], job_id: str, step: int, steps: int) -> None:
        self.sessions, self.job_id, self.step, self.steps = sessions, job_id, step, steps
        self.total = 0.0  # seconds of output the running encode will write
        self.reached = 0.0  # seconds of output the last ffmpeg run reported writing
        # The job was running when the step began, at the progress it had: a step shorter
        # than PROGRESS_EVERY writes nothing.
        self.last_write = time.monotonic()

    def start(self, total: float) -> None:
        """An encode of `total` seconds begins."""
        self.total, self.reached = total, 0.0

    def line(self, text: str) -> None:
        seconds = progress_seconds(text)
        if seconds is None:
            return
        self.reached = max(self.reached, seconds)
        if self.total <= 0:
            return
        now = time.monotonic()
        if now - self.last_write < PROGRESS_EVERY:
            return
        self.last_write = now
        fraction = min(1.0, max(0.0, seconds / self.total))
        percent = int(100 * (self.step + fraction) / self.steps)
        try:
            with self.sessions() as session:
                session.execute(
                    update(Job).where(Job.id == self.job_id, Job.status == JobStatus.PROCESSING.value)
                    .values(progress=min(percent, 99))
                )
                session.commit()
        except OUTAGE:
            pass  # the database is away: the encode goes on; a later percent is written


def cancel_check(sessions: sessionmaker[Session], job_id: str, attempt: int) -> runner.Every:
    """A runner's `should_stop`: true once the job is no longer processing in this attempt (a
    cancel moved it, or the sweeper queued it again, thinking its worker lost), asked at most
    every CANCEL_CHECK_EVERY seconds."""

    def canceled() -> bool:
        try:
            with sessions() as session:
                now = session.execute(select(Job.status, Job.attempt).where(Job.id == job_id)).one_or_none()
        except OUTAGE:
            return False  # the database is away: the encode goes on, asked again later
        return now is None or tuple(now) != (JobStatus.PROCESSING.value, attempt)

    return runner.Every(CANCEL_CHECK_EVERY, canceled)
