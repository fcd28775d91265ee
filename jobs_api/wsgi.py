"""The WSGI entry point for gunicorn: `jobs_api.wsgi:app`."""
import gc

from jobs_api.app import create_app

app = create_app()

# What the app holds now (modules, mappers, schemas: about 90 000 objects) lives as long as the
# process. Frozen, Python's full collections skip it: one took 20-30 ms with the GIL held, a stall
# for every request in that process.
gc.freeze()
