"""The WSGI entry point for gunicorn: `jobs_api.wsgi:app`."""
from jobs_api.app import create_app
from jobs_api.config import Config
from jobs_api.logs import configure
from jobs_api.serving import tune_for_serving

config = Config.from_env()
configure(config.log_format)
app = create_app(config)
tune_for_serving()
