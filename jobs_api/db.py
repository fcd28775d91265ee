"""Engine and session factory. Plain SQLAlchemy: the worker uses it without Flask."""
from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from jobs_api import sqlite_writers
from jobs_api.config import fence_on

SQLITE_BUSY_SECONDS = sqlite_writers.SQLITE_BUSY_SECONDS


def make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    # The API and the worker write to the same file from different processes: WAL lets
    # readers go on during a write; the connection's timeout (SQLite's busy timeout) waits
    # instead of failing where another writer holds the lock. synchronous=NORMAL: in WAL mode
    # a commit no longer waits for fsync (the file stays consistent; a power cut may lose the
    # last commits), so a slow disk does not hold every writer's lock for an fsync.
    queued = fence_on(sqlite_writers.SWITCH)
    connect_args: dict[str, Any] = {"timeout": SQLITE_BUSY_SECONDS}
    if queued:
        connect_args["factory"] = sqlite_writers.QueuedWriter
    engine = create_engine(url, connect_args=connect_args)
    event.listen(engine, "connect", _sqlite_pragmas)
    if queued:
        event.listen(engine, "connect", sqlite_writers.on_connect)
        event.listen(engine, "before_cursor_execute", sqlite_writers.queue_writes)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
