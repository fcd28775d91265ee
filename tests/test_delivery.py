"""Delivery, run by a real worker (RQ burst, in this process) with the real ffmpeg: several
results and zips, download passwords, output management, the sweeper, fail_on_* flags."""
from __future__ import annotations

import base64
import io
import subprocess
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import make_audio, probe, run_worker, stored
from sqlalchemy import update

from jobs_api.db import make_engine, make_sessionmaker
from jobs_api.lifecycle import take, transition
from jobs_api.models import Job, JobStatus, OutputFile, utcnow
from jobs_api.queue import queue_for
from workers import heartbeat

LOCAL = "http://127.0.0.1:8000"


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def run(client: Any, config: Any, headers: dict[str, str], inputs: list[Path], conversions: list[dict[str, Any]],
        **job: Any) -> dict[str, Any]:
    body = {"input": [{"type": "base64", "source": b64(path), "filename": path.name} for path in inputs],
            "conversion": conversions, **job}
    created = client.post("/v2/jobs", json=body, headers=headers)
    assert created.status_code == 201, created.get_json()
    run_worker(config)
    return client.get(f"/v2/jobs/{created.get_json()['id']}", headers=headers).get_json()  # type: ignore[no-any-return]


def fetch(client: Any, output: dict[str, Any], **kwargs: Any) -> Any:
    return client.get(output["uri"].replace(LOCAL, ""), **kwargs)


