"""Inputs and outputs in an S3-compatible bucket (`STORAGE_URL=s3://...`, issue 27), against a
real S3 server the tests start themselves (SeaweedFS, conftest.OwnS3): uploads go up in parts
as they arrive, downloads come down in ranges, workers convert from a copy in their scratch
folder, and a bucket that refuses the service is a 503 or a failed job that says so."""
from __future__ import annotations

import base64
import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import OwnS3, make_audio, probe, run_worker
from test_delivery import age, sweep

from jobs_api.app import create_app
from jobs_api.bucket import PART_BYTES, Bucket
from jobs_api.config import Config
from jobs_api.models import OutputFile, utcnow
from jobs_api.storage import StorageUnavailable, storage_for
from workers.ffmpeg.probe import probe_stream
from workers.services import worker_services

LOCAL = "http://127.0.0.1:8000"


@pytest.fixture()
def in_bucket(s3: OwnS3, config: Config, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Config]:
    """The service's settings with its shelf in a new bucket; the in-process worker's too."""
    name = s3.new_bucket(f"jobs-{uuid.uuid4().hex[:12]}")
    settings = config.replace(storage_url=f"s3://{name}/service", storage_dir=tmp_path / "scratch")
    for variable, value in {**s3.env, "STORAGE_URL": settings.storage_url,
                            "STORAGE_DIR": str(settings.storage_dir)}.items():
        monkeypatch.setenv(variable, value)
    worker_services.cache_clear()
    yield settings
    worker_services.cache_clear()


@pytest.fixture()
def client(in_bucket: Config) -> Any:
    return create_app(in_bucket).test_client()


def _bucket_name(settings: Config) -> str:
    return settings.storage_url.removeprefix("s3://").split("/", 1)[0]


def _objects(s3: OwnS3, settings: Config, kind: str) -> list[str]:
    listed = s3.client().list_objects_v2(Bucket=_bucket_name(settings), Prefix=f"service/{kind}/")
    return [item["Key"] for item in listed.get("Contents", [])]


def _scratch_files(settings: Config) -> list[Path]:
    return [path for path in settings.storage_dir.rglob("*") if path.is_file()]


def _job(client: Any, headers: dict[str, str], source: Path, options: dict[str, Any] | None = None,
         **job: Any) -> dict[str, Any]:
    body = {"process": False, "conversion": [{"target": "flac", "options": options or {}}], **job}
    created = client.post("/v2/jobs", json=body, headers=headers).get_json()
    with source.open("rb") as handle:
        upload = client.post(f"/v2/dl/upload-file/{created['id']}", data={"file": (handle, source.name)},
                             headers={"X-Oc-Token": created["token"]})
    assert upload.status_code == 201, upload.get_json()
    return created  # type: ignore[no-any-return]


