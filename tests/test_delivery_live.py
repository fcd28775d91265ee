"""Delivery against the running service (gunicorn + `jobs-api worker`), with the official SDK
where it has a call: protected downloads, status callbacks, usage, and the sweeper on its own
schedule expiring outputs."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from api2convert import Api2Convert
from api2convert.errors import SignatureVerificationError
from conftest import LiveService, Receiver, create_key, probe, start_service, stored

from jobs_api.cli import migrate
from jobs_api.models import utcnow


@pytest.fixture()
def sdk(live: LiveService) -> Api2Convert:
    return Api2Convert(create_key(live.settings, "sdk-delivery"), base_url=f"{live.url}/v2",
                       poll_interval=0.3, poll_timeout=120)


def test_sdk_downloads_a_password_protected_result(sdk: Api2Convert, wav_file: Path, tmp_path: Path) -> None:
    result = sdk.convert(str(wav_file), "mp3", download_password="s3cret-pw")
    saved = result.save(tmp_path / "out.mp3")  # the SDK sends X-Api2convert-Download-Password
    assert probe(saved)["codec_name"] == "mp3"
    uri = result.url()
    assert requests.get(uri, timeout=10).status_code == 401
    assert requests.get(uri, headers={"X-Oc-Download-Password": "wrong"}, timeout=10).status_code == 401
    by_cookie = requests.get(uri, cookies={"x-oc-download-password": "s3cret-pw"}, timeout=10)
    assert by_cookie.status_code == 200 and by_cookie.content == saved.read_bytes()


def test_notify_status_posts_every_change_signed(sdk: Api2Convert, live: LiveService, wav_file: Path,
                                                 receiver: Receiver) -> None:
    job = sdk.convert_async(str(wav_file), "flac", callback=receiver.url)  # sets notify_status
    received = receiver.wait(5, seconds=60)
    time.sleep(1)  # room for a delivery too many
    bodies = [json.loads(raw) for _headers, raw in received]
    # The SDK creates the job, uploads (ready), then starts it (queued).
    assert [body["status"]["code"] for body in bodies] == ["ready", "queued", "downloading", "processing", "completed"]
    assert {body["id"] for body in bodies} == {job.id}
    secret = live.settings.webhook_secret
    for headers, raw in received:
        event = Api2Convert.webhooks().construct_event(raw, headers.get("X-Oc-Signature"), secret)
        assert event is not None
    headers, raw = received[-1]
    with pytest.raises(SignatureVerificationError):
        Api2Convert.webhooks().construct_event(raw.replace(b"completed", b"failed"),
                                               headers.get("X-Oc-Signature"), secret)
    assert json.loads(raw)["output"][0]["size"] > 0


def test_sdk_reads_usage_and_creates_idempotently(sdk: Api2Convert) -> None:
    payload = {"process": False, "conversion": [{"target": "wav"}]}
    first = sdk.jobs.create(payload, idempotency_key="import-42")
    again = sdk.jobs.create(payload, idempotency_key="import-42")
    assert first.id == again.id
    [row] = sdk.stats.day(f"{utcnow():%Y-%m-%d}", "single")
    assert row["jobs"] == 1 and row["jobs_by_status"]["incomplete"] == 1
    [contract] = sdk.contracts.get()
    assert contract["usage"]["jobs_today"] == 1


@pytest.fixture(scope="module")
def short_lived(live: LiveService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """A second service whose outputs live 3 s and whose sweeper runs every second. It has its
    own database and storage, so its sweeper leaves the other tests' files alone."""
    root = tmp_path_factory.mktemp("short-lived")
    settings = live.settings.replace(
        database_url=f"sqlite:///{root}/jobs.db", storage_dir=root / "storage", queue_name="test-short-lived",
        storage_url=live.settings.storage_url and f"{live.settings.storage_url}-short-lived",
        output_ttl_seconds=3, sweep_interval_seconds=1, max_jobs_per_minute=3)
    migrate(settings)
    service = start_service(settings, root)
    yield service
    service.stop()


def test_the_scheduled_sweeper_expires_outputs(short_lived: LiveService, wav_file: Path, tmp_path: Path) -> None:
    key = create_key(short_lived.settings, "expiry")
    client = Api2Convert(key, base_url=f"{short_lived.url}/v2", poll_interval=0.2, poll_timeout=60)
    result = client.convert(str(wav_file), "ogg")
    output = result.output()
    assert requests.get(output.uri, timeout=10).status_code == 200
    assert len(stored(short_lived.settings, "outputs")) == 1
    deadline = time.monotonic() + 20
    status = ""
    while time.monotonic() < deadline and status != "expired":  # nobody calls the sweeper: the worker does
        status = client.jobs.get(result.job.id).output[0].status
        time.sleep(0.3)
    assert status == "expired"
    gone = requests.get(output.uri, timeout=10)
    assert gone.status_code == 410 and gone.json()["code"] == 410
    assert stored(short_lived.settings, "outputs") == {}  # the file is deleted, not only hidden


def test_429_carries_retry_after_over_http(short_lived: LiveService) -> None:
    headers = {"X-Oc-Api-Key": create_key(short_lived.settings, "busy")}
    for _ in range(3):
        assert requests.post(f"{short_lived.url}/v2/jobs", json={"process": False}, headers=headers,
                             timeout=10).status_code == 201
    refused = requests.post(f"{short_lived.url}/v2/jobs", json={"process": False}, headers=headers, timeout=10)
    assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 60
    assert refused.json() == {"message": refused.json()["message"], "code": 429, "errors": {}}