@pytest.fixture(scope="module")
def tones(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("tones")
    return [make_audio(folder / f"tone{n}.wav", seconds=1.0 + n / 2) for n in range(3)]


@pytest.fixture(scope="module")
def two_tracks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Matroska file with two audio tracks: 2 s stereo at 44.1 kHz, 3 s mono at 22.05 kHz."""
    folder = tmp_path_factory.mktemp("tracks")
    first = make_audio(folder / "a.wav", seconds=2.0)
    second = make_audio(folder / "b.wav", seconds=3.0, rate=22050, channels=1)
    path = folder / "two tracks.mka"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(first), "-i", str(second),
                    "-map", "0:a", "-map", "1:a", "-c:a", "flac", str(path)], check=True)
    return path


def open_zip(client: Any, output: dict[str, Any], tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Every member of a zip output, extracted and measured with ffprobe."""
    response = fetch(client, output)
    assert response.status_code == 200 and response.mimetype == "application/zip"
    assert len(response.data) == output["size"]
    measured = {}
    with zipfile.ZipFile(io.BytesIO(response.data)) as archive:
        assert archive.testzip() is None
        for name in archive.namelist():
            path = tmp_path / output["id"] / name
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(archive.read(name))
            measured[name] = probe(path)
    return measured


# Several results ---------------------------------------------------------------------

def test_several_inputs_are_packed_into_one_zip(client: Any, config: Any, headers: dict[str, str],
                                                tones: list[Path], tmp_path: Path) -> None:
    job = run(client, config, headers, tones[:2], [{"target": "mp3"}])
    assert job["status"]["code"] == "completed", job
    [output] = job["output"]
    assert output["filename"] == "mp3-files.zip" and output["content_type"] == "application/zip"
    assert output["source"] == {"conversion": job["conversion"][0]["id"], "input": [i["id"] for i in job["input"]]}
    members = open_zip(client, output, tmp_path)
    assert set(members) == {"tone0.mp3", "tone1.mp3"}
    for name, seconds in (("tone0.mp3", 1.0), ("tone1.mp3", 1.5)):
        assert members[name]["codec_name"] == "mp3"
        assert abs(members[name]["duration"] - seconds) < 0.08
    listed = {item["filename"]: item for item in output["metadata"]["files"]}
    assert listed["tone1.mp3"]["input"] == job["input"][1]["id"] and listed["tone1.mp3"]["sample_rate"] == 44100


def test_each_audio_stream_of_an_input_is_a_result(client: Any, config: Any, headers: dict[str, str],
                                                   two_tracks: Path, tmp_path: Path) -> None:
    job = run(client, config, headers, [two_tracks], [{"target": "flac"}])
    assert job["status"]["code"] == "completed", job
    [output] = job["output"]
    assert output["filename"] == "two tracks.zip"
    members = open_zip(client, output, tmp_path)
    assert set(members) == {"two tracks-track1.flac", "two tracks-track2.flac"}
    first, second = members["two tracks-track1.flac"], members["two tracks-track2.flac"]
    assert (int(first["sample_rate"]), first["channels"]) == (44100, 2) and abs(first["duration"] - 2.0) < 0.05
    assert (int(second["sample_rate"]), second["channels"]) == (22050, 1) and abs(second["duration"] - 3.0) < 0.05

    separate = run(client, config, headers, [two_tracks], [{"target": "flac",
                                                            "options": {"allow_multiple_outputs": True}}])
    names = sorted(item["filename"] for item in separate["output"])
    assert names == ["two tracks-track1.flac", "two tracks-track2.flac"]
    assert all(item["source"]["input"] == [separate["input"][0]["id"]] for item in separate["output"])


@pytest.mark.parametrize(("threshold", "outputs"), [(3, 3), (2, 1)])
def test_threshold_packs_only_above_it(client: Any, config: Any, headers: dict[str, str], tones: list[Path],
                                       threshold: int, outputs: int, tmp_path: Path) -> None:
    options = {"allow_multiple_outputs": True, "allow_multiple_outputs_threshold": threshold}
    job = run(client, config, headers, tones, [{"target": "wav", "options": options}])
    assert job["status"]["code"] == "completed", job
    assert len(job["output"]) == outputs
    if outputs == 1:
        assert set(open_zip(client, job["output"][0], tmp_path)) == {"tone0.wav", "tone1.wav", "tone2.wav"}
    else:
        assert sorted(item["content_type"] for item in job["output"]) == ["audio/wav"] * 3


def test_same_names_are_told_apart_in_the_zip(client: Any, config: Any, headers: dict[str, str], tones: list[Path],
                                              tmp_path: Path) -> None:
    job = run(client, config, headers, [tones[0], tones[0]], [{"target": "ogg",
                                                               "options": {"output_filename": "take"}}])
    [output] = job["output"]
    assert output["filename"] == "take.zip"
    assert set(open_zip(client, output, tmp_path)) == {"take.ogg", "take (2).ogg"}


# Download passwords --------------------------------------------------------------------

def send_in(carrier: str, client: Any, output: dict[str, Any], password: str) -> Any:
    """Download `output` with `password` in a header or, for "cookie", the cookie."""
    if carrier != "cookie":
        return fetch(client, output, headers={carrier: password})
    client.set_cookie(COOKIE, password)  # Flask's test client keeps cookies in its own jar
    try:
        return fetch(client, output)
    finally:
        client.delete_cookie(COOKIE)


COOKIE = "x-oc-download-password"
CARRIERS = ("X-Api2convert-Download-Password", "X-Oc-Download-Password", "cookie")


def protected_job(way: str, client: Any, config: Any, headers: dict[str, str], tones: list[Path]) -> dict[str, Any]:
    """A completed job whose output is protected by 'open sesame', set one of the three ways."""
    options = {"download_password": "open sesame"} if way == "option" else {}
    extra = {"download_passwords": ["open sesame", "second"]} if way == "job" else {}
    job = run(client, config, headers, tones[:1], [{"target": "mp3", "options": options}], **extra)
    assert job["status"]["code"] == "completed", job
    if way == "patch":
        output = job["output"][0]
        patched = client.patch(f"/v2/jobs/{job['id']}/output/{output['id']}",
                               json={"download_password": "open sesame"}, headers=headers)
        assert patched.status_code == 200
    return job


@pytest.mark.parametrize("way", ["job", "option", "patch"])
def test_a_password_set_any_way_opens_with_any_of_the_three_carriers(
        way: str, client: Any, config: Any, headers: dict[str, str], tones: list[Path]) -> None:
    job = protected_job(way, client, config, headers, tones)
    output = job["output"][0]
    text = str(client.get(f"/v2/jobs/{job['id']}", headers=headers).get_json())
    assert "open sesame" not in text and "scrypt" not in text  # hashed, never returned
    client.environ_base["REMOTE_ADDR"] = f"10.9.{len(way)}.1"  # wrong tries are counted per address
    missing = fetch(client, output)
    assert missing.status_code == 401 and missing.get_json()["code"] == 401
    for carrier in CARRIERS:
        assert send_in(carrier, client, output, "wrong").status_code == 401, carrier
        opened = send_in(carrier, client, output, "open sesame")
        assert opened.status_code == 200, carrier
        assert len(opened.data) == output["size"]
        assert send_in(carrier, client, output, "nope, open sesame").status_code == 200  # candidates
    assert fetch(client, output, method="HEAD").status_code == 401


def test_patching_the_job_replaces_its_passwords(client: Any, config: Any, headers: dict[str, str],
                                                  tones: list[Path]) -> None:
    job = protected_job("job", client, config, headers, tones)
    output = job["output"][0]
    client.environ_base["REMOTE_ADDR"] = "10.9.9.2"
    assert send_in("cookie", client, output, "second").status_code == 200
    refused = client.patch(f"/v2/jobs/{job['id']}", json={"download_passwords": ["rotated"], "process": True},
                           headers=headers)
    assert refused.status_code == 409  # the job has finished: nothing of that PATCH applies
    assert send_in("cookie", client, output, "second").status_code == 200
    patched = client.patch(f"/v2/jobs/{job['id']}", json={"download_passwords": ["rotated"]}, headers=headers)
    assert patched.status_code == 200 and "download_passwords" not in patched.get_json()
    assert send_in("cookie", client, output, "second").status_code == 401
    assert send_in("cookie", client, output, "rotated").status_code == 200
    cleared = client.patch(f"/v2/jobs/{job['id']}", json={"download_passwords": []}, headers=headers)
    assert cleared.status_code == 200 and fetch(client, output).status_code == 200


def test_wrong_passwords_from_one_address_are_refused_after_the_limit(
        client: Any, config: Any, headers: dict[str, str], tones: list[Path]) -> None:
    output = protected_job("option", client, config, headers, tones)["output"][0]
    client.environ_base["REMOTE_ADDR"] = "10.9.9.3"
    for _ in range(config.max_password_failures):
        assert send_in("X-Oc-Download-Password", client, output, "guess").status_code == 401
    refused = send_in("X-Oc-Download-Password", client, output, "open sesame")
    assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 600
    client.environ_base["REMOTE_ADDR"] = "10.9.9.4"  # another address is not affected
    assert send_in("X-Oc-Download-Password", client, output, "open sesame").status_code == 200


def test_passwords_must_be_printable_and_stay_out_of_presets(client: Any, headers: dict[str, str]) -> None:
    bad = client.post("/v2/jobs", json={"download_passwords": ["tab\there"]}, headers=headers)
    assert bad.status_code == 400 and "download_passwords.0" in bad.get_json()["errors"]
    preset = client.post("/v2/presets", json={"name": "p", "target": "mp3",
                                              "options": {"download_password": "x"}}, headers=headers)
    assert preset.status_code == 400 and "options.download_password" in preset.get_json()["errors"]


# Output management ------------------------------------------------------------------

def test_outputs_are_renamed_counted_and_deleted(client: Any, config: Any, headers: dict[str, str],
                                                 tones: list[Path]) -> None:
    job = run(client, config, headers, tones[:2], [{"target": "mp3", "options": {"allow_multiple_outputs": True}}])
    first, second = job["output"]
    renamed = client.patch(f"/v2/jobs/{job['id']}/output/{first['id']}", json={"filename": "../Mix ä"},
                           headers=headers).get_json()
    assert renamed["filename"] == "Mix ä.mp3"
    response = fetch(client, first)
    assert "filename*=UTF-8''Mix%20%C3%A4.mp3" in response.headers["Content-Disposition"]
    fetch(client, first)
    assert client.get(f"/v2/jobs/{job['id']}/output/{first['id']}", headers=headers).get_json()[
        "downloads_counter"] == 2
    everything = client.patch(f"/v2/jobs/{job['id']}/output", json={"filename": "same"}, headers=headers)
    assert [item["filename"] for item in everything.get_json()] == ["same.mp3", "same.mp3"]
    by_input = client.get(f"/v2/jobs/{job['id']}/output?input_id={job['input'][1]['id']}", headers=headers)
    assert [item["id"] for item in by_input.get_json()] == [second["id"]]
    assert client.delete(f"/v2/jobs/{job['id']}/output/{second['id']}", headers=headers).status_code == 204
    assert fetch(client, second).status_code == 404
    assert [item["id"] for item in client.get(f"/v2/jobs/{job['id']}/output", headers=headers).get_json()] == [
        first["id"]]


# The sweeper ---------------------------------------------------------------------------

def sweep(config: Any) -> None:
    """The real sweep task, run by a worker."""
    queue_for(config).enqueue("workers.sweeper.sweep")
    run_worker(config)


def age(config: Any, model: Any, row_id: str, **values: Any) -> None:
    with make_sessionmaker(make_engine(config.database_url))() as session:
        session.execute(update(model).where(model.id == row_id).values(**values))
        session.commit()


def test_the_sweeper_expires_outputs_past_their_ttl(client: Any, config: Any, headers: dict[str, str],
                                                    tones: list[Path]) -> None:
    job = run(client, config, headers, tones[:1], [{"target": "flac"}])
    output = job["output"][0]
    before = len(stored(config, "outputs"))
    assert fetch(client, output).status_code == 200
    age(config, OutputFile, output["id"], created_at=utcnow() - timedelta(seconds=config.output_ttl_seconds + 5))
    sweep(config)
    after = client.get(f"/v2/jobs/{job['id']}/output/{output['id']}", headers=headers).get_json()
    assert after["status"] == "expired"
    assert len(stored(config, "outputs")) == before - 1
    gone = fetch(client, output)
    assert gone.status_code == 410 and "expired" in gone.get_json()["message"]


def test_the_sweeper_fails_stuck_jobs_requeues_lost_ones_and_removes_stray_folders(
        client: Any, config: Any, headers: dict[str, str], tones: list[Path]) -> None:
    def unprocessed() -> dict[str, Any]:
        return client.post("/v2/jobs", json={"process": False, "input": [{"type": "base64", "source": b64(tones[0])}],
                                             "conversion": [{"target": "mp3"}]}, headers=headers).get_json()

    stuck, lost, lost_run, last_run = unprocessed(), unprocessed(), unprocessed(), unprocessed()
    long_ago = utcnow() - timedelta(seconds=config.job_deadline_seconds + 60)
    age(config, Job, stuck["id"], status="processing", modified_at=long_ago, attempt=1)
    queue_for(config).connection.set(heartbeat.key(config, stuck["id"]), 1, ex=60)  # its worker is alive
    age(config, Job, lost["id"], status="queued", modified_at=long_ago)  # never put on the queue
    # No heartbeat: their worker died. The first runs again, the last of its attempts fails.
    age(config, Job, lost_run["id"], status="processing", modified_at=long_ago, attempt=1)
    age(config, Job, last_run["id"], status="downloading", modified_at=long_ago, attempt=config.max_attempts)
    stray = config.storage_dir / "work" / f"{stuck['id']}-leftover"
    stray.mkdir(parents=True)
    sweep(config)

    def job(made: dict[str, Any]) -> dict[str, Any]:
        return dict(client.get(f"/v2/jobs/{made['id']}", headers=headers).get_json())

    assert job(stuck)["status"]["code"] == "failed"
    assert job(stuck)["errors"][0]["code"] == 3002 and "did not finish within" in job(stuck)["errors"][0]["message"]
    # The database is the truth: a queued job the queue lost is queued again, and runs.
    assert job(lost)["status"]["code"] == "completed"
    assert job(lost_run)["status"]["code"] == "completed" and len(job(lost_run)["output"]) == 1
    history = client.get(f"/v2/jobs/{lost_run['id']}/history", headers=headers).get_json()
    assert "Worker lost; attempt 2 of 3." in [entry["info"] for entry in history]
    failed = job(last_run)
    assert failed["status"]["code"] == "failed" and failed["errors"][0]["code"] == 3002
    assert "a failure of the service, not of the input" in failed["errors"][0]["message"]
    assert not stray.exists()


def test_a_run_thought_lost_cannot_complete_the_job_its_next_attempt_holds(
        client: Any, config: Any, headers: dict[str, str], tones: list[Path]) -> None:
    """At most one completion (and so one `completed` callback) per job, however many runs."""
    made = client.post("/v2/jobs", json={"process": False, "input": [{"type": "base64", "source": b64(tones[0])}],
                                         "conversion": [{"target": "mp3"}]}, headers=headers).get_json()
    sessions = make_sessionmaker(make_engine(config.database_url))
    for attempt in (1, 2):  # the first run is thought lost, and the sweeper queues the job again
        age(config, Job, made["id"], status="queued")
        with sessions() as session:
            job = session.get(Job, made["id"])
            assert job is not None and take(session, job) and job.attempt == attempt
            assert not take(session, job)  # taken once
            assert transition(session, job.id, JobStatus.PROCESSING, allowed_from=[JobStatus.DOWNLOADING],
                              attempt=attempt)
            session.commit()
    with sessions() as session:
        assert not transition(session, made["id"], JobStatus.COMPLETED, allowed_from=[JobStatus.PROCESSING],
                              attempt=1)
        assert transition(session, made["id"], JobStatus.COMPLETED, allowed_from=[JobStatus.PROCESSING], attempt=2)
        session.commit()


# fail_on_input_error / fail_on_conversion_error -----------------------------------------

def test_a_failed_input_is_a_warning_when_asked(client: Any, config: Any, headers: dict[str, str],
                                                tones: list[Path], file_server: tuple[str, Path]) -> None:
    base, _folder = file_server
    inputs = [{"type": "base64", "source": b64(tones[0]), "filename": "ok.wav"},
              {"type": "remote", "source": f"{base}/missing.wav"}]
    for tolerant, status in ((False, "failed"), (True, "completed")):
        created = client.post("/v2/jobs", json={"input": inputs, "conversion": [{"target": "mp3"}],
                                                "fail_on_input_error": not tolerant}, headers=headers).get_json()
        run_worker(config)
        job = client.get(f"/v2/jobs/{created['id']}", headers=headers).get_json()
        assert job["status"]["code"] == status, job
        problems = job["warnings"] if tolerant else job["errors"]
        assert [(p["source"], p["code"]) for p in problems] == [("input", 1001)]
        assert len(job["output"]) == (1 if tolerant else 0)


def test_a_failed_conversion_is_a_warning_when_asked(client: Any, config: Any, headers: dict[str, str],
                                                     tones: list[Path]) -> None:
    conversions = [{"target": "mp3"}, {"target": "wav", "options": {"start": "00:00:30"}}]  # past the end
    job = run(client, config, headers, tones[:1], conversions, fail_on_conversion_error=False)
    assert job["status"]["code"] == "completed", job
    assert [(w["source"], w["id_source"], w["code"]) for w in job["warnings"]] == [
        ("conversion", job["conversion"][1]["id"], 2007)]
    assert [item["source"]["conversion"] for item in job["output"]] == [job["conversion"][0]["id"]]
    strict = run(client, config, headers, tones[:1], conversions)
    assert strict["status"]["code"] == "failed" and strict["errors"][0]["code"] == 2007