def _finish(client: Any, settings: Config, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    assert client.patch(f"/v2/jobs/{job_id}", json={"process": True}, headers=headers).status_code == 200
    run_worker(settings)
    return client.get(f"/v2/jobs/{job_id}", headers=headers).get_json()  # type: ignore[no-any-return]


def test_a_large_upload_goes_up_in_parts_and_comes_back_whole(s3: OwnS3, in_bucket: Config, tmp_path: Path) -> None:
    storage = storage_for(in_bucket.storage_dir, in_bucket.storage_url)
    received = storage.incoming_file()
    written = hashlib.sha256()
    for _ in range(20):
        chunk = os.urandom(1024 * 1024)
        written.update(chunk)
        received.write(chunk)
    key = storage.adopt_input(received)
    assert received.sha256 == written.hexdigest() and received.size == 20 * 1024 * 1024
    assert _scratch_files(in_bucket) == []  # nothing of it on the local disk
    (found,) = _objects(s3, in_bucket, "inputs")
    assert s3.client().head_object(Bucket=_bucket_name(in_bucket), Key=found)["ETag"].strip('"').endswith(
        f"-{-(-received.size // PART_BYTES)}")  # a multipart upload of that many parts
    (tmp_path / "work").mkdir()
    copy = storage.readable_input(key, tmp_path / "work")
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == written.hexdigest()
    storage.remove_input(key)
    assert not storage.has_input(key)


def test_a_job_converts_from_the_bucket_and_its_output_downloads_in_ranges(
        s3: OwnS3, in_bucket: Config, client: Any, headers: dict[str, str], wav_file: Path, tmp_path: Path) -> None:
    job = _finish(client, in_bucket, headers, _job(client, headers, wav_file)["id"])
    assert job["status"]["code"] == "completed", job["errors"]
    output = job["output"][0]
    url = output["uri"].replace(LOCAL, "")
    whole = client.get(url)
    assert whole.status_code == 200 and len(whole.data) == output["size"]
    (tmp_path / "out.flac").write_bytes(whole.data)
    assert probe(tmp_path / "out.flac")["codec_name"] == "flac"
    part = client.get(url, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.data == whole.data[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{output['size']}"
    head = client.head(url)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == output["size"] and not head.data
    assert client.get(url, headers={"If-None-Match": whole.headers["ETag"]}).status_code == 304
    assert base64.b64decode(client.get(f"{url}?encoding=base64").data) == whole.data
    assert "filename*=UTF-8''tone.flac" in whole.headers["Content-Disposition"]
    assert len(_objects(s3, in_bucket, "inputs")) == 1 and len(_objects(s3, in_bucket, "outputs")) == 1
    assert _scratch_files(in_bucket) == []  # the worker's copy went with its work folder


def test_an_input_used_again_is_not_copied(s3: OwnS3, in_bucket: Config, client: Any, headers: dict[str, str],
                                           wav_file: Path) -> None:
    first = _finish(client, in_bucket, headers, _job(client, headers, wav_file)["id"])
    again = client.post("/v2/jobs", headers=headers, json={
        "input": [{"type": "input_id", "source": first["input"][0]["id"]}], "conversion": [{"target": "mp3"}]})
    assert again.status_code == 201, again.get_json()
    run_worker(in_bucket)
    done = client.get(f"/v2/jobs/{again.get_json()['id']}", headers=headers).get_json()
    assert done["status"]["code"] == "completed", done["errors"]
    assert len(_objects(s3, in_bucket, "inputs")) == 1 and len(_objects(s3, in_bucket, "outputs")) == 2


def test_file_conversion_reads_an_upload_from_the_bucket_without_a_copy(
        s3: OwnS3, in_bucket: Config, client: Any, api_key: str, audio_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The endpoint refuses what is not audio at once; in a bucket it reads the upload back on
    ffprobe's stdin, even an MP4 whose index is at its end, and copies nothing to this host."""
    monkeypatch.setattr(Bucket, "readable", lambda *args: pytest.fail("the upload was copied to the API's disk"))
    index_last = audio_dir / "index-last.m4a"
    make_audio(index_last, seconds=3.0, extra=["-c:a", "aac", "-b:a", "96k"])  # moov after mdat
    for source, status in ((index_last, 200), (None, 400)):
        upload = source.read_bytes() if source else os.urandom(300_000)
        answer = client.post("/api/public/v1/file_convert", headers={"Authorization": api_key},
                             content_type="multipart/form-data",
                             data={"target_format": "mp3", "audio_file": (io.BytesIO(upload), "upload.m4a")})
        assert answer.status_code == status, answer.get_json()
    assert answer.get_json()["error"].startswith("audio_file:")
    assert len(_objects(s3, in_bucket, "inputs")) == 1  # the refused upload was removed
    assert _scratch_files(in_bucket) == []


def test_a_probe_whose_reader_fails_raises_that_failure_not_not_audio() -> None:
    class Unreachable(io.RawIOBase):
        def readinto(self, buffer: Any) -> int:
            raise StorageUnavailable("the bucket went away")

    with pytest.raises(StorageUnavailable):  # a 503 naming storage, not a 400 blaming the file
        probe_stream(Unreachable())


def test_a_protected_output_expires_from_the_bucket(s3: OwnS3, in_bucket: Config, client: Any,
                                                    headers: dict[str, str], wav_file: Path) -> None:
    job = _finish(client, in_bucket, headers,
                  _job(client, headers, wav_file, {"download_password": "open sesame"})["id"])
    url = job["output"][0]["uri"].replace(LOCAL, "")
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"X-Oc-Download-Password": "open sesame"}).status_code == 200
    age(in_bucket, OutputFile, job["output"][0]["id"],
        created_at=utcnow() - timedelta(seconds=in_bucket.output_ttl_seconds + 5))
    sweep(in_bucket)
    assert _objects(s3, in_bucket, "outputs") == []
    assert client.get(url, headers={"X-Oc-Download-Password": "open sesame"}).status_code == 410


def test_an_upload_left_unfinished_is_aborted_by_the_sweep(s3: OwnS3, in_bucket: Config) -> None:
    storage = storage_for(in_bucket.storage_dir, in_bucket.storage_url)
    assert isinstance(storage.shelf, Bucket)
    storage.incoming_file().write(os.urandom(PART_BYTES + 1))  # one part sent, then its process "died"
    name = storage.shelf.name
    assert len(s3.client().list_multipart_uploads(Bucket=name).get("Uploads", [])) == 1
    assert storage.shelf.abort_uploads_begun_before(datetime.now(UTC) - timedelta(hours=1)) == 0  # too young
    assert storage.shelf.abort_uploads_begun_before(datetime.now(UTC) + timedelta(seconds=5)) == 1
    assert s3.client().list_multipart_uploads(Bucket=name).get("Uploads", []) == []


def test_a_bucket_that_refuses_the_service_is_a_503_and_readyz_says_so(
        in_bucket: Config, monkeypatch: pytest.MonkeyPatch, headers: dict[str, str], wav_file: Path) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    client = create_app(in_bucket).test_client()
    created = client.post("/v2/jobs", headers=headers, json={"conversion": [{"target": "flac"}]}).get_json()
    with wav_file.open("rb") as handle:
        upload = client.post(f"/v2/dl/upload-file/{created['id']}", data={"file": (handle, "tone.wav")},
                             headers={"X-Oc-Token": created["token"]})
    assert upload.status_code == 503, upload.get_json()
    assert "storage" in upload.get_json()["message"] and upload.headers["Retry-After"]
    ready = client.get("/readyz")
    assert ready.status_code == 503
    bucket = ready.get_json()["checks"]["bucket:responseTime"][0]
    assert bucket["status"] == "fail" and "refused" in bucket["output"]


def test_a_worker_the_bucket_refuses_fails_the_job_saying_so(
        in_bucket: Config, client: Any, monkeypatch: pytest.MonkeyPatch, headers: dict[str, str],
        audio_dir: Path) -> None:
    source = make_audio(audio_dir / "refused.wav", seconds=1.0)
    created = _job(client, headers, source)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    worker_services.cache_clear()  # the worker's credentials are now wrong
    job = _finish(client, in_bucket, headers, created["id"])
    assert job["status"]["code"] == "failed"
    assert "file storage" in job["errors"][0]["message"] and "not of the input" in job["errors"][0]["message"]


def test_a_large_download_is_read_in_ranges_not_whole(s3: OwnS3, in_bucket: Config) -> None:
    storage = storage_for(in_bucket.storage_dir, in_bucket.storage_url)
    data = os.urandom(3 * 1024 * 1024)
    (in_bucket.storage_dir / "work").mkdir(parents=True, exist_ok=True)
    made = in_bucket.storage_dir / "work" / "result.bin"
    made.write_bytes(data)
    key = storage.adopt_output(made)
    assert not made.exists()  # moved up, not copied
    opened = storage.open_output(key)
    assert opened is not None
    reader, size = opened
    assert size == len(data)
    reader.seek(2 * 1024 * 1024)
    assert reader.read(10) == data[2 * 1024 * 1024:2 * 1024 * 1024 + 10]
    reader.seek(5)
    assert io.BufferedReader(reader).read(100) == data[5:105]  # type: ignore[arg-type]
