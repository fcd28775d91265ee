"""Logs an operator can use: one line per job outcome, no "Job OK" for a failed job, and with
LOG_FORMAT=json one JSON object per line from the API, gunicorn and the worker."""
from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import LiveService, create_key, make_audio, start_service, wait_for_job, wait_until

from jobs_api.config import Config
from jobs_api.logs import JsonFormatter


def test_a_json_line_carries_the_records_fields() -> None:
    record = logging.LogRecord("workers.tasks", logging.INFO, __file__, 1, "job %s done", ("j1",), None)
    record.job_id, record.error_code = "j1", None
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "job j1 done" and line["level"] == "info" and line["logger"] == "workers.tasks"
    assert line["job_id"] == "j1" and "error_code" in line and "args" not in line


def _two_jobs(service: LiveService, tmp_path: Path) -> tuple[str, str]:
    key = create_key(service.settings, "logs")
    wav = base64.b64encode(make_audio(tmp_path / "a.wav", seconds=1.0).read_bytes()).decode()
    ids = []
    for source in (wav, base64.b64encode(b"this is no audio").decode()):
        made = requests.post(f"{service.url}/v2/jobs", headers={"X-Oc-Api-Key": key}, timeout=10, json={
            "input": [{"type": "base64", "source": source}], "conversion": [{"target": "mp3"}]}).json()
        ids.append(made["id"])
    for job_id, status in zip(ids, ("completed", "failed"), strict=True):
        assert wait_for_job(service.url, job_id, key)["status"]["code"] == status
    return ids[0], ids[1]


@pytest.fixture()
def json_service(config: Config, tmp_path: Path) -> Any:
    service = start_service(config.replace(queue_name="test-json-logs"), tmp_path, {"LOG_FORMAT": "json"})
    yield service
    service.stop()


def test_with_log_format_json_every_line_is_a_json_object(json_service: LiveService, tmp_path: Path) -> None:
    good, bad = _two_jobs(json_service, tmp_path)
    requests.get(f"{json_service.url}/v2/statuses", timeout=10)
    json_service.stop()
    worker = [json.loads(line) for line in (json_service.logs / "worker.log").read_text().splitlines() if line]
    api = [json.loads(line) for line in (json_service.logs / "api.log").read_text().splitlines() if line]
    outcomes = {line["job_id"]: line for line in worker if line.get("logger") == "workers.tasks"}
    assert outcomes[good]["status"] == "completed" and outcomes[good]["targets"] == "mp3"
    assert outcomes[bad]["status"] == "failed" and outcomes[bad]["error_code"] == 2001
    assert outcomes[bad]["duration_s"] >= 0
    assert not any("Job OK" in line["message"] for line in worker)
    access = [line for line in api if line["logger"] == "gunicorn.access"]
    assert any(line["path"] == "/v2/statuses" and line["status"] == "200" for line in access)
    assert any(line["logger"] == "gunicorn.error" for line in api)


def test_a_failed_job_never_reads_job_ok(live: LiveService, tmp_path: Path) -> None:
    _good, bad = _two_jobs(live, tmp_path)

    def outcome_logged() -> bool:  # a poll may see the job fail before the worker logs its outcome
        return any(f"job {bad} failed" in line and "error 2001" in line
                   for line in (live.logs / "worker.log").read_text().splitlines())

    wait_until(outcome_logged, seconds=30)
    assert not any("Job OK" in line for line in (live.logs / "worker.log").read_text().splitlines())
