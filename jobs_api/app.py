"""create_app: the Flask application, assembled from short register steps."""
from __future__ import annotations

import logging
from typing import Any, cast

from flask import Flask, request
from flask_smorest import Api
from marshmallow import Schema, fields
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from jobs_api import file_conversion
from jobs_api.config import Config
from jobs_api.db import make_engine, make_sessionmaker
from jobs_api.errors import RequestInvalid, ServiceError
from jobs_api.gunicorn_worker import PEEK_BODY_BYTES
from jobs_api.health import Readiness
from jobs_api.job_waits import Waits
from jobs_api.logs import one_line
from jobs_api.metrics import registry_for
from jobs_api.resources.docs.routes import blp as docs_blp
from jobs_api.resources.file_convert.routes import blp as file_convert_blp
from jobs_api.resources.files.routes import blp as files_blp
from jobs_api.resources.health.routes import blp as health_blp
from jobs_api.resources.info.routes import blp as info_blp
from jobs_api.resources.jobs.routes import blp as jobs_blp
from jobs_api.resources.page.routes import blp as page_blp
from jobs_api.resources.presets.routes import blp as presets_blp
from jobs_api.resources.usage.routes import blp as usage_blp
from jobs_api.spec import DialectErrors, SecurityPlugin
from jobs_api.storage import StorageUnavailable, storage_for
from jobs_api.uploads import StreamingRequest
from jobs_api.web import api_key_id, close_session, load_job

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 16 * 1024 * 1024
UPLOAD_ENDPOINTS = ("files.UploadFile", "file_convert.FileConvert")
CHECK_BEFORE_READING = (*UPLOAD_ENDPOINTS, "files.UploadBase64")  # their views check the caller first
KEYED_BLUEPRINTS = ("jobs", "files", "presets", "presets_unversioned")  # the key or a job's token opens them


def create_app(config: Config | None = None) -> Flask:
    config = config or Config.from_env()
    app = Flask(__name__)
    app.request_class = StreamingRequest
    register_settings(app, config)
    register_services(app, config)
    register_api(app)
    register_error_handlers(app)
    register_request_hooks(app, config)
    return app


def register_settings(app: Flask, config: Config) -> None:
    app.config.update(
        API_TITLE="Audio conversion jobs (api2convert v2 compatible)",
        API_VERSION="2",
        OPENAPI_VERSION="3.0.3",
        # Uploads: the multipart overhead on top of the largest accepted input.
        MAX_CONTENT_LENGTH=config.max_input_bytes + 1024 * 1024,
        MAX_FORM_MEMORY_SIZE=1024 * 1024,
        JSON_SORT_KEYS=False,
    )


def register_services(app: Flask, config: Config) -> None:
    storage = storage_for(config.storage_dir, config.storage_url)
    storage.ensure()
    sessions = make_sessionmaker(make_engine(config.database_url))
    app.extensions["jobs_api"] = {
        "config": config,
        "storage": storage,
        "sessions": sessions,
        "readiness": Readiness(config, sessions, storage),
        "metrics": registry_for(config, sessions, storage),
        "waits": Waits(config),
    }
    app.teardown_appcontext(close_session)


class ErrorOut(Schema):
    message = fields.String()
    code = fields.Integer()
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()),
                         metadata={"description": "Field path -> messages"})


class JobsApi(Api):
    ERROR_SCHEMA = ErrorOut


def register_api(app: Flask) -> None:
    description = "Self-hosted audio conversion jobs, wire-compatible with api2convert's v2 API."
    plugins = [SecurityPlugin(), DialectErrors()]
    api = JobsApi(app, spec_kwargs={"info": {"description": description}, "extra_plugins": plugins})
    app.extensions["jobs_api"]["api"] = api
    for blueprint in (jobs_blp, files_blp, info_blp, presets_blp, usage_blp, file_convert_blp):
        api.register_blueprint(blueprint)
    app.register_blueprint(health_blp)  # for operators: left out of the API docs
    app.register_blueprint(docs_blp)
    app.register_blueprint(page_blp)  # the page at /, one more client of the API
    # The old PHP SDK sends presets without the /v2 prefix: same views, left out of the docs.
    app.register_blueprint(presets_blp, url_prefix="/presets", name="presets_unversioned")


