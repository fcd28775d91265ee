"""Conversions run by a real worker (RQ burst, in this process) with the real ffmpeg;
every result is measured with ffprobe."""
from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import ffmpeg_runs, make_audio, probe, run_worker

from jobs_api.app import create_app

EXPECTED = {  # target: (codec, container as ffprobe names it)
    "mp3": ("mp3", "mp3"),
    "wav": ("pcm_s16le", "wav"),
    "flac": ("flac", "flac"),
    "ogg": ("vorbis", "ogg"),
    "opus": ("opus", "ogg"),
    "aac": ("aac", "aac"),
    "m4a": ("aac", "mov,mp4,m4a,3gp,3g2,mj2"),
    "webm": ("opus", "matroska,webm"),
    "aiff": ("pcm_s16be", "aiff"),
    "wma": ("wmav2", "asf"),
    "alac": ("alac", "mov,mp4,m4a,3gp,3g2,mj2"),
}


def convert(client: Any, config: Any, headers: dict[str, str], source: Path, target: str,
            options: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
            **job: Any) -> dict[str, Any]:
    conversion = {"target": target, "options": options or {}, "metadata": metadata}
    body = {"process": False, "conversion": [conversion], **job}
    created = client.post("/v2/jobs", json=body, headers=headers).get_json()
    with source.open("rb") as handle:
        upload = client.post(f"/v2/dl/upload-file/{created['id']}", data={"file": (handle, source.name)},
                             headers={"X-Oc-Token": created["token"]})
    assert upload.status_code == 201, upload.get_json()
    assert client.patch(f"/v2/jobs/{created['id']}", json={"process": True}, headers=headers).status_code == 200
    run_worker(config)
    return client.get(f"/v2/jobs/{created['id']}", headers=headers).get_json()  # type: ignore[no-any-return]


def download(client: Any, job: dict[str, Any], tmp_path: Path) -> Path:
    output = job["output"][0]
    response = client.get(output["uri"].replace("http://127.0.0.1:8000", ""))
    assert response.status_code == 200
    path = tmp_path / output["id"] / output["filename"]
    path.parent.mkdir()
    path.write_bytes(response.data)
    assert path.stat().st_size == output["size"]
    return path


@pytest.mark.parametrize("target", sorted(EXPECTED))
def test_every_target_keeps_rate_channels_and_duration(
        target: str, client: Any, config: Any, headers: dict[str, str], audio_dir: Path, tmp_path: Path) -> None:
    # 48 kHz stereo fits every target, so the defaults must keep both.
    source = audio_dir / "tone48.flac"
    if not source.exists():
        make_audio(source, seconds=2.0, rate=48000)
    job = convert(client, config, headers, source, target)
    assert job["status"]["code"] == "completed", job
    output = job["output"][0]
    measured = probe(download(client, job, tmp_path))
    codec, container = EXPECTED[target]
    assert (measured["codec_name"], measured["format_name"]) == (codec, container)
    assert int(measured["sample_rate"]) == 48000
    assert measured["channels"] == 2
    assert abs(measured["duration"] - 2.0) < 0.08
    assert output["metadata"]["sample_rate"] == 48000 and output["metadata"]["channels"] == 2
    assert output["filename"].startswith("tone48.")
    assert len(output["checksum"]) == 64 and output["source"]["conversion"] == job["conversion"][0]["id"]


def test_defaults_fit_the_target_when_the_source_does_not(
        client: Any, config: Any, headers: dict[str, str], audio_dir: Path, tmp_path: Path) -> None:
    source = make_audio(audio_dir / "hires.wav", seconds=1.0, rate=96000, channels=6,
                        extra=["-c:a", "pcm_s24le"])
    mp3 = probe(download(client, convert(client, config, headers, source, "mp3"), tmp_path))
    assert (int(mp3["sample_rate"]), mp3["channels"]) == (48000, 2)  # lame's highest rate, stereo
    flac = probe(download(client, convert(client, config, headers, source, "flac"), tmp_path))
    assert (int(flac["sample_rate"]), flac["channels"], flac["bits_per_raw_sample"]) == (96000, 6, "24")
    opus = probe(download(client, convert(client, config, headers, source, "opus"), tmp_path))
    assert int(opus["sample_rate"]) == 48000


def test_basic_options_are_what_the_file_reports(
        client: Any, config: Any, headers: dict[str, str], wav_file: Path, tmp_path: Path) -> None:
    options = {"frequency": 22050, "channels": "mono", "start": "00:00:00.5", "end": "00:00:02",
               "output_filename": "../My Song: ünïcode"}
    job = convert(client, config, headers, wav_file, "wav", {**options, "audio_bitdepth": 24})
    assert job["status"]["code"] == "completed", job
    measured = probe(download(client, job, tmp_path))
    assert (int(measured["sample_rate"]), measured["channels"], measured["codec_name"]) == (22050, 1, "pcm_s24le")
    assert abs(measured["duration"] - 1.5) < 0.05
    assert job["output"][0]["filename"] == "My Song: ünïcode.wav"


