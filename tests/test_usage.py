"""Usage and limits over HTTP (Flask's test client): stats and contracts from the job
table, per-key 429s with Retry-After, and Idempotency-Key on POST /v2/jobs."""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from conftest import create_key, run_worker

from jobs_api.app import create_app
from jobs_api.models import utcnow


def test_stats_count_the_keys_jobs(client: Any, config: Any, wav_file: Path) -> None:
    mine, colleague, stranger = (create_key(config, name) for name in ("team-a", "team-a", "team-b"))
    body = {"input": [{"type": "base64", "source": base64.b64encode(wav_file.read_bytes()).decode()}],
            "conversion": [{"target": "mp3"}]}
    for key in (mine, mine, colleague, stranger):
        assert client.post("/v2/jobs", json=body, headers={"X-Oc-Api-Key": key}).status_code == 201
    client.post("/v2/jobs", json={"process": False}, headers={"X-Oc-Api-Key": mine})
    run_worker(config)
    today = utcnow()
    single = client.get(f"/v2/stats/day/{today:%Y-%m-%d}/single", headers={"X-Oc-Api-Key": mine}).get_json()
    [row] = single
    assert row["jobs"] == 3 and row["jobs_by_status"]["completed"] == 2 and row["jobs_by_status"]["incomplete"] == 1
    assert row["inputs"] == 2 and row["input_bytes"] == 2 * wav_file.stat().st_size
    assert row["outputs"] == 2 and row["output_bytes"] > 0 and row["api_key"]["name"] == "team-a"
    everyone = client.get(f"/v2/stats/month/{today:%Y-%m}/all", headers={"X-Oc-Api-Key": mine}).get_json()
    assert sorted(item["jobs"] for item in everyone) == [1, 3]  # team-a's two keys, not team-b's
    year = client.get(f"/v2/stats/year/{today:%Y}/single", headers={"X-Oc-Api-Key": mine}).get_json()
    assert year[0]["jobs"] == 3
    empty = client.get("/v2/stats/year/1999/single", headers={"X-Oc-Api-Key": mine}).get_json()
    assert empty[0]["jobs"] == 0


def test_stats_name_the_bad_part(client: Any, headers: dict[str, str]) -> None:
    bad_day = client.get("/v2/stats/day/2026-13-01/single", headers=headers)
    assert bad_day.status_code == 400 and "yyyy-mm-dd" in bad_day.get_json()["errors"]["day"][0]
    bad_filter = client.get("/v2/stats/month/2026-01/everyone", headers=headers)
    assert bad_filter.status_code == 400 and "single, all" in bad_filter.get_json()["errors"]["filter"][0]
    assert client.get("/v2/stats/year/2026/all").status_code == 401


def test_contracts_show_the_limits_and_their_use(client: Any, config: Any, headers: dict[str, str]) -> None:
    client.post("/v2/jobs", json={"process": False}, headers=headers)
    [contract] = client.get("/v2/contracts", headers=headers).get_json()
    assert contract["status"] == "active"
    assert contract["limits"]["concurrent_jobs"] == config.max_concurrent_jobs
    assert contract["limits"]["output_ttl_seconds"] == config.output_ttl_seconds
    assert contract["usage"] == {"running_jobs": 0, "jobs_last_minute": 1, "jobs_today": 1}


def limited_client(config: Any, **limits: int) -> Any:
    return create_app(config.replace(**limits)).test_client()


def test_concurrent_jobs_beyond_the_limit_get_429(config: Any, headers: dict[str, str], wav_file: Path) -> None:
    client = limited_client(config, max_concurrent_jobs=2)
    body = {"input": [{"type": "base64", "source": base64.b64encode(wav_file.read_bytes()).decode()}],
            "conversion": [{"target": "mp3"}]}
    started = [client.post("/v2/jobs", json=body, headers=headers).get_json() for _ in range(2)]
    refused = client.post("/v2/jobs", json=body, headers=headers)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "limit 2" in refused.get_json()["message"]
    waiting = client.post("/v2/jobs", json={**body, "process": False}, headers=headers)  # not started: allowed
    assert waiting.status_code == 201
    assert client.patch(f"/v2/jobs/{waiting.get_json()['id']}", json={"process": True},
                        headers=headers).status_code == 429
    upload_job = client.post("/v2/jobs", json={"conversion": [{"target": "mp3"}]}, headers=headers).get_json()
    upload = client.post(f"/v2/dl/upload-file/{upload_job['id']}", headers=headers,
                         data={"file": (wav_file.open("rb"), "a.wav")})
    assert upload.status_code == 429
    for job in started:
        client.delete(f"/v2/jobs/{job['id']}", headers=headers)
    assert client.patch(f"/v2/jobs/{waiting.get_json()['id']}", json={"process": True},
                        headers=headers).status_code == 200
    client.delete(f"/v2/jobs/{waiting.get_json()['id']}", headers=headers)


def test_jobs_per_minute_beyond_the_limit_get_429(config: Any, headers: dict[str, str]) -> None:
    client = limited_client(config, max_jobs_per_minute=3)
    for _ in range(3):
        assert client.post("/v2/jobs", json={"process": False}, headers=headers).status_code == 201
    refused = client.post("/v2/jobs", json={"process": False}, headers=headers)
    assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 60
    other = {"X-Oc-Api-Key": create_key(config)}
    assert client.post("/v2/jobs", json={"process": False}, headers=other).status_code == 201


def test_the_same_idempotency_key_returns_the_same_job(client: Any, headers: dict[str, str]) -> None:
    body = {"process": False, "conversion": [{"target": "flac"}]}
    first = client.post("/v2/jobs", json=body, headers={**headers, "Idempotency-Key": "order-17"})
    again = client.post("/v2/jobs", json=body, headers={**headers, "Idempotency-Key": "order-17"})
    assert first.status_code == again.status_code == 201
    assert first.get_json()["id"] == again.get_json()["id"]
    assert client.get("/v2/jobs", headers=headers).headers["X-Count"] == "1"
    changed = client.post("/v2/jobs", json={**body, "notify_status": True},
                          headers={**headers, "Idempotency-Key": "order-17"})
    assert changed.status_code == 422 and "Idempotency-Key" in changed.get_json()["errors"]
    other = client.post("/v2/jobs", json=body, headers={**headers, "Idempotency-Key": "order-18"})
    assert other.get_json()["id"] != first.get_json()["id"]
    bad = client.post("/v2/jobs", json=body, headers={**headers, "Idempotency-Key": "x" * 256})
    assert bad.status_code == 400 and "Idempotency-Key" in bad.get_json()["errors"]
