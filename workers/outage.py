"""The database going away under a running worker (a PostgreSQL restart, a failover): the
worker waits for it to answer again and then does the write again, instead of failing the
job or losing its result."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from jobs_api.logs import one_line

OUTAGE = (OperationalError, InterfaceError)  # what a refused or dropped connection raises
WAIT_SECONDS = 600  # then the job is left to the sweeper (workers/sweeper.py)
TRIES = 5  # a write that fails this often with the database answering in between is not an outage

log = logging.getLogger(__name__)
T = TypeVar("T")


def surviving_outage(session: Session, sessions: sessionmaker[Session], write: Callable[[], T]) -> T:
    """`write()`, which makes its changes in `session` and commits them. If the database is
    unreachable meanwhile, the session is rolled back (every change `write` made is undone),
    and once the database answers again `write()` runs anew; it must be safe to repeat."""
    for tries in range(1, TRIES + 1):
        try:
            return write()
        except OUTAGE as exc:
            if tries == TRIES:
                raise
            log.warning("the database is unreachable (%s); the worker waits for it", one_line(exc))
            rollback(session)
            wait_for_database(sessions)
    raise AssertionError("unreachable")


def wait_for_database(sessions: sessionmaker[Session]) -> None:
    """Until the database answers; after WAIT_SECONDS its error is raised."""
    delay, deadline = 0.5, time.monotonic() + WAIT_SECONDS
    while True:
        try:
            with sessions() as session:
                session.execute(text("SELECT 1"))
            return
        except OUTAGE:
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def rollback(session: Session) -> None:
    """Roll back, over a connection that may be gone (SQLAlchemy then discards it)."""
    try:
        session.rollback()
    except OUTAGE:
        pass
