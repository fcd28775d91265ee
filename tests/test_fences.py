"""Each fenced optimisation (jobs_api.config.FENCES) has a switch that turns it off; CI runs
the whole suite once with all of them off. These check that each switch does what it says."""
from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TEST_RUNS
from sqlalchemy import text

from jobs_api.config import FENCES, fence_on
from jobs_api.db import make_engine
from jobs_api.gunicorn_body import SocketBody
from jobs_api.sqlite_writers import QueuedWriter
from workers.ffmpeg import runner
from workers.ffmpeg.forkserver import Forkserver
from workers.worker import ConversionWorker, LeanWorker, worker_class

ROOT = Path(__file__).resolve().parent.parent


def test_every_fence_names_its_module_and_the_module_its_switch() -> None:
    for switch, module in FENCES.items():
        source = (ROOT / module).read_text()
        assert f'SWITCH = "{switch}"' in source and "Fenced cleverness" in source, module


def test_ci_runs_the_suite_once_with_every_fence_off() -> None:
    plain = next(line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "FFMPEG_FORKSERVER=0" in line)
    assert all(f"{switch}=0" in plain for switch in FENCES)


@pytest.mark.parametrize("value, on", [("1", True), ("0", False), (" 0 ", False)])
def test_a_switch_is_on_unless_set_to_zero(monkeypatch: pytest.MonkeyPatch, value: str, on: bool) -> None:
    monkeypatch.setenv("RQ_LEAN_WORKER", value)
    assert fence_on("RQ_LEAN_WORKER") is on
    monkeypatch.delenv("RQ_LEAN_WORKER")
    assert fence_on("RQ_LEAN_WORKER")


def test_sqlite_writers_are_plain_connections_with_the_queue_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for value, queued in (("1", True), ("0", False)):
        monkeypatch.setenv("SQLITE_WRITER_QUEUE", value)
        engine = make_engine(f"sqlite:///{tmp_path}/jobs-{value}.db")
        with engine.connect() as connection:
            raw = connection.connection.dbapi_connection
            assert isinstance(raw, QueuedWriter) is queued and isinstance(raw, sqlite3.Connection)
            mode = connection.execute(text("PRAGMA journal_mode")).scalar()
            autocheckpoint = connection.execute(text("PRAGMA wal_autocheckpoint")).scalar()
        assert mode == "wal" and (autocheckpoint == 0) is queued  # SQLite checkpoints itself when off
        engine.dispose()


def test_ffmpeg_is_exec_started_with_the_fork_server_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FFMPEG_FORKSERVER", "0")
    assert Forkserver.of("ffmpeg", "tests") is None
    version = runner.run(["ffmpeg", "-hide_banner", "-version"], sees=TEST_RUNS, deadline_seconds=30)
    assert version.startswith("ffmpeg version")


def test_the_lean_worker_is_rqs_own_with_its_switch_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RQ_LEAN_WORKER", "1")
    assert worker_class() is LeanWorker
    monkeypatch.setenv("RQ_LEAN_WORKER", "0")
    assert worker_class() is ConversionWorker  # RQ's SimpleWorker, told of stop requests and nothing more


def test_the_socket_reader_steps_aside_with_its_switch_off(monkeypatch: pytest.MonkeyPatch) -> None:
    class Unreader:  # the parts of gunicorn's reader SocketBody relies on
        def take_buffered(self) -> bytes:
            return b""

        def unread(self, _data: bytes) -> None:
            pass

    class Reader:
        length, unreader = 10, Unreader()

    class Body:
        reader, buf = Reader(), io.BytesIO()

    monkeypatch.setenv("GUNICORN_BODY_READER", "1")
    assert SocketBody.over(Body(), object(), 10) is not None
    monkeypatch.setenv("GUNICORN_BODY_READER", "0")
    assert SocketBody.over(Body(), object(), 10) is None


def test_the_interpreter_is_left_as_it_starts_with_tuning_off() -> None:
    check = ("import gc, sys, jobs_api.serving as serving; serving.tune_for_serving(); "
             "print(sys.getswitchinterval(), gc.get_freeze_count())")
    shown = subprocess.run([sys.executable, "-c", check], env={**os.environ, "TUNE_INTERPRETER": "0"},
                           cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    assert float(shown[0]) == pytest.approx(0.005) and int(shown[1]) == 0
