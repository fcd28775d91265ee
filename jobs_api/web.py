"""Per-request plumbing: the database session, the job service, who is calling, and the
parser that reads every body as JSON. Uploads are `uploads.py`'s."""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Request, current_app, g, request
from flask_smorest import Blueprint as SmorestBlueprint
from marshmallow import ValidationError
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session
from webargs import core
from webargs.flaskparser import FlaskParser

from jobs_api.config import Config
from jobs_api.errors import MAX_FIELDS, NotAuthenticated, NotFound, RequestInvalid
from jobs_api.job_waits import Waits
from jobs_api.jobs import JobService
from jobs_api.models import ApiKey, Job
from jobs_api.queue import enqueue_committed
from jobs_api.representation import shown_with
from jobs_api.security import hash_secret
from jobs_api.storage import Storage

KEY_HEADERS = ("X-Api2convert-Api-Key", "X-Oc-Api-Key")
TOKEN_HEADERS = ("X-Api2convert-Token", "X-Oc-Token")


def config() -> Config:
    return current_app.extensions["jobs_api"]["config"]  # type: ignore[no-any-return]


def storage() -> Storage:
    return current_app.extensions["jobs_api"]["storage"]  # type: ignore[no-any-return]


def waits() -> Waits:
    return current_app.extensions["jobs_api"]["waits"]  # type: ignore[no-any-return]


def session() -> Session:
    if "db_session" not in g:
        g.db_session = current_app.extensions["jobs_api"]["sessions"]()
    return g.db_session  # type: ignore[no-any-return]


def close_session(_exc: BaseException | None) -> None:
    db_session = g.pop("db_session", None)
    if db_session is not None:
        db_session.close()


def service() -> JobService:
    settings = config()
    return JobService(session(), settings, storage(), lambda task, *args: enqueue_committed(settings, task, *args))


def _header(names: tuple[str, ...]) -> str | None:
    for name in names:
        value = request.headers.get(name)
        if value:
            return value.strip()
    return None


# Built once, and its two columns read as a plain row on the session's connection: building the
# statement, making an ApiKey object of the row or passing it through the ORM's statement
# handling cost more than running the query.
KEY_BY_HASH = select(ApiKey.id, ApiKey.revoked_at).where(ApiKey.key_hash == bindparam("key_hash"))


def api_key_id(key: str | None = None, header: str = KEY_HEADERS[-1]) -> str:
    """The calling key's id (from the key headers unless given, from `header`); 401 unless it is
    valid and unrevoked."""
    key = key if key is not None else _header(KEY_HEADERS)
    if not key:
        raise NotAuthenticated(header, sent=False)
    row = session().connection().execute(KEY_BY_HASH, {"key_hash": hash_secret(key)}).first()
    if row is None or row.revoked_at is not None:
        raise NotAuthenticated(header, sent=True)
    return str(row.id)


def load_job(job_id: str, *, upload: bool = False) -> Job:
    """The job if the caller may see it: by its owner's key, or by its own token. A token reads,
    patches and uploads (CONTRACT.md), nothing more: adding or deleting anything takes the key."""
    key, token = _header(KEY_HEADERS), _header(TOKEN_HEADERS)
    token_ok = upload or request.method in ("GET", "HEAD", "PATCH")
    if key or not token or not token_ok:
        job = service().for_key(hash_secret(key), job_id) if key else None
        if job is None:
            api_key_id(key)  # 401 unless the key is valid and unrevoked
            raise NotFound("Job not found.")
        return job
    return service().for_token(token, job_id)


MAX_PAGE = 1_000_000  # pages of 50: past any key's jobs, and an offset every database holds
MAX_DEPTH = 20  # levels of objects and arrays in a body; the deepest this API reads is 5
MAX_INTEGER = 2**63 - 1  # what the database and every client's JSON library can hold


class NotFinite(str):
    """NaN, Infinity or -Infinity where the body had one: not JSON, and not a number the service
    can store and later write back as JSON."""


