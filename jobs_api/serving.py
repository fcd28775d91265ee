"""The interpreter settings of a serving process.

Fenced cleverness: both settings tune CPython 3.11's internals for gunicorn's gthread workers
(gunicorn 22 and later, with --preload: the app is imported once, before the workers fork).
`TUNE_INTERPRETER=0` leaves the interpreter as it starts; CI runs the suite once that way.
"""
from __future__ import annotations

import gc
import sys

from jobs_api.config import fence_on

SWITCH = "TUNE_INTERPRETER"
SWITCH_INTERVAL = 0.001


def tune_for_serving() -> None:
    """Set once the app is imported, so that every gunicorn worker starts with them."""
    if not fence_on(SWITCH):
        return
    # What importing made lives as long as the process: out of the collector's sight, a full
    # collection no longer walks it (a pause that lands on some request).
    gc.freeze()
    # A request thread that gave up the GIL for SQLite or a socket waits for it while another
    # thread computes, by default up to 5 ms each time, several times a request: a shorter
    # interval takes that wait out of the slowest requests (bench/api_load.py, bench/RESULTS.md).
    sys.setswitchinterval(SWITCH_INTERVAL)
