"""Engine and session factory. Plain SQLAlchemy: the worker uses it without Flask."""
from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_SECONDS = 30.0


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS, "factory": QueuedWriter})
        # The API and the worker write to the same file from different processes:
        # WAL lets readers go on during a write; the connection's timeout (SQLite's busy
        # timeout) waits instead of failing where a writer gets past the queue below.
        # synchronous=NORMAL: in WAL mode a commit no longer waits for fsync (the file stays
        # consistent; a power cut may lose the last commits), so a slow disk does not hold
        # every writer's lock for an fsync.
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "before_cursor_execute", _queue_writes)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


# One SQLite writer at a time, queued outside SQLite ------------------------------------
#
# SQLite lets one connection write at a time; the others wait in its busy handler, which
# retries after sleeps growing to 100 ms however soon the lock is free. With the API's
# threads and processes and the workers all writing, that made POST /v2/jobs's p99 about
# half a second (bench/api_load.py). Writers queue here instead: threads of a process on a
# mutex, which wakes the next one at once, and one thread per process on flock(2) of a file
# beside the database, tried again every millisecond. The span is SQLite's own: from a
# connection's first INSERT, UPDATE or DELETE (where Python's sqlite3 opens the transaction)
# to its commit or rollback.

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
FLOCK_RETRY_SECONDS = 0.001


class WriterQueue:
    """The queue for one database file."""

    def __init__(self, database: str) -> None:
        self.pid = os.getpid()
        self.mutex = threading.Lock()
        self.fd = os.open(f"{database}-writer", os.O_RDWR | os.O_CREAT, 0o600)

    def acquire(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        if not self.mutex.acquire(timeout=timeout):
            raise sqlite3.OperationalError("database is locked (another writer held it too long)")
        # Only one thread per process gets here, so the file lock is contended by other
        # processes only; a crashed process's lock is released by the kernel.
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.mutex.release()
                    raise sqlite3.OperationalError(
                        "database is locked (another process held it too long)") from None
                time.sleep(FLOCK_RETRY_SECONDS)

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.mutex.release()


_queues: dict[str, WriterQueue] = {}
_queues_guard = threading.Lock()


def _queue_for(database: str) -> WriterQueue | None:
    if database in ("", ":memory:") or database.startswith("file:"):
        return None  # private or URI databases: nothing to share with other connections
    path = os.path.realpath(database)
    with _queues_guard:
        # A forked child makes its own: flock(2) does not tell a parent from a child
        # sharing one open file.
        if path not in _queues or _queues[path].pid != os.getpid():
            _queues[path] = WriterQueue(path)
        return _queues[path]


class QueuedWriter(sqlite3.Connection):
    """A sqlite3 connection that takes its database's WriterQueue before its first write and
    gives it back once the transaction has ended."""

    def __init__(self, database: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        self.queue = _queue_for(str(database))
        self.holding = False

    def hold(self) -> None:
        if self.queue is not None and not self.holding:
            self.queue.acquire(SQLITE_BUSY_SECONDS)
            self.holding = True

    def _let_go(self) -> None:
        if self.holding:
            self.holding = False
            assert self.queue is not None
            self.queue.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._let_go()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._let_go()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._let_go()


def _queue_writes(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
    connection = cursor.connection
    if isinstance(connection, QueuedWriter) and statement.lstrip()[:7].upper().startswith(WRITES):
        connection.hold()
