"""The WSGI entry point for gunicorn: `jobs_api.wsgi:app`."""
import gc
import sys

from jobs_api.app import create_app

app = create_app()
# What importing made lives as long as the process: out of the collector's sight, a full
# collection no longer walks it (20-60 ms each time, a POST's p99 here). gunicorn imports
# this before it forks (--preload), so every worker starts frozen.
gc.freeze()
# A request thread that gave up the GIL for SQLite or a socket waits for it while another
# thread computes, by default up to 5 ms each time, several times a request: with 32 clients
# polling ten times a second, 1 ms took GET's p99 from 45-50 to 26-44 ms and POST's from
# 71-82 to 48-54 ms (bench/api_load.py's clients, alternating runs).
sys.setswitchinterval(0.001)
