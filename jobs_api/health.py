"""Is the service ready: the checks behind `/readyz` (and `/health`), in the shape of the IETF
draft "Health Check Response Format for HTTP APIs" (application/health+json).

Each check is run when asked and bounded in time: the database answers a query, Redis a PING,
the storage folder takes a file and has room, ffprobe starts. No live worker is a `warn`, not a
`fail`: jobs still queue and run once a worker comes. No Flask here.
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rq import Worker
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from jobs_api.config import Config
from jobs_api.logs import one_line
from jobs_api.queue import probe_redis_for, queue_for
from jobs_api.storage import Storage
from workers.ffmpeg.probe import prober_version

PASS, WARN, FAIL = "pass", "warn", "fail"
PROBER_CHECK_EVERY = 60.0  # ffprobe does not come and go: its check is kept this long


@dataclass(frozen=True)
class Check:
    name: str  # "component:measurement", as the draft names checks
    status: str
    observed: Any = None
    unit: str | None = None
    output: str | None = None  # why it failed, for the operator

    def json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status, "time": datetime.now(UTC).isoformat(timespec="seconds")}
        if self.observed is not None:
            body["observedValue"] = self.observed
        if self.unit:
            body["observedUnit"] = self.unit
        if self.output:
            body["output"] = self.output
        return body


class Readiness:
    """The service's checks; `report()` runs them and says pass, warn or fail."""

    def __init__(self, config: Config, sessions: sessionmaker[Session], storage: Storage) -> None:
        self.config, self.sessions, self.storage = config, sessions, storage
        self.redis = probe_redis_for(config.redis_url)
        self.prober: tuple[float, Check] | None = None

    def report(self) -> dict[str, Any]:
        checks = [self.database(), self.queue(), self.workers(), self.storage_room(), self.probe()]
        if not self.storage.shared_disk:
            checks.append(_timed("bucket:responseTime", self.storage.shelf.check))
        statuses = {check.status for check in checks}
        status = FAIL if FAIL in statuses else WARN if WARN in statuses else PASS
        return {"status": status, "description": "audio conversion jobs (api2convert v2 compatible)",
                "checks": {check.name: [check.json()] for check in checks}}

    def database(self) -> Check:
        return _timed("database:responseTime", self._select_one)

    def queue(self) -> Check:
        return _timed("redis:responseTime", self.redis.ping)

    def workers(self) -> Check:
        try:
            count = Worker.count(connection=self.redis, queue=queue_for(self.config, self.redis))
        except Exception as exc:  # Redis down: its own check fails the report
            return Check("workers:count", FAIL, output=one_line(exc))
        return Check("workers:count", PASS if count else WARN, count,
                     output=None if count else "no live worker: jobs wait in the queue until one starts")

    def storage_room(self) -> Check:
        root = self.storage.root
        try:
            probe_file = root / f".ready-{os.getpid()}"
            probe_file.write_bytes(b"ok")
            probe_file.unlink()
            free = shutil.disk_usage(root).free
        except OSError as exc:
            return Check("storage:freeBytes", FAIL, output=f"the storage folder is not writable: {one_line(exc)}")
        enough = free >= self.config.min_free_bytes
        return Check("storage:freeBytes", PASS if enough else FAIL, free, "bytes",
                     None if enough else f"less than {self.config.min_free_bytes} bytes free (MIN_FREE_BYTES)")

    def probe(self) -> Check:
        if self.prober is not None and time.monotonic() - self.prober[0] < PROBER_CHECK_EVERY:
            return self.prober[1]
        try:
            check = Check("ffprobe:version", PASS, prober_version())
        except Exception as exc:
            check = Check("ffprobe:version", FAIL, output=f"ffprobe does not run: {one_line(exc)}")
        self.prober = (time.monotonic(), check)
        return check

    def _select_one(self) -> None:
        with self.sessions() as session:
            session.execute(text("SELECT 1"))


def _timed(name: str, action: Callable[[], object]) -> Check:
    start = time.perf_counter()
    try:
        action()
    except Exception as exc:
        return Check(name, FAIL, output=one_line(exc))
    return Check(name, PASS, round((time.perf_counter() - start) * 1000, 2), "ms")

