"""What a worker process reaches: its settings, the database and the storage."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from sqlalchemy.orm import Session, sessionmaker

from jobs_api.config import Config
from jobs_api.db import make_engine, make_sessionmaker
from jobs_api.storage import Storage, storage_for
from workers.ffmpeg.plan import Limits


@dataclass(frozen=True)
class Services:
    config: Config
    sessions: sessionmaker[Session]
    storage: Storage

    @property
    def limits(self) -> Limits:
        return Limits.of(self.config)


@cache
def worker_services() -> Services:
    """Built on first use inside the process that runs tasks, from the environment."""
    config = Config.from_env()
    storage = storage_for(config.storage_dir, config.storage_url)
    storage.ensure()
    return Services(config, make_sessionmaker(make_engine(config.database_url)), storage)
