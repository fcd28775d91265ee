"""SQLite writers from several processes, queued outside SQLite, and the WAL checkpointed
beside the requests instead of inside a commit.

Fenced cleverness, for the embedded default (SQLite) only. SQLite lets one connection write at
a time; the others wait in its busy handler, which retries after sleeps growing to 100 ms
however soon the lock is free. With the API's threads and processes and the workers all
writing, that made the slowest POSTs wait for it (bench/api_load.py). Writers queue here
instead: threads of a process on a mutex, which wakes the next one at once, and one thread per
process on flock(2) of a file beside the database, tried again after 50 us, then after twice
as long each time up to a millisecond: a write holds it for about half a millisecond, and a
waiter that slept a whole one made the slowest POSTs at light load (bench/RESULTS.md).

It relies on Python's sqlite3 (3.11) opening the transaction at a connection's first INSERT,
UPDATE or DELETE and ending it at commit or rollback (its default isolation level), on
SQLAlchemy 2 calling `before_cursor_execute` before each statement, and on SQLite 3.7 or later
(WAL, `wal_checkpoint(PASSIVE)`). `SQLITE_WRITER_QUEUE=0` leaves the writers to SQLite's busy
timeout and the checkpoints to SQLite; CI runs the suite once that way.
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from typing import Any

SWITCH = "SQLITE_WRITER_QUEUE"
SQLITE_BUSY_SECONDS = 30.0


def on_connect(dbapi_connection: Any, _record: Any) -> None:
    # No checkpoint inside a commit: the one commit in a few hundred that crossed SQLite's
    # 1000 pages of WAL would copy them into the database and wait for fsync, the slowest
    # requests' time. A thread of this process checkpoints instead (Checkpointer).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()
    if isinstance(dbapi_connection, QueuedWriter) and dbapi_connection.queue is not None:
        Checkpointer.start(dbapi_connection.queue.path)


class Checkpointer:
    """A thread that copies the WAL's new pages into the database file every second, as SQLite's
    automatic checkpoint would after a commit, but beside the requests instead of inside one
    (Python's sqlite3 lets other threads run meanwhile). One per database file and process:
    gunicorn forks its workers after the engine is made, so each starts its own on its first
    connection; two processes' checkpoints take turns on SQLite's checkpoint lock."""

    EVERY_SECONDS = 1.0
    _started: dict[str, int] = {}  # database path -> the process that started its thread
    _guard = threading.Lock()

    @classmethod
    def start(cls, path: str) -> None:
        with cls._guard:
            if cls._started.get(path) == os.getpid():
                return
            cls._started[path] = os.getpid()
        threading.Thread(target=cls._run, args=(path,), name="sqlite-checkpoint", daemon=True).start()

    @classmethod
    def _run(cls, path: str) -> None:
        connection = sqlite3.connect(path, timeout=SQLITE_BUSY_SECONDS, isolation_level=None)
        while os.path.exists(path):  # a removed database (a test's) ends its thread
            time.sleep(cls.EVERY_SECONDS)
            try:
                # PASSIVE: copies what no reader still needs, never waits for a reader or a writer.
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:
                pass  # the database busy or gone for a moment: the next second tries again
        connection.close()
        with cls._guard:
            cls._started.pop(path, None)


# The span a writer holds the queue is SQLite's own: from a connection's first INSERT, UPDATE
# or DELETE (where Python's sqlite3 opens the transaction) to its commit or rollback.

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
FLOCK_RETRY_SECONDS = (0.00005, 0.001)  # the first wait, doubled up to the last


class WriterQueue:
    """The queue for one database file."""

    def __init__(self, database: str) -> None:
        self.path = database
        self.pid = os.getpid()
        self.mutex = threading.Lock()
        self.fd = os.open(f"{database}-writer", os.O_RDWR | os.O_CREAT, 0o600)

    def acquire(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        if not self.mutex.acquire(timeout=timeout):
            raise sqlite3.OperationalError("database is locked (another writer held it too long)")
        # Only one thread per process gets here, so the file lock is contended by other
        # processes only; a crashed process's lock is released by the kernel.
        pause, longest = FLOCK_RETRY_SECONDS
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.mutex.release()
                    raise sqlite3.OperationalError(
                        "database is locked (another process held it too long)") from None
                time.sleep(pause)
                pause = min(pause * 2, longest)

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


def queue_writes(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
    connection = cursor.connection
    if isinstance(connection, QueuedWriter) and statement.lstrip()[:7].upper().startswith(WRITES):
        connection.hold()
