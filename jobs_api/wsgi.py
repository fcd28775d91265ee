"""The WSGI entry point for gunicorn: `jobs_api.wsgi:app`."""
from jobs_api.app import create_app
from jobs_api.serving import tune_for_serving

app = create_app()
tune_for_serving()
