"""/livez, /readyz (and /health) and /metrics, for operators: against real Redis (the suite's,
and one of the test's own that it stops and starts), the database, the storage folder, ffprobe."""
from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import requests
from conftest import LiveService, OwnRedis, make_audio, run_worker, wait_until
from prometheus_client.parser import text_string_to_metric_families

from jobs_api.app import create_app
from jobs_api.config import Config

HEALTH_JSON = "application/health+json"


def test_livez_answers_without_a_key(client: Any) -> None:
    answer = client.get("/livez")
    assert (answer.status_code, answer.mimetype, answer.get_json()) == (200, HEALTH_JSON, {"status": "pass"})


def test_readyz_checks_each_part_and_warns_without_a_worker(client: Any) -> None:
    for path in ("/readyz", "/health"):
        answer = client.get(path)
        body = answer.get_json()
        assert answer.status_code == 200 and answer.mimetype == HEALTH_JSON
        checks = {name: found[0] for name, found in body["checks"].items()}
        assert set(checks) == {"database:responseTime", "redis:responseTime", "workers:count", "storage:freeBytes",
                               "ffprobe:version"}
        assert checks["database:responseTime"]["status"] == checks["redis:responseTime"]["status"] == "pass"
        assert checks["storage:freeBytes"]["observedValue"] > 0
        assert checks["ffprobe:version"]["observedValue"].startswith("ffprobe version")
        # The suite runs its tasks in process: no worker is registered, so jobs would wait.
        assert checks["workers:count"] == {**checks["workers:count"], "status": "warn", "observedValue": 0}
        assert body["status"] == "warn"


def test_readyz_fails_when_the_storage_has_no_room(config: Config) -> None:
    crowded = create_app(config.replace(min_free_bytes=1 << 62)).test_client()
    answer = crowded.get("/readyz")
    check = answer.get_json()["checks"]["storage:freeBytes"][0]
    assert answer.status_code == 503 and answer.get_json()["status"] == "fail"
    assert check["status"] == "fail" and "MIN_FREE_BYTES" in check["output"]


def test_readyz_turns_503_while_redis_is_down_and_200_after(config: Config, tmp_path: Path) -> None:
    own_redis = OwnRedis(tmp_path)
    try:
        client = create_app(config.replace(redis_url=own_redis.url)).test_client()
        assert client.get("/readyz").status_code == 200
        own_redis.shut_down()
        wait_until(lambda: client.get("/readyz").status_code == 503, seconds=10)
        down = client.get("/readyz")
        redis_check = down.get_json()["checks"]["redis:responseTime"][0]
        assert down.status_code == 503 and redis_check["status"] == "fail" and "Connection" in redis_check["output"]
        assert down.get_json()["checks"]["database:responseTime"][0]["status"] == "pass"
        assert client.get("/livez").status_code == 200  # the process still answers
        metrics = client.get("/metrics").get_data(as_text=True)
        assert "jobs_api_redis_up 0.0" in metrics and "jobs_api_database_up 1.0" in metrics
        own_redis.start_empty()
        assert client.get("/readyz").status_code == 200
    finally:
        own_redis.stop()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_count_jobs_durations_failures_and_callbacks(
        client: Any, headers: dict[str, str], config: Config, tmp_path: Path, receiver: Any) -> None:
    before = _samples(client.get("/metrics").get_data(as_text=True))
    wav = make_audio(tmp_path / "a.wav", seconds=1.0)
    good = {"input": [{"type": "base64", "source": base64.b64encode(wav.read_bytes()).decode()}],
            "conversion": [{"target": "opus"}], "callback": receiver.url}
    bad = {"input": [{"type": "base64", "source": base64.b64encode(b"not audio at all").decode()}],
           "conversion": [{"target": "opus"}]}
    for body in (good, bad):
        assert client.post("/v2/jobs", json=body, headers=headers).status_code == 201
    run_worker(config)
    receiver.wait(1)
    answer = client.get("/metrics")
    assert answer.mimetype == "text/plain"
    after = _samples(answer.get_data(as_text=True))

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("jobs_api_jobs", status="completed") >= 1 and grew("jobs_api_jobs", status="failed") >= 1
    assert grew("jobs_api_job_duration_seconds_count", target="opus") >= 2
    assert grew("jobs_api_job_duration_seconds_bucket", target="opus", le="+Inf") >= 2
    assert grew("jobs_api_job_failures_total", code="2001") >= 1  # not audio
    assert grew("jobs_api_callback_attempts_total", outcome="answered_2xx") >= 1
    assert after[("jobs_api_storage_free_bytes", ())] > 0 and after[("jobs_api_redis_up", ())] == 1
    assert ("jobs_api_queue_depth", ()) in after and ("jobs_api_workers", ()) in after


def test_probes_leave_no_access_log_line(live: LiveService) -> None:
    marker = f"/v2/statuses?probe-check={time.monotonic_ns()}"
    for path in ("/livez", "/readyz", "/metrics", marker):
        assert requests.get(f"{live.url}{path}", timeout=30).status_code in (200, 503)
    log = live.logs / "api.log"
    deadline = time.monotonic() + 10
    while marker not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = log.read_text().splitlines()
    assert any(marker in line for line in lines)
    assert not any(f'"GET {path} ' in line for line in lines for path in ("/livez", "/readyz", "/metrics"))
