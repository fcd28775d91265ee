"""The API's documentation as the service serves it (issue 28): `/openapi.json` is openapi.yaml,
declares who may call each operation, and `/docs` needs nothing from outside the service."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

SPEC = Path(__file__).resolve().parent.parent / "openapi.yaml"


def test_openapi_json_is_the_committed_spec_with_its_security(client: Any) -> None:
    served = client.get("/openapi.json")
    assert served.status_code == 200 and served.mimetype == "application/json"
    spec = served.get_json()
    assert spec == yaml.safe_load(SPEC.read_text())
    schemes = spec["components"]["securitySchemes"]
    assert {(scheme["in"], scheme["name"]) for scheme in schemes.values()} >= {
        ("header", "X-Oc-Api-Key"), ("header", "X-Api2convert-Api-Key"), ("header", "Authorization")}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            assert "security" in operation, (method, path)
            assert all(name in schemes for choice in operation["security"] for name in choice), (method, path)
    assert {name for choice in spec["paths"]["/v2/jobs"]["post"]["security"] for name in choice} == {
        "ApiKey", "ApiKeyAlias"}
    assert spec["paths"]["/api/public/v1/file_convert"]["post"]["security"] == [{"Authorization": []}]
    assert spec["paths"]["/v2/conversions"]["get"]["security"] == []


def test_docs_load_only_the_services_own_assets(client: Any) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(assets) == 4 and "<script>" not in html  # no inline script: the policy allows none
    for asset in assets:
        assert asset.startswith("/") and not asset.startswith("//"), asset
        served = client.get(asset)
        assert served.status_code == 200 and served.data, asset
    setup = client.get("/docs/page/docs.js").get_data(as_text=True)
    assert 'url: "/openapi.json"' in setup and "validatorUrl: null" in setup
    assert client.get("/docs/swagger-ui/index.html").status_code == 404  # only the assets the page uses