def error_body(message: str, code: int, errors: dict[str, list[str]]) -> dict[str, Any]:
    return {"message": message, "code": code, "errors": errors}


RETRY_AFTER_OUTAGE = 5  # seconds a client is asked to wait while Redis or the database is away

# Every error is answered from one mapping; each dialect shapes the body its clients expect.
ERROR_BODIES = {"file_convert": file_conversion.error_body}  # blueprint -> body shape; else /v2's


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ServiceError)
    def service_error(error: ServiceError) -> Any:
        return _answer(error.status, error.message, error.errors, error.headers)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        code = error.code or 500
        message = error.description if code < 500 else "Internal server error"
        if code == 404 and _exists_under_v2(app, request.path, request.method):
            message = f"Not found: the API's paths begin with /v2; did you mean /v2{request.path}?"
        return _answer(code, message or error.name)

    @app.errorhandler(RedisError)
    def queue_down(error: RedisError) -> Any:
        log.error("Redis unreachable on %s %s: %s", request.method, request.path, error)
        return _answer(503, "The queue (Redis) cannot be reached; try again shortly.",
                       headers={"Retry-After": str(RETRY_AFTER_OUTAGE)})

    @app.errorhandler(StorageUnavailable)
    def storage_down(error: StorageUnavailable) -> Any:
        log.error("storage unavailable on %s %s: %s", request.method, request.path, error)
        return _answer(503, "The file storage (the S3 bucket) cannot be reached or refused the service; "
                            "try again shortly.", headers={"Retry-After": str(RETRY_AFTER_OUTAGE)})

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def database_down(error: DBAPIError) -> Any:
        log.error("database unreachable on %s %s: %s", request.method, request.path, one_line(error.orig or error))
        return _answer(503, "The database cannot be reached; try again shortly.",
                       headers={"Retry-After": str(RETRY_AFTER_OUTAGE)})

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Any:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _answer(500, "Internal server error")


def _exists_under_v2(app: Flask, path: str, method: str) -> bool:
    if path.startswith("/v2/") or not path.startswith("/"):
        return False
    try:
        app.url_map.bind("localhost").match(f"/v2{path.rstrip('/')}", method=method)
    except HTTPException:
        return False
    return True


def _answer(status: int, message: str, errors: dict[str, list[str]] | None = None,
            headers: dict[str, str] | None = None) -> Any:
    shape = ERROR_BODIES.get(request.blueprint or "", error_body)
    return shape(message, status, errors or {}), status, headers or {}


def register_request_hooks(app: Flask, config: Config) -> None:
    @app.before_request
    def refuse_nul_in_url() -> None:
        """A NUL (%00) reaches the database as part of an id or a filter, which PostgreSQL refuses."""
        if "\x00" in request.path or any("\x00" in name + value for name, value in request.args.items(multi=True)):
            raise RequestInvalid("A NUL character (%00) is not accepted in a URL.", {"url": ["contains %00"]})

    @app.before_request
    def limit_body() -> None:
        if request.endpoint == "files.UploadBase64":
            request.max_content_length = config.max_input_bytes * 4 // 3 + 1024 * 1024
        elif request.endpoint not in UPLOAD_ENDPOINTS:
            request.max_content_length = MAX_JSON_BYTES

    @app.before_request
    def authenticate_before_a_body_in_transit() -> None:
        """A body larger than the server waits for, or a chunked one, is read by a thread as it
        arrives (jobs_api/gunicorn_worker.py): a caller whose key (or job token) does not check
        out is answered before, and cannot hold threads with bodies it never finishes. Uploads
        check theirs in their views, before they read."""
        if request.blueprint not in KEYED_BLUEPRINTS or request.endpoint in CHECK_BEFORE_READING:
            return
        if not cast(StreamingRequest, request).chunked and (request.content_length or 0) <= PEEK_BODY_BYTES:
            return
        job_id = (request.view_args or {}).get("job_id")
        if job_id is not None:
            load_job(job_id)
        else:
            api_key_id()

    @app.teardown_request
    def drop_incoming(_exc: BaseException | None) -> None:
        if isinstance(request, StreamingRequest):
            request.remove_incoming()
