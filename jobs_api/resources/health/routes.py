"""For operators and load balancers: `/livez`, `/readyz` (and `/health`, as Gotenberg names it),
`/metrics`. No key needed; left out of the API docs and of the access log."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, json
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from jobs_api.health import FAIL, PASS

blp = Blueprint("health", __name__)
HEALTH_JSON = "application/health+json"


def _services() -> dict[str, Any]:
    return current_app.extensions["jobs_api"]  # type: ignore[no-any-return]


def _health(body: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(body), status=status, mimetype=HEALTH_JSON,
                    headers={"Cache-Control": "no-store"})


@blp.get("/livez")
def livez() -> Response:
    """The process answers."""
    return _health({"status": PASS}, 200)


@blp.get("/readyz")
@blp.get("/health")
def readyz() -> Response:
    """The database, Redis, the storage folder and ffprobe answer; 503 if one does not."""
    report = _services()["readiness"].report()
    return _health(report, 503 if report["status"] == FAIL else 200)


@blp.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(_services()["metrics"]), mimetype=CONTENT_TYPE_LATEST,
                    headers={"Cache-Control": "no-store"})
