"""The HTTP surface of /v2: authentication, jobs and their parts, errors, life cycle."""
from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import create_key, run_worker
from sqlalchemy import event

from jobs_api import web
from jobs_api.queue import queue_for

FLAC = {"target": "flac"}


def create(client: Any, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post("/v2/jobs", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()  # type: ignore[no-any-return]


# Authentication ----------------------------------------------------------------------

def test_missing_or_wrong_key_is_401_with_the_contract_message_and_says_which(client: Any) -> None:
    for headers, problem in (({}, "no API key was sent: send yours in the X-Oc-Api-Key header"),
                             ({"X-Oc-Api-Key": "nope"}, "no such key, or it was revoked"),
                             ({"X-Api2convert-Api-Key": "nope"}, "no such key, or it was revoked")):
        response = client.get("/v2/jobs", headers=headers)
        assert response.status_code == 401
        assert response.get_json() == {"message": "Invalid api key", "code": 401, "errors": {"X-Oc-Api-Key": [problem]}}


def test_both_key_headers_work_case_insensitively(client: Any, api_key: str) -> None:
    for name in ("X-Oc-Api-Key", "x-api2convert-api-key", "X-API2CONVERT-API-KEY"):
        assert client.get("/v2/jobs", headers={name: api_key}).status_code == 200


def test_another_keys_job_is_404(client: Any, config: Any, headers: dict[str, str]) -> None:
    job = create(client, headers, process=False, conversion=[FLAC])
    other = {"X-Oc-Api-Key": create_key(config, "other")}
    for method, path in (("get", ""), ("patch", ""), ("delete", ""), ("get", "/history"),
                         ("get", "/conversions"), ("get", "/input"), ("get", "/output")):
        response = getattr(client, method)(f"/v2/jobs/{job['id']}{path}", headers=other, json={})
        assert response.status_code == 404, (method, path)
    assert client.get(f"/v2/jobs/{job['id']}", headers=headers).status_code == 200


def test_job_token_grants_that_job_only(client: Any, headers: dict[str, str]) -> None:
    job = create(client, headers, process=False, conversion=[FLAC])
    other = create(client, headers, process=False, conversion=[FLAC])
    token = {"X-Api2convert-Token": job["token"]}
    assert client.get(f"/v2/jobs/{job['id']}", headers=token).status_code == 200
    assert client.get(f"/v2/jobs/{job['id']}", headers={"X-Oc-Token": job["token"]}).status_code == 200
    assert client.get(f"/v2/jobs/{other['id']}", headers=token).status_code == 404
    assert client.get("/v2/jobs", headers=token).status_code == 401
    assert client.delete(f"/v2/jobs/{job['id']}", headers=token).status_code == 401


def test_revoked_key_is_refused(client: Any, config: Any) -> None:
    from jobs_api.cli import main

    key = {"X-Oc-Api-Key": create_key(config, "to-revoke")}
    job = create(client, key, process=False, conversion=[FLAC])
    assert client.get("/v2/jobs", headers=key).status_code == 200
    assert main(["keys", "revoke", "to-revoke"]) == 0
    assert client.get("/v2/jobs", headers=key).status_code == 401
    # Its own job, read by the query that checks the key too.
    assert client.get(f"/v2/jobs/{job['id']}", headers=key).status_code == 401
    assert client.get(f"/v2/jobs/{job['id']}", headers={"X-Oc-Api-Key": "nope"}).status_code == 401
    # Its job's token dies with it: no read, no upload.
    token = {"X-Oc-Token": job["token"]}
    assert client.get(f"/v2/jobs/{job['id']}", headers=token).status_code == 404
    upload = client.post(f"/v2/dl/upload-file/{job['id']}", data={"file": (io.BytesIO(b"RIFF"), "a.wav")},
                         headers=token)
    assert upload.status_code == 404


def test_a_job_token_reads_patches_and_uploads_and_deletes_nothing(client: Any, headers: dict[str, str]) -> None:
    job = create(client, headers, process=False, conversion=[FLAC])
    token = {"X-Oc-Token": job["token"]}
    conversion = f"/v2/jobs/{job['id']}/conversions/{job['conversion'][0]['id']}"
    upload = client.post(f"/v2/dl/upload-file/{job['id']}", data={"file": (io.BytesIO(b"RIFF...."), "a.wav")},
                         headers=token)
    assert upload.status_code == 201, upload.get_json()
    assert client.get(conversion, headers=token).status_code == 200
    assert client.get(f"/v2/jobs/{job['id']}/output", headers=token).status_code == 200
    assert client.patch(conversion, headers=token, json={"options": {"frequency": 8000}}).status_code == 200
    for method, path, body in [
        ("delete", f"/v2/jobs/{job['id']}", None),
        ("delete", conversion, None),
        ("post", f"/v2/jobs/{job['id']}/conversions", FLAC),
        ("post", f"/v2/jobs/{job['id']}/input", {"type": "remote", "source": "http://example.com/a.wav"}),
        ("delete", f"/v2/jobs/{job['id']}/input/{upload.get_json()['id']}", None),
    ]:
        answer = getattr(client, method)(path, headers=token, json=body)
        assert answer.status_code == 401, (method, path, answer.get_json())
    assert client.get(f"/v2/jobs/{job['id']}", headers=headers).get_json()["status"]["code"] != "canceled"


def test_public_url_follows_port_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs_api.config import Config

    monkeypatch.delenv("PUBLIC_URL", raising=False)
    monkeypatch.setenv("PORT", "8123")
    assert Config.from_env().server_url == "http://127.0.0.1:8123/v2/dl"
    monkeypatch.setenv("PUBLIC_URL", "https://audio.example/")
    assert Config.from_env().server_url == "https://audio.example/v2/dl"


# Jobs --------------------------------------------------------------------------------

def test_job_json_has_the_vendor_shape(client: Any, headers: dict[str, str]) -> None:
    job = create(client, headers, process=False, conversion=[{"target": "mp3", "options": {"frequency": 44100}}])
    for field in ("id", "token", "type", "status", "errors", "warnings", "process", "fail_on_input_error",
                  "fail_on_conversion_error", "conversion", "input", "output", "callback",
                  "notify_status", "server", "created_at", "modified_at"):
        assert field in job
    assert job["type"] == "job"
    assert job["status"]["code"] == "incomplete" and job["status"]["info"]
    assert job["server"] == "http://127.0.0.1:8000/v2/dl"
    options = job["conversion"][0]["options"]
    assert options["frequency"] == 44100
    assert options["channels"] is None and options["start"] is None  # every option echoed
    assert job["created_at"].endswith("Z")


def test_list_pages_and_counts(client: Any, config: Any) -> None:
    headers = {"X-Oc-Api-Key": create_key(config, "lister")}
    assert client.get("/v2/jobs", headers=headers).get_json() == []
    ids = [create(client, headers, process=False, conversion=[FLAC])["id"] for _ in range(52)]
    first = client.get("/v2/jobs?page=1", headers=headers)
    assert first.headers["X-Count"] == "52" and len(first.get_json()) == 50
    second = client.get("/v2/jobs?page=2", headers=headers).get_json()
    assert len(second) == 2
    assert client.get("/v2/jobs?page=3", headers=headers).get_json() == []
    assert {j["id"] for j in first.get_json() + second} == set(ids)
    filtered = client.get("/v2/jobs?status=completed", headers=headers)
    assert filtered.get_json() == [] and filtered.headers["X-Count"] == "0"


def test_life_cycle_without_process_waits_for_patch(client: Any, headers: dict[str, str], wav_file: Path) -> None:
    job = create(client, headers, process=False, conversion=[FLAC])
    assert job["status"]["code"] == "incomplete"
    content = base64.b64encode(wav_file.read_bytes()).decode()
    response = client.post(f"/v2/dl/upload-base64/{job['id']}", json={"content": content, "filename": "t.wav"},
                           headers={"X-Oc-Token": job["token"]})
    assert response.status_code == 201, response.get_json()
    assert response.get_json()[0]["status"] == "ready"
    assert client.get(f"/v2/jobs/{job['id']}", headers=headers).get_json()["status"]["code"] == "ready"
    started = client.patch(f"/v2/jobs/{job['id']}", json={"process": True}, headers=headers).get_json()
    assert started["status"]["code"] == "queued"
    assert client.patch(f"/v2/jobs/{job['id']}", json={"process": True}, headers=headers).status_code == 409
    history = client.get(f"/v2/jobs/{job['id']}/history", headers=headers).get_json()
    assert [event["status"] for event in history] == ["incomplete", "ready", "queued"]


def test_process_true_without_input_starts_on_first_upload(
        client: Any, config: Any, headers: dict[str, str], wav_file: Path) -> None:
    job = create(client, headers, process=True, conversion=[FLAC])
    assert job["status"]["code"] == "incomplete"
    with wav_file.open("rb") as handle:
        response = client.post(f"/v2/dl/upload-file/{job['id']}", data={"file": (handle, "tone.wav")},
                               headers={"X-Api2convert-Token": job["token"]})
    assert response.status_code == 201, response.get_json()
    assert client.get(f"/v2/jobs/{job['id']}", headers=headers).get_json()["status"]["code"] == "queued"
    run_worker(config)
    done = client.get(f"/v2/jobs/{job['id']}", headers=headers).get_json()
    assert done["status"]["code"] == "completed", done
    statuses = [e["status"] for e in client.get(f"/v2/jobs/{job['id']}/history", headers=headers).get_json()]
    assert statuses == ["incomplete", "queued", "downloading", "processing", "completed"]


def test_a_complete_job_is_created_queued_and_enqueued(client: Any, headers: dict[str, str], config: Any,
                                                      wav_file: Path) -> None:
    content = base64.b64encode(wav_file.read_bytes()).decode()
    job = create(client, headers, input=[{"type": "base64", "source": content}], conversion=[FLAC])
    assert job["status"]["code"] == "queued"
    history = client.get(f"/v2/jobs/{job['id']}/history", headers=headers).get_json()
    assert [event["status"] for event in history] == ["ready", "queued"]
    assert f"process-{job['id']}" in queue_for(config).get_job_ids()
    run_worker(config)
    assert client.get(f"/v2/jobs/{job['id']}", headers=headers).get_json()["status"]["code"] == "completed"


def engine_of(app: Any) -> Any:
    return app.extensions["jobs_api"]["sessions"].kw["bind"]


@contextmanager
def executed(engine: Any) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements, with their parameters, the engine runs meanwhile."""
    statements: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def test_a_new_job_is_stored_as_answered_and_not_read_back(client: Any, app: Any, headers: dict[str, str]) -> None:
    with executed(engine_of(app)) as statements:
        job = create(client, headers, process=False, callback="https://example.com/hook",
                     conversion=[FLAC, {"target": "mp3", "options": {"frequency": 22050}, "metadata": {"title": "t"}}],
                     input=[{"type": "remote", "source": "https://example.com/a.wav", "filename": "a.wav"}])
    # Once the rows are written, the answer is made from the objects as stored, without a query.
    words = [statement.split()[:3] for statement, _parameters in statements]
    stored_from = next(n for n, first in enumerate(words) if first[0] == "INSERT")
    assert [first[2] for first in words[stored_from:]] == ["jobs", "conversions", "inputs", "job_events"]
    stored = client.get(f"/v2/jobs/{job['id']}", headers=headers).get_json()
    assert stored == job
    assert [item["options"]["frequency"] for item in stored["conversion"]] == [None, 22050]
    assert stored["conversion"][1]["metadata"] == {"title": "t"}
    assert stored["input"][0]["filename"] == "a.wav" and stored["status"]["code"] == "ready"
    history = client.get(f"/v2/jobs/{job['id']}/history", headers=headers).get_json()
    assert [item["status"] for item in history] == ["ready"]


def test_a_keys_limits_and_list_read_only_the_rows_they_need(client: Any, app: Any, headers: dict[str, str]) -> None:
    """The rate and concurrency checks of a POST, and the job list, go through the two-column
    indexes (migrations/versions/0005): on the key's index alone they read, and sorted, every
    job the key ever made (a POST took 22 ms for a key with 100,000 jobs)."""
    engine = engine_of(app)
    if engine.dialect.name != "sqlite":
        pytest.skip("reads SQLite's query plans")
    with executed(engine) as statements:
        create(client, headers, process=False, conversion=[FLAC])
        with app.test_request_context(headers=headers):  # what a job that starts asks first
            web.service().limits.require_slot(web.api_key_id())
        assert client.get("/v2/jobs", headers=headers).status_code == 200
    by_key = [(sql, parameters) for sql, parameters in statements
              if "FROM jobs" in sql and "jobs.api_key_id = ?" in sql and "JOIN" not in sql]
    with engine.connect() as connection:
        plans = [" ".join(str(row[3]) for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", parameters))
                 for sql, parameters in by_key]
    assert len(plans) == 4  # the rate and the concurrency check, the list's count and its page
    for plan in plans:  # the list sorts only jobs made in the same microsecond by id
        assert "ix_jobs_api_key_id_" in plan and "TEMP B-TREE FOR ORDER BY" not in plan, plan


def test_delete_cancels_and_job_stays_readable(client: Any, headers: dict[str, str]) -> None:
    job = create(client, headers, process=False, conversion=[FLAC])
    response = client.delete(f"/v2/jobs/{job['id']}", headers=headers)
    assert response.status_code == 204 and response.data == b""
    assert client.get(f"/v2/jobs/{job['id']}", headers=headers).get_json()["status"]["code"] == "canceled"


def test_conversions_sub_resource(client: Any, headers: dict[str, str]) -> None:
    job = create(client, headers, process=False)
    base = f"/v2/jobs/{job['id']}/conversions"
    created = client.post(base, json={"target": "mp3", "options": {"frequency": 44100, "channels": "mono"}},
                          headers=headers)
    assert created.status_code == 201
    cid = created.get_json()["id"]
    patched = client.patch(f"{base}/{cid}", json={"options": {"channels": None, "audio_bitrate": 128}},
                           headers=headers).get_json()
    assert patched["options"]["frequency"] == 44100  # merged
    assert patched["options"]["channels"] is None  # null resets
    assert patched["options"]["audio_bitrate"] == 128
    assert client.get(f"{base}/{cid}", headers=headers).get_json() == patched
    bad = client.patch(f"{base}/{cid}", json={"options": {"frequency": 96000}}, headers=headers)
    assert bad.status_code == 400 and "options.frequency" in bad.get_json()["errors"]
    assert client.delete(f"{base}/{cid}", headers=headers).status_code == 204
    assert client.get(base, headers=headers).get_json() == []
    assert client.get(f"{base}/{cid}", headers=headers).status_code == 404


def test_input_sub_resource_and_input_id_reuse(client: Any, headers: dict[str, str], wav_file: Path) -> None:
    first = create(client, headers, process=False, conversion=[FLAC], input=[
        {"type": "base64", "source": base64.b64encode(wav_file.read_bytes()).decode(), "filename": "a.wav"}])
    original = first["input"][0]
    second = create(client, headers, process=False, conversion=[FLAC])
    base = f"/v2/jobs/{second['id']}/input"
    reused = client.post(base, json={"type": "input_id", "source": original["id"]}, headers=headers)
    assert reused.status_code == 201, reused.get_json()
    body = reused.get_json()
    assert body["checksum"] == original["checksum"] and body["size"] == original["size"]
    renamed = client.patch(f"{base}/{body['id']}", json={"filename": "../../etc/x.wav"}, headers=headers)
    assert renamed.get_json()["filename"] == "x.wav"
    assert client.delete(f"{base}/{body['id']}", headers=headers).status_code == 204
    assert client.get(base, headers=headers).get_json() == []
    # The first job's file is still there: deleting a reuse does not delete shared bytes.
    again = client.post(base, json={"type": "input_id", "source": original["id"]}, headers=headers)
    assert again.status_code == 201
    other = {"X-Oc-Api-Key": "x"}
    assert client.post(base, json={"type": "input_id", "source": original["id"]}, headers=other).status_code == 401


def test_statuses_and_catalog(client: Any) -> None:
    statuses = client.get("/v2/statuses").get_json()
    assert {s["code"] for s in statuses} >= {"incomplete", "ready", "queued", "downloading",
                                              "processing", "completed", "failed", "canceled"}
    catalog = client.get("/v2/conversions?category=audio").get_json()
    assert {entry["target"] for entry in catalog} == {
        "mp3", "wav", "flac", "ogg", "opus", "aac", "m4a", "webm", "aiff", "wma", "alac"}
    mp3 = client.get("/v2/conversions?target=mp3").get_json()[0]
    assert 96000 not in mp3["options"]["frequency"]["enum"]
    assert client.get("/v2/conversions?page=2").get_json() == []
    assert client.get("/v2/conversions?category=video").get_json() == []


# Errors ------------------------------------------------------------------------------

def test_malformed_json_is_400(client: Any, headers: dict[str, str]) -> None:
    response = client.post("/v2/jobs", data=b'{"conversion": [', headers=headers,
                           content_type="text/plain")
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == 400 and "JSON" in body["message"] and "body" in body["errors"]


def test_json_is_parsed_whatever_the_content_type(client: Any, headers: dict[str, str]) -> None:
    response = client.post("/v2/jobs", data=b'{"process": false, "conversion": [{"target": "ogg"}]}',
                           headers=headers, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 201
    assert response.get_json()["conversion"][0]["target"] == "ogg"


def test_unknown_target_option_and_field_are_named(client: Any, headers: dict[str, str]) -> None:
    cases = [
        ({"conversion": [{"target": "xyz"}]}, "conversion.0.target", "flac"),
        ({"conversion": [{"target": "mp3", "options": {"frequency": 96000}}]},
         "conversion.0.options.frequency", "48000"),
        ({"conversion": [{"target": "mp3", "options": {"bogus": 1}}]}, "conversion.0.options.bogus", "frequency"),
        ({"conversion": [{"target": "mp3", "options": {"frequency": "44100"}}]},
         "conversion.0.options.frequency", "integer"),
        ({"conversion": [{"target": "mp3", "options": {"start": "00:00:05", "end": "00:00:02"}}]},
         "conversion.0.options.end", "after start"),
        ({"conversion": [FLAC], "surprise": True}, "surprise", "Unknown"),
        ({"conversion": [FLAC], "input": [{"type": "remote", "source": "ftp://x/y.mp3"}]}, "input.0.source", "http"),
        ({"conversion": [FLAC], "input": [{"type": "teleport", "source": "x"}]}, "input.0.type", "remote"),
    ]
    for body, field, hint in cases:
        response = client.post("/v2/jobs", json=body, headers=headers)
        assert response.status_code == 400, body
        errors = response.get_json()["errors"]
        assert field in errors, (body, errors)
        assert hint in " ".join(errors[field]), (body, errors)


def test_unknown_routes_and_ids_are_json_404(client: Any, headers: dict[str, str]) -> None:
    response = client.get("/v2/jobs/does-not-exist", headers=headers)
    assert response.status_code == 404 and response.get_json()["code"] == 404
    assert client.get("/v2/nothing-here").get_json()["code"] == 404


def test_zero_byte_and_missing_upload_are_400(client: Any, headers: dict[str, str]) -> None:
    job = create(client, headers, process=False, conversion=[FLAC])
    token = {"X-Oc-Token": job["token"]}
    import io
    empty = client.post(f"/v2/dl/upload-file/{job['id']}", data={"file": (io.BytesIO(b""), "empty.mp3")}, headers=token)
    assert empty.status_code == 400 and "file" in empty.get_json()["errors"]
    missing = client.post(f"/v2/dl/upload-file/{job['id']}", data={"other": "x"}, headers=token)
    assert missing.status_code == 400 and "file" in missing.get_json()["errors"]
    assert client.get(f"/v2/jobs/{job['id']}", headers=headers).get_json()["input"] == []


def test_an_upload_into_a_started_job_is_refused_before_its_body_is_read(
        client: Any, headers: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs_api.resources.files import routes

    job = create(client, headers, process=False, conversion=[FLAC])
    assert client.delete(f"/v2/jobs/{job['id']}", headers=headers).status_code in (200, 204)

    def read(*_args: Any) -> Any:
        raise AssertionError("the body was read")

    monkeypatch.setattr(routes, "received_file", read)
    refused = client.post(f"/v2/dl/upload-file/{job['id']}", headers={"X-Oc-Token": job["token"]},
                          data={"file": (io.BytesIO(b"\0" * (12 * 1024 * 1024)), "big.wav")})
    assert refused.status_code == 409 and "canceled" in refused.get_json()["message"]