def checked_json(body: Any) -> Any:
    """The parsed body, or RequestInvalid naming each value that no field may hold: one nested
    too deeply, a number that is not finite or beyond 64 bits, a string that is not valid
    Unicode (a lone surrogate, which \\ud800 writes; it would break every later answer) or holds
    a NUL character (\\u0000, which PostgreSQL cannot store)."""
    problems: dict[str, list[str]] = {}
    pending: list[tuple[str, Any, int]] = [("", body, 0)]
    while pending and len(problems) < MAX_FIELDS:
        path, value, depth = pending.pop()
        problem = _value_problem(value, depth)
        if problem:
            problems[path or "body"] = [problem]
        elif isinstance(value, dict):
            for key, item in value.items():
                name = f"{path}.{key}" if path else str(key)
                if _not_text(key):
                    shown = name.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\u0000")
                    problems[shown] = ["the name is not valid text: a lone surrogate or a NUL character"]
                else:
                    pending.append((name, item, depth + 1))
        elif isinstance(value, list):
            pending.extend((f"{path}.{index}" if path else str(index), item, depth + 1)
                           for index, item in enumerate(value))
    if problems:
        raise RequestInvalid("Invalid request.", problems)
    return body


def _value_problem(value: Any, depth: int) -> str | None:
    if depth > MAX_DEPTH:
        return f"nested more than {MAX_DEPTH} levels"
    if isinstance(value, NotFinite) or (isinstance(value, float) and not math.isfinite(value)):
        return "must be a finite number"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INTEGER:
        return "must be an integer that fits in 64 bits"
    if isinstance(value, str) and _not_text(value):
        return "not valid text: a lone surrogate or a NUL character"
    return None


def _not_text(text: str) -> bool:
    """Whether `text` cannot be stored as text: a lone surrogate, or a NUL (PostgreSQL refuses it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return "\x00" in text


class JsonAnywayParser(FlaskParser):
    """Bodies are JSON whatever their Content-Type; errors are 400 naming each field."""

    DEFAULT_VALIDATION_STATUS = 400

    def _raw_load_json(self, req: Request) -> Any:
        data = req.get_data(cache=True)
        if not data.strip():
            return core.missing
        try:
            return checked_json(json.loads(data, parse_constant=NotFinite))
        except RecursionError:
            raise RequestInvalid("The request body is nested too deeply.",
                                 {"body": [f"nested more than {MAX_DEPTH} levels"]}) from None
        except json.JSONDecodeError as exc:
            raise RequestInvalid(
                "Malformed JSON in the request body.", {"body": [f"not valid JSON: {exc.msg}"]}
            ) from exc
        except ValueError as exc:  # bytes that are not UTF-8 at all
            raise RequestInvalid("Malformed JSON in the request body.", {"body": ["not valid JSON"]}) from exc

    def handle_error(self, error: ValidationError, req: Request, schema: Any, *,  # type: ignore[override]
                     error_status_code: int | None, error_headers: Any) -> None:
        messages = error.messages
        if isinstance(messages, dict) and len(messages) == 1 and next(iter(messages)) in ("json", "query"):
            messages = next(iter(messages.values()))
        raise RequestInvalid("Invalid request.", flatten(messages))


def flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested messages as {"conversion.0.target": [...]}."""
    if isinstance(messages, dict):
        flat: dict[str, list[str]] = {}
        for key, value in messages.items():
            name = "body" if key == "_schema" else str(key)
            flat.update(flatten(value, f"{prefix}.{name}" if prefix else name))
        return flat
    if isinstance(messages, list) and all(isinstance(item, str) for item in messages):
        return {prefix or "body": messages}
    return {prefix or "body": [str(messages)]}


class Blueprint(SmorestBlueprint):
    ARGUMENTS_PARSER = JsonAnywayParser()

    def response(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """flask-smorest's, with the answer dumped under this app's config (the URLs it holds)."""
        document_and_dump = super().response(*args, **kwargs)

        def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
            dumping = document_and_dump(view)

            @wraps(dumping)
            def under_config(*view_args: Any, **view_kwargs: Any) -> Any:
                with shown_with(config()):
                    return dumping(*view_args, **view_kwargs)

            return under_config

        return decorator

    def arguments(self, schema: Any, **kwargs: Any) -> Any:
        """flask-smorest's, with a schema class made an instance once: given the class, webargs
        builds it and its nested schemas on every request, a noticeable part of a POST."""
        return super().arguments(schema() if isinstance(schema, type) else schema, **kwargs)