def test_download_headers_ranges_head_and_base64(
        client: Any, config: Any, headers: dict[str, str], wav_file: Path) -> None:
    job = convert(client, config, headers, wav_file, "flac", {"output_filename": "Lied für dich"})
    output = job["output"][0]
    path = output["uri"].replace("http://127.0.0.1:8000", "")
    full = client.get(path)
    assert full.headers["Content-Type"] == "audio/flac"
    assert full.headers["Content-Length"] == str(output["size"])
    assert full.headers["Content-Disposition"] == (
        "attachment; filename=\"Lied f_r dich.flac\"; filename*=UTF-8''Lied%20f%C3%BCr%20dich.flac")
    head = client.head(path)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(output["size"]) and head.data == b""
    part = client.get(path, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.data == full.data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{output['size']}"
    encoded = client.get(path + "?encoding=base64")
    assert base64.b64decode(encoded.data) == full.data
    assert encoded.headers["Content-Length"] == str(len(encoded.data))
    counted = client.get(f"/v2/jobs/{job['id']}/output/{output['id']}", headers=headers).get_json()
    assert counted["downloads_counter"] == 2  # the two full GETs, not HEAD or the range
    assert client.get("/v2/dl/output/00000000-0000-0000-0000-000000000000").status_code == 404


def test_download_works_with_a_relative_storage_dir(
        client: Any, config: Any, headers: dict[str, str], wav_file: Path) -> None:
    job = convert(client, config, headers, wav_file, "mp3")
    relative = Path(os.path.relpath(config.storage_dir))  # the default STORAGE_DIR is relative too
    other = create_app(config.replace(storage_dir=relative)).test_client()
    response = other.get(job["output"][0]["uri"].replace("http://127.0.0.1:8000", ""))
    assert response.status_code == 200 and len(response.data) == job["output"][0]["size"]


def test_remote_input_is_downloaded_through_the_guard(
        client: Any, config: Any, headers: dict[str, str], wav_file: Path, file_server: tuple[str, Path],
        tmp_path: Path) -> None:
    base, folder = file_server
    (folder / "remote.wav").write_bytes(wav_file.read_bytes())
    created = client.post("/v2/jobs", headers=headers, json={
        "input": [{"type": "remote", "source": f"{base}/remote.wav"}], "conversion": [{"target": "mp3"}]}).get_json()
    assert created["status"]["code"] == "queued"
    run_worker(config)
    job = client.get(f"/v2/jobs/{created['id']}", headers=headers).get_json()
    assert job["status"]["code"] == "completed", job
    assert job["input"][0]["filename"] == "remote.wav" and job["input"][0]["size"] == wav_file.stat().st_size
    assert probe(download(client, job, tmp_path))["codec_name"] == "mp3"


def failed_job(client: Any, config: Any, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    created = client.post("/v2/jobs", headers=headers, json={"conversion": [{"target": "mp3"}], **body})
    assert created.status_code == 201, created.get_json()
    run_worker(config)
    job = client.get(f"/v2/jobs/{created.get_json()['id']}", headers=headers).get_json()
    assert job["status"]["code"] == "failed", job
    assert job["output"] == []
    assert len(job["errors"]) == 1
    return job["errors"][0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("url, words", [
    ("http://10.0.0.1/a.mp3", "private"),
    ("http://169.254.169.254/latest/meta-data", "private"),
    ("http://[::ffff:127.0.0.1]:9/a.mp3", "private"),  # IPv4-mapped loopback is not 127.0.0.1
])
def test_private_addresses_are_refused(url: str, words: str, client: Any, config: Any, headers: dict[str, str]) -> None:
    error = failed_job(client, config, headers, input=[{"type": "remote", "source": url}])
    assert error["source"] == "input" and error["code"] == 1002 and words in error["message"]


def test_input_url_answering_404_fails_the_job(
        client: Any, config: Any, headers: dict[str, str], file_server: tuple[str, Path]) -> None:
    error = failed_job(client, config, headers, input=[{"type": "remote", "source": f"{file_server[0]}/missing.mp3"}])
    assert error["code"] == 1001 and "404" in error["message"]


@pytest.mark.parametrize("name, content, words", [
    ("notes.doc", b"hello, this is not audio\n" * 20, "not an audio file"),
    ("playlist.mp3", b"#EXTM3U\n#EXTINF:1,\n/etc/passwd\n", "not an audio file"),
])
def test_non_audio_inputs_fail_with_a_clear_message(
        name: str, content: bytes, words: str, client: Any, config: Any, headers: dict[str, str]) -> None:
    body = {"input": [{"type": "base64", "source": base64.b64encode(content).decode(), "filename": name}]}
    error = failed_job(client, config, headers, **body)
    assert error["code"] == 2001 and words in error["message"]
    assert "ffprobe" not in error["message"] and "/" not in error["message"]


def test_truncated_mp3_fails_as_damaged(client: Any, config: Any, headers: dict[str, str], audio_dir: Path) -> None:
    whole = make_audio(audio_dir / "whole.mp3", seconds=5.0)
    cut = whole.read_bytes()[: whole.stat().st_size // 3]
    body = {"input": [{"type": "base64", "source": base64.b64encode(cut).decode(), "filename": "cut.mp3"}]}
    error = failed_job(client, config, headers, **body)
    assert error["code"] == 2002 and "truncated" in error["message"]


def test_start_after_the_end_of_the_input_fails(
        client: Any, config: Any, headers: dict[str, str], wav_file: Path) -> None:
    body = {"input": [{"type": "base64", "source": base64.b64encode(wav_file.read_bytes()).decode()}],
            "conversion": [{"target": "mp3", "options": {"start": "00:01:00"}}]}
    error = failed_job(client, config, headers, **body)
    assert error["code"] == 2007 and "start" in error["message"]


def test_work_files_are_removed_and_service_keeps_serving(
        client: Any, config: Any, headers: dict[str, str], wav_file: Path) -> None:
    assert convert(client, config, headers, wav_file, "ogg")["status"]["code"] == "completed"
    assert list((config.storage_dir / "work").iterdir()) == []
    assert list((config.storage_dir / "incoming").iterdir()) == []
    assert client.get("/v2/statuses").status_code == 200


def test_upload_larger_than_the_limit_is_413(client: Any, config: Any, headers: dict[str, str]) -> None:
    body = {"process": False, "conversion": [{"target": "mp3"}]}
    job = client.post("/v2/jobs", headers=headers, json=body).get_json()
    big = io.BytesIO(b"\0" * (config.max_input_bytes + 2 * 1024 * 1024))
    response = client.post(f"/v2/dl/upload-file/{job['id']}", data={"file": (big, "big.wav")},
                           headers={"X-Oc-Token": job["token"]})
    assert response.status_code == 413 and response.get_json()["code"] == 413
    assert list((config.storage_dir / "incoming").iterdir()) == []


def test_callback_receives_the_final_job_json(
        client: Any, config: Any, headers: dict[str, str], wav_file: Path) -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict[str, Any]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        body = {"input": [{"type": "base64", "source": base64.b64encode(wav_file.read_bytes()).decode()}],
                "conversion": [{"target": "mp3"}],
                "callback": f"http://127.0.0.1:{server.server_address[1]}/hook"}
        created = client.post("/v2/jobs", headers=headers, json=body).get_json()
        run_worker(config)  # runs the conversion, then the callback task it enqueued
    finally:
        server.shutdown()
    job = client.get(f"/v2/jobs/{created['id']}", headers=headers).get_json()
    assert job["status"]["code"] == "completed"
    assert len(received) == 1
    assert received[0] == job


@pytest.mark.skipif(not os.environ.get("TEST_DATABASE_URL", "").startswith("postgresql"),
                    reason="a PostgreSQL connection's state is what is checked")
@pytest.mark.parametrize("reads", ["conversions", "a preset"])
def test_no_transaction_stays_open_while_ffmpeg_runs(
        reads: str, client: Any, config: Any, headers: dict[str, str], audio_dir: Path) -> None:
    """A read after the worker's last commit before ffmpeg would leave its connection idle in
    transaction for the whole conversion. Watched from another connection: a transaction seen
    idle in every sample over 0.3 s of one ffmpeg run was held across it (the task's own short
    ones, progress and cancel checks, end within a sample)."""
    import threading
    import time

    from sqlalchemy import create_engine, text

    source = audio_dir / "minutes.wav"
    if not source.exists():
        make_audio(source, seconds=150.0)
    held: list[str] = []
    samples: dict[int, int] = {}  # ffmpeg pid: samples that saw it running
    done = threading.Event()

    def watch() -> None:
        seen: dict[tuple[int, str], int] = {}  # (ffmpeg pid, xact_start): samples in a row
        with create_engine(config.database_url).connect() as connection:
            while not done.is_set():
                running = ffmpeg_runs()
                for pid in running:
                    samples[pid] = samples.get(pid, 0) + 1
                idle = {str(start) for start in connection.execute(text(
                    "SELECT xact_start FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state = 'idle in transaction' AND pid <> pg_backend_pid()")).scalars()}
                connection.rollback()
                seen = {(pid, start): seen.get((pid, start), 0) + 1 for pid in running for start in idle}
                held.extend(f"{start} during ffmpeg {pid}" for (pid, start), count in seen.items() if count == 15)
                time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    options = {}
    if reads == "a preset":
        options = {"preset": client.post("/v2/presets", json={"name": "plain", "target": "mp3", "options": {}},
                                         headers=headers).get_json()["id"]}
    try:
        job = convert(client, config, headers, source, "mp3", options)
    finally:
        done.set()
        watcher.join()
    assert job["status"]["code"] == "completed", job
    assert max(samples.values(), default=0) > 15  # ffmpeg ran long enough to tell
    assert held == []
