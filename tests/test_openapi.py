"""openapi.yaml is generated from the code (`make openapi`); this fails when they drift."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SPEC = Path(__file__).resolve().parent.parent / "openapi.yaml"


def test_openapi_yaml_matches_the_code(app: Any) -> None:
    generated = app.extensions["jobs_api"]["api"].spec.to_dict()
    committed = yaml.safe_load(SPEC.read_text())
    assert committed == generated, "openapi.yaml is stale: run `make openapi` and commit it"


def test_every_route_is_documented(app: Any) -> None:
    paths = yaml.safe_load(SPEC.read_text())["paths"]
    for path in ("/v2/jobs", "/v2/jobs/{job_id}", "/v2/jobs/{job_id}/history", "/v2/jobs/{job_id}/conversions",
                 "/v2/jobs/{job_id}/input/{input_id}", "/v2/jobs/{job_id}/output/{output_id}",
                 "/v2/dl/upload-file/{job_id}", "/v2/dl/upload-base64/{job_id}", "/v2/dl/output/{output_id}",
                 "/v2/statuses", "/v2/conversions"):
        assert path in paths, path
