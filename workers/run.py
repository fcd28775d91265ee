"""One job's run on a worker: download its remote inputs, convert every input for every
conversion, publish the results, and move the job to its end."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from jobs_api import catalog
from jobs_api.config import Config
from jobs_api.errors import RequestInvalid
from jobs_api.lifecycle import transition
from jobs_api.models import Conversion, Job, JobStatus
from jobs_api.presets import PresetService
from jobs_api.queue import PROCESS_JOB, enqueue_in
from workers import download, outputs
from workers.budget import Budget
from workers.conversion import Result, convert_input
from workers.delivery import announce
from workers.ffmpeg import runner
from workers.ffmpeg.plan import Limits
from workers.ffmpeg.sandbox import Sees
from workers.outage import surviving_outage
from workers.problems import Canceled, Failure, JobProblem, error_entry, fail
from workers.progress import StepProgress, cancel_check
from workers.services import Services
from workers.shutdown import Shutdown


class ConversionRun:
    """What every part of a job's run needs: the job and its session, the work folder, the
    current step's progress, the limits, and the cancel check."""

    def __init__(self, services: Services, session: Session, job: Job) -> None:
        self.services, self.session, self.job = services, session, job
        self.folder: Path | None = None  # the job's work folder, once converting
        self.progress = StepProgress(services.sessions, job.id, 0, 1)
        self.should_stop: runner.Every | None = None  # once processing: a cancel stops ffmpeg
        self.budget = Budget(services.config)

    @property
    def work(self) -> Path:
        """The job's work folder, where results wait until they are published."""
        assert self.folder is not None, "the run has not entered its work folder"
        return self.folder

    @property
    def config(self) -> Config:
        return self.services.config

    @property
    def limits(self) -> Limits:
        """The limits of the next encode: an output may write what is left of the job's budget."""
        return replace(self.services.limits, max_output_bytes=self.budget.bytes_left())

    def sees(self, source: Path) -> Sees:
        """What a run of ffmpeg for this job may see: `source`, and the work folder (its results)."""
        return Sees(reads=(source,), writes=(self.work,), job=self.job.id)

    @property
    def deadline(self) -> float:
        """Seconds one ffmpeg run may take."""
        return self.config.ffmpeg_timeout_seconds

    def execute(self) -> str:
        """The job's run, from downloading to its end: completed, failed or canceled."""
        job, session = self.job, self.session
        if not self._download_inputs():
            return "failed"
        if not transition(session, job.id, JobStatus.PROCESSING, allowed_from=[JobStatus.DOWNLOADING],
                          attempt=job.attempt):
            raise Canceled()  # a cancel moved the job out of downloading meanwhile, or the sweeper did
        session.commit()
        announce(self.services, session, job.id)
        self.should_stop = cancel_check(self.services.sessions, job.id, job.attempt)
        with self.services.storage.work_dir(job.id) as folder:
            self.folder = folder
            for number, conversion in enumerate(job.conversions):
                if not self._convert(number, conversion):
                    return "failed"
        if not job.outputs:
            fail(session, job.id, "job", job.id, JobProblem(Failure.NO_OUTPUT))
            session.commit()
            return "failed"
        if not surviving_outage(session, self.services.sessions, self._complete):
            raise Canceled()
        return "completed"

    def _complete(self) -> bool:
        done = transition(self.session, self.job.id, JobStatus.COMPLETED, allowed_from=[JobStatus.PROCESSING],
                          progress=100, attempt=self.job.attempt)
        self.session.commit()
        return done

    def _download_inputs(self) -> bool:
        """Fetch every remote input; False if one failed the job."""
        for item in self.job.inputs:
            if item.storage_key is None and item.type == "remote":
                try:
                    download.fetch_input(self.services, self.session, item)
                except JobProblem as problem:
                    item.status = "failed"
                    if self.report("input", item.id, problem, fatal=self.job.fail_on_input_error):
                        return False
        return True

    def _convert(self, number: int, conversion: Conversion) -> bool:
        """Convert every ready input for one conversion and publish the results; False if a
        problem failed the job."""
        job = self.job
        ready = [item for item in job.inputs if item.status == "ready" and item.storage_key]
        fatal = job.fail_on_conversion_error
        try:
            options = self.options_of(conversion)
            # No read (a preset's, say) stays in a transaction while ffmpeg runs: on
            # PostgreSQL, a connection idle in transaction all that time.
            self.session.commit()
            results: list[Result] = []
            for index, item in enumerate(ready):
                self.progress = StepProgress(self.services.sessions, job.id, number * len(ready) + index,
                                             len(job.conversions) * len(ready))
                try:
                    results += convert_input(self, conversion, options, item)
                except JobProblem as problem:
                    if self.report("conversion", conversion.id, problem, fatal=fatal):
                        return False
            outputs.publish(self, conversion, options, results)
        except JobProblem as problem:
            return not self.report("conversion", conversion.id, problem, fatal=fatal)
        return True

    def options_of(self, conversion: Conversion) -> dict[str, Any]:
        """The conversion's options over its preset's."""
        return options_of(self.session, self.job, conversion)

    def report(self, source: str, source_id: str, problem: JobProblem, *, fatal: bool) -> bool:
        """Record a problem as the job's failure (returns True) or as a warning."""
        if fatal:
            fail(self.session, self.job.id, source, source_id, problem)
            self.session.commit()
            return True
        self.warn(source, source_id, problem.code, problem.message)
        self.session.commit()
        return False

    def warn(self, source: str, source_id: str, code: int, message: str) -> None:
        self.job.warnings = [*self.job.warnings, error_entry(source, source_id, code, message)]

    def stop_requested(self) -> bool:
        """A runner's should_stop: the job was canceled, or the worker is stopping past its grace."""
        return Shutdown.grace_over() or (self.should_stop is not None and self.should_stop())


def options_of(session: Session, job: Job, conversion: Conversion) -> dict[str, Any]:
    """The conversion's options over its preset's; a problem if the preset is gone, or was
    changed since the job was created into options that no longer fit the conversion."""
    preset = conversion.options.get("preset")
    try:
        options = PresetService(session).effective_options(job.api_key_id, conversion.options)
    except RequestInvalid as exc:
        raise JobProblem(Failure.PRESET_GONE, preset=preset) from exc
    if preset:
        try:
            catalog.validate(conversion.target, options)
        except RequestInvalid as exc:
            reasons = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in exc.errors.items())
            raise JobProblem(Failure.PRESET_CHANGED, preset=preset, reason=reasons) from exc
    return options


QUEUED_AGAIN = "The worker stopped before the job was done; it is queued again."
DATABASE_WENT_AWAY = "The database was unreachable during the job's run; it is queued again."


def queue_again(services: Services, session: Session, job: Job, info: str = QUEUED_AGAIN) -> str:
    """The worker is stopping (or the database went away): the job goes back to the queue, as
    it was before this attempt (its inputs stay downloaded), to run again from the start."""
    session.rollback()
    outputs.discard(services.storage, session, job.id)
    services.storage.remove_work_dirs(job.id)
    attempt = job.attempt
    if not transition(session, job.id, JobStatus.QUEUED, info=info,
                      allowed_from=[JobStatus.DOWNLOADING, JobStatus.PROCESSING], attempt=attempt):
        session.rollback()
        return "canceled"  # a cancel got there first
    job.warnings, job.progress = [], None  # the next attempt notes them again
    job.attempt = attempt - 1  # neither uses up one of the job's attempts
    session.commit()
    enqueue_in(services.config, 1, PROCESS_JOB, job.id)
    return "queued again"
