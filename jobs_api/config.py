"""Settings, read once from the environment.

Every setting has a default that runs the service on one machine: SQLite and files
under ./var, Redis on localhost. Tests build a Config with overrides instead of
touching os.environ.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


# Switches of the fenced optimisations: each module that leans on another project's internals
# reads its own, and runs the plain way where the environment sets it to 0 (CI does, once).
FENCES = {
    "FFMPEG_FORKSERVER": "workers/ffmpeg/forkserver.py",
    "SQLITE_WRITER_QUEUE": "jobs_api/sqlite_writers.py",
    "GUNICORN_BODY_READER": "jobs_api/gunicorn_body.py",
    "RQ_LEAN_WORKER": "workers/worker.py",
    "TUNE_INTERPRETER": "jobs_api/serving.py",
}


def fence_on(switch: str) -> bool:
    """Whether a fenced optimisation is on: unless the environment sets its switch to 0."""
    assert switch in FENCES, switch
    return os.environ.get(switch, "1").strip() != "0"


def _env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = os.environ.get(name, "").strip().lower() or default
    if raw not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {raw!r}")
    return raw


def _env_list(name: str) -> tuple[str, ...]:
    raw = os.environ.get(name, "")
    return tuple(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class Config:
    database_url: str = "sqlite:///var/jobs.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    storage_dir: Path = Path("var/storage")
    storage_url: str = ""  # s3://BUCKET/PREFIX: inputs and outputs in that bucket (jobs_api/bucket.py)
    # Base of job.server and output.uri; what clients reach this service at.
    public_url: str = "http://127.0.0.1:8000"
    # Hosts or networks exempt from the private-address block (tests, intranets).
    outbound_allow: tuple[str, ...] = ()
    queue_name: str = "conversions"
    # When set, callbacks carry X-Oc-Signature: hex HMAC-SHA256 of the body with this secret.
    webhook_secret: str = ""
    # Seconds before each retry of a callback that timed out or got a 5xx (10 retries).
    callback_retry_delays: tuple[int, ...] = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
    # Limits. Audio decompresses up to ~1000-fold, so the decoded side is capped too.
    max_input_bytes: int = 512 * MiB
    max_duration_seconds: int = 4 * 3600
    max_output_bytes: int = 1024 * MiB  # a job's outputs together
    # A job's budget, all its inputs and conversions together: one small file can hold hundreds
    # of streams, each within the limits above.
    max_job_streams: int = 16
    max_job_seconds: int = 3 * 4 * 3600  # decoded
    ffmpeg_timeout_seconds: int = 1800
    download_timeout_seconds: int = 300
    max_channels: int = 8
    max_sample_rate: int = 192_000
    # Delivery: outputs are deleted this long after they are made (status "expired").
    output_ttl_seconds: int = 24 * 3600
    # How often the sweeper runs (expired outputs, stray work folders, lost and stuck jobs).
    sweep_interval_seconds: int = 20
    # A running job whose worker sent no heartbeat for this long is lost: queued again, up to
    # MAX_ATTEMPTS runs in all (the sweeper finds it within this plus one sweep interval).
    worker_lost_seconds: int = 30
    max_attempts: int = 3
    # Per key: jobs queued or running at once, and jobs created per minute (0: no limit).
    max_concurrent_jobs: int = 20
    max_jobs_per_minute: int = 120
    # Wrong download passwords one address may send within ten minutes before it gets 429.
    max_password_failures: int = 10
    # Seconds a running job may still take once its worker is asked to stop; then it is queued again.
    stop_grace_seconds: int = 8
    # "text" or "json": one JSON object per log line, for the API, gunicorn and the worker.
    log_format: str = "text"
    # /readyz fails when the storage folder has less room than this.
    min_free_bytes: int = 1024 * MiB
    # Convert an upload that starts its job while it arrives (workers/upload_conversion.py).
    convert_while_uploading: bool = True
    # A poll of a queued or running job answers when the job ends, if within this (jobs_api/job_waits.py).
    job_wait_seconds: int = 4
    # The same for the official Python SDK, whose timeout is between reads (jobs_api/job_waits.py).
    sdk_job_wait_seconds: int = 25

    @classmethod
    def from_env(cls) -> Config:
        defaults = cls()
        return cls(
            database_url=os.environ.get("DATABASE_URL", defaults.database_url),
            redis_url=os.environ.get("REDIS_URL", defaults.redis_url),
            storage_dir=Path(os.environ.get("STORAGE_DIR", str(defaults.storage_dir))),
            storage_url=os.environ.get("STORAGE_URL", defaults.storage_url).strip(),
            # Unset, it follows PORT: changing the port alone keeps job.server and download links right.
            public_url=os.environ.get("PUBLIC_URL", f"http://127.0.0.1:{os.environ.get('PORT') or 8000}").rstrip("/"),
            outbound_allow=_env_list("OUTBOUND_ALLOW"),
            queue_name=os.environ.get("QUEUE_NAME", defaults.queue_name),
            webhook_secret=os.environ.get("WEBHOOK_SECRET", defaults.webhook_secret),
            callback_retry_delays=tuple(int(value) for value in _env_list("CALLBACK_RETRY_DELAYS"))
            or defaults.callback_retry_delays,
            max_input_bytes=_env_int("MAX_INPUT_BYTES", defaults.max_input_bytes),
            max_duration_seconds=_env_int("MAX_DURATION_SECONDS", defaults.max_duration_seconds),
            max_output_bytes=_env_int("MAX_OUTPUT_BYTES", defaults.max_output_bytes),
            max_job_streams=_env_int("MAX_JOB_STREAMS", defaults.max_job_streams),
            max_job_seconds=_env_int("MAX_JOB_SECONDS", defaults.max_job_seconds),
            ffmpeg_timeout_seconds=_env_int(
                "FFMPEG_TIMEOUT_SECONDS", defaults.ffmpeg_timeout_seconds
            ),
            download_timeout_seconds=_env_int(
                "DOWNLOAD_TIMEOUT_SECONDS", defaults.download_timeout_seconds
            ),
            output_ttl_seconds=_env_int("OUTPUT_TTL", defaults.output_ttl_seconds),
            sweep_interval_seconds=_env_int("SWEEP_INTERVAL_SECONDS", defaults.sweep_interval_seconds),
            worker_lost_seconds=_env_int("WORKER_LOST_SECONDS", defaults.worker_lost_seconds),
            max_attempts=_env_int("MAX_ATTEMPTS", defaults.max_attempts),
            max_concurrent_jobs=_env_int("MAX_CONCURRENT_JOBS", defaults.max_concurrent_jobs),
            max_jobs_per_minute=_env_int("MAX_JOBS_PER_MINUTE", defaults.max_jobs_per_minute),
            max_password_failures=_env_int("MAX_PASSWORD_FAILURES", defaults.max_password_failures),
            stop_grace_seconds=_env_int("STOP_GRACE_SECONDS", defaults.stop_grace_seconds),
            log_format=_env_choice("LOG_FORMAT", ("text", "json"), defaults.log_format),
            min_free_bytes=_env_int("MIN_FREE_BYTES", defaults.min_free_bytes),
            convert_while_uploading=bool(_env_int("CONVERT_WHILE_UPLOADING", int(defaults.convert_while_uploading))),
            job_wait_seconds=_env_int("JOB_WAIT_SECONDS", defaults.job_wait_seconds),
            sdk_job_wait_seconds=_env_int("SDK_JOB_WAIT_SECONDS", defaults.sdk_job_wait_seconds),
        )

    def replace(self, **changes: object) -> Config:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def job_deadline_seconds(self) -> int:
        """How long a job may download and convert: every time limit of its run, plus a margin.
        RQ's job time-out is this; the sweeper fails a job that is still running after it."""
        return self.download_timeout_seconds + 2 * self.ffmpeg_timeout_seconds + 120

    @property
    def server_url(self) -> str:
        """`job.server`: where uploads and downloads go."""
        return f"{self.public_url}/v2/dl"
