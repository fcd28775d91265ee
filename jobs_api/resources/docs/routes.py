"""The API's documentation, served by the service itself: `/openapi.json` (the document
openapi.yaml holds) and `/docs` (Swagger UI, from the swagger-ui-bundle package: no asset comes
from anywhere else, so the docs work on a machine with no internet)."""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort, current_app, json, render_template, send_from_directory
from swagger_ui_bundle import swagger_ui_path

blp = Blueprint("docs", __name__, template_folder="templates", static_folder="static", static_url_path="/docs/page")

SWAGGER_UI = Path(swagger_ui_path)
SWAGGER_ASSETS = frozenset(("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js",
                            "favicon-32x32.png", "favicon-16x16.png"))
# Swagger UI sets style attributes and shows its icons as data: URIs; everything else is the service's own.
DOCS_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


@blp.get("/openapi.json")
def openapi_json() -> Response:
    spec = current_app.extensions["jobs_api"]["api"].spec.to_dict()
    return Response(json.dumps(spec), mimetype="application/json")


@blp.get("/docs")
def docs() -> Response:
    page = Response(render_template("docs.html"), mimetype="text/html")
    page.headers["Content-Security-Policy"] = DOCS_POLICY
    return page


@blp.get("/docs/swagger-ui/<name>")
def swagger_asset(name: str) -> Response:
    if name not in SWAGGER_ASSETS:
        abort(404)
    return send_from_directory(SWAGGER_UI, name, max_age=3600)
