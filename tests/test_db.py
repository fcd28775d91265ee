"""SQLite writers queue in jobs_api.db instead of SQLite's busy handler: the queue is held
exactly while SQLite's write lock would be, and writers in several processes all get through.
Checkpoints run in a thread of their own, never inside a commit."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from jobs_api.db import make_engine
from jobs_api.sqlite_writers import Checkpointer, QueuedWriter

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def writer_queue_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are of the queue itself (jobs_api/sqlite_writers.py), whatever CI's plain run sets."""
    monkeypatch.setenv("SQLITE_WRITER_QUEUE", "1")


def _engine(path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE IF NOT EXISTS t (n INTEGER)"))
    return engine


def _held_elsewhere(path: Path) -> bool:
    """Whether another open file (as another process has) can take the writer lock now."""
    fd = os.open(f"{path}-writer", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_the_queue_is_held_from_the_first_write_to_commit_or_rollback(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    engine = _engine(path)
    with engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        assert isinstance(raw, QueuedWriter)
        connection.execute(text("SELECT count(*) FROM t"))
        assert not raw.holding and not _held_elsewhere(path)  # reading takes nothing
        connection.execute(text("INSERT INTO t VALUES (1)"))
        assert raw.holding and _held_elsewhere(path)
        connection.commit()
        assert not raw.holding and not _held_elsewhere(path)
        connection.execute(text("UPDATE t SET n = 2"))
        assert raw.holding and _held_elsewhere(path)
        connection.rollback()
        assert not raw.holding and not _held_elsewhere(path)
    with engine.connect() as connection:
        connection.execute(text("DELETE FROM t"))
    # Returned to the pool without a commit: the pool's rollback lets go too.
    assert not _held_elsewhere(path)


def test_a_second_thread_waits_for_the_first_writer(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    engine = _engine(path)
    order: list[str] = []
    with engine.connect() as first:
        first.execute(text("INSERT INTO t VALUES (1)"))

        def second_writer() -> None:
            with engine.begin() as second:
                second.execute(text("INSERT INTO t VALUES (2)"))
                order.append("second wrote")

        thread = threading.Thread(target=second_writer)
        thread.start()
        thread.join(timeout=0.5)
        assert thread.is_alive() and order == []  # queued behind the open transaction
        order.append("first commits")
        first.commit()
        thread.join(timeout=10)
    assert order == ["first commits", "second wrote"]


WRITER = """
import sys
from sqlalchemy import text
from sqlalchemy.engine import Engine
from jobs_api.db import make_engine
engine = make_engine(f"sqlite:///{sys.argv[1]}")
for n in range(300):
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
        connection.execute(text("UPDATE t SET n = n WHERE n = :n"), {"n": n})
"""


@pytest.mark.parametrize("processes", [4])
def test_writers_in_several_processes_all_get_through(tmp_path: Path, processes: int) -> None:
    path = tmp_path / "jobs.db"
    engine = _engine(path)
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
               for _ in range(processes)]
    for writer in writers:
        _, errors = writer.communicate(timeout=120)
        assert writer.returncode == 0, errors
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM t")).scalar() == processes * 300


FILL = ("INSERT INTO big SELECT randomblob(4000) FROM "
        "(WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 500) SELECT n FROM r)")


def test_commits_never_checkpoint_a_thread_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "jobs.db"
    started: list[str] = []
    monkeypatch.setattr(Checkpointer, "start", classmethod(lambda _cls, database: started.append(database)))
    engine = _engine(path)
    assert set(started) == {os.path.realpath(path)}  # each connection asks for the thread
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE big (b BLOB)"))
    before = path.stat().st_size
    for _ in range(3):
        with engine.begin() as connection:
            connection.execute(text(FILL))
    # 1500 pages of WAL: SQLite's own checkpoint (at 1000) would have copied them at a commit.
    assert Path(f"{path}-wal").stat().st_size > 1000 * 4096
    assert path.stat().st_size == before

    monkeypatch.undo()
    Checkpointer.start(os.path.realpath(path))
    deadline = time.monotonic() + 10
    while path.stat().st_size < before + 1500 * 4000 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert path.stat().st_size >= before + 1500 * 4000
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM big")).scalar() == 1500
