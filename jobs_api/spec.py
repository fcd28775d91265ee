"""What the OpenAPI document says beyond what flask-smorest reads off the views: who may call
each operation (its security), and the File Conversion dialect's own error shape."""
from __future__ import annotations

from typing import Any

from apispec import APISpec, BasePlugin

from jobs_api.resources.file_convert.routes import blp as file_convert_blp
from jobs_api.resources.files.routes import PASSWORD_HEADERS
from jobs_api.web import KEY_HEADERS, TOKEN_HEADERS

FILE_CONVERT_PREFIX = file_convert_blp.url_prefix or ""


def _header(name: str, description: str) -> dict[str, str]:
    return {"type": "apiKey", "in": "header", "name": name, "description": description}


# One scheme per header a caller may send (the names the views read); operations list the ones
# they take, any one of them.
SECURITY_SCHEMES = {
    "ApiKey": _header(KEY_HEADERS[1], "Your API key (`jobs-api keys create`)."),
    "ApiKeyAlias": _header(KEY_HEADERS[0], "The same key, under api2convert's newer header name."),
    "JobToken": _header(TOKEN_HEADERS[1], "A job's `token`: reads, patches and uploads into that job only."),
    "JobTokenAlias": _header(TOKEN_HEADERS[0], "The same token, under api2convert's newer header name."),
    "Authorization": _header("Authorization", "File Conversion: your API key, alone or as `Bearer <key>`."),
    "DownloadPassword": _header(PASSWORD_HEADERS[1], "A protected output's download password."),
}
Security = list[dict[str, list[str]]]
KEY: Security = [{"ApiKey": []}, {"ApiKeyAlias": []}]
KEY_OR_TOKEN: Security = [*KEY, {"JobToken": []}, {"JobTokenAlias": []}]
PUBLIC: Security = []


def security(path: str, method: str) -> Security:
    """Who may call `method` on `path` (as jobs_api.web.load_job and the views decide)."""
    if path.startswith(FILE_CONVERT_PREFIX):
        return [{"Authorization": []}]
    if path.startswith("/v2/dl/output/"):
        return [{}, {"DownloadPassword": []}]  # anyone with the link; a password where one is set
    if path.startswith("/v2/dl/"):
        return KEY_OR_TOKEN
    if path in ("/v2/conversions", "/v2/statuses"):
        return PUBLIC
    if path.startswith("/v2/jobs/{job_id}") and method in ("get", "head", "patch"):
        return KEY_OR_TOKEN
    return KEY


class SecurityPlugin(BasePlugin):  # type: ignore[misc]
    def init_spec(self, spec: APISpec) -> None:
        for name, scheme in SECURITY_SCHEMES.items():
            spec.components.security_scheme(name, scheme)

    def operation_helper(self, path: str | None = None, operations: dict[str, Any] | None = None,
                         **_kwargs: Any) -> None:
        for method, operation in (operations or {}).items():
            # a copy each: shared lists would come out of the YAML writer as anchors
            operation["security"] = [{name: [] for name in choice} for choice in security(path or "", method)]


class DialectErrors(BasePlugin):  # type: ignore[misc]
    """The File Conversion dialect's operations answer every error in its own shape
    (jobs_api.app.ERROR_BODIES), and their spec says so: flask-smorest gives every operation /v2's."""

    def operation_helper(self, path: str | None = None, operations: dict[str, Any] | None = None,
                         **_kwargs: Any) -> None:
        if not (path or "").startswith(FILE_CONVERT_PREFIX):
            return
        for operation in (operations or {}).values():
            operation.setdefault("responses", {})["default"] = {
                "description": "An error, in this dialect's shape",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FileConversionError"}}},
            }
