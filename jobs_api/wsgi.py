"""The WSGI entry point for gunicorn: `jobs_api.wsgi:app`."""
import gc

from jobs_api.app import create_app

app = create_app()
# What importing made lives as long as the process: out of the collector's sight, a full
# collection no longer walks it (20-60 ms each time, a POST's p99 here). gunicorn imports
# this before it forks (--preload), so every worker starts frozen.
gc.freeze()
