"""schemathesis (PyPI) against openapi.yaml and the running service: generated requests, valid
and not, to every operation; no answer may be a server error, and every answer must match the
spec (status, content type, body). Bounded in time: FUZZ_SECONDS (CI's step of its own gives
it longer than the suite's runs do)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import LiveService, create_key

from jobs_api.config import Config

SPEC = Path(__file__).parent.parent / "openapi.yaml"
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


def test_generated_requests_get_no_server_error_and_answers_that_match_the_spec(
        live: LiveService, config: Config, tmp_path: Path) -> None:
    key = create_key(config, "fuzz")
    seconds = os.environ.get("FUZZ_SECONDS", "30")
    run = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "run", str(SPEC), "--url", live.url,
         "-H", f"X-Oc-Api-Key: {key}", "-H", f"Authorization: {key}", "--checks", CHECKS,
         "--max-examples", "30", "--max-time", seconds, "--seed", "1", "--workers", "2",
         "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=int(seconds) + 300, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:]
