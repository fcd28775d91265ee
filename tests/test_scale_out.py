"""Hosts that share no disk (issue 27): the API and two workers as processes of their own, each
with a STORAGE_DIR of its own, on the suite's database and Redis and a real S3 server. Every
file they share goes through the bucket."""
from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
import zipfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from api2convert import Api2Convert
from conftest import OwnS3, create_key, make_audio, probe, start_api, start_worker, wait_for_job, wait_until
from redis import Redis
from test_delivery import age

from jobs_api.config import Config
from jobs_api.models import OutputFile, utcnow
from workers.sweeper import due_key


class Hosts:
    """The API and its workers, each on a disk of its own."""

    def __init__(self, settings: Config, s3: OwnS3, root: Path) -> None:
        self.root, self.env = root, s3.env
        self.api = start_api(settings.replace(storage_dir=root / "api"), root, s3.env)
        self.settings = self.api.settings
        self.workers = {name: self.start_worker(name) for name in ("worker-1", "worker-2")}
        self.key = create_key(self.settings, "scale-out")
        self.headers = {"X-Oc-Api-Key": self.key}

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        return start_worker(self.settings.replace(storage_dir=self.root / name), self.root / f"{name}.log", self.env)

    def stop(self) -> None:
        for worker in self.workers.values():
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(timeout=30)
        self.api.stop()


@pytest.fixture()
def hosts(config: Config, s3: OwnS3, tmp_path: Path) -> Iterator[Hosts]:
    bucket = s3.new_bucket(f"hosts-{uuid.uuid4().hex[:12]}")
    settings = config.replace(storage_url=f"s3://{bucket}/jobs", queue_name="scale-out", worker_lost_seconds=3,
                              sweep_interval_seconds=1)
    running = Hosts(settings, s3, tmp_path)
    yield running
    running.stop()


def _job(hosts: Hosts, body: dict[str, Any]) -> dict[str, Any]:
    created = requests.post(f"{hosts.api.url}/v2/jobs", json=body, headers=hosts.headers, timeout=10)
    assert created.status_code == 201, created.json()
    job = wait_for_job(hosts.api.url, created.json()["id"], hosts.key, seconds=120)
    assert job["status"]["code"] == "completed", job["errors"]
    return job


def test_api_and_two_workers_that_share_no_disk(hosts: Hosts, file_server: tuple[str, Path], audio_dir: Path,
                                                tmp_path: Path) -> None:
    sdk = Api2Convert(hosts.key, base_url=f"{hosts.api.url}/v2", poll_interval=0.5, poll_timeout=120)
    uploaded = make_audio(audio_dir / "scale-upload.wav", seconds=2.0)
    assert probe(sdk.convert(str(uploaded), "flac").save(tmp_path / "uploaded.flac"))["codec_name"] == "flac"

    base, folder = file_server
    for name in ("scale-a.wav", "scale-b.wav"):
        make_audio(folder / name, seconds=1.0)
    assert probe(sdk.convert(f"{base}/scale-a.wav", "mp3").save(tmp_path / "by-url.mp3"))["codec_name"] == "mp3"

    zipped = _job(hosts, {"input": [{"type": "remote", "source": f"{base}/{name}"} for name in ("scale-a.wav",
                                                                                                "scale-b.wav")],
                          "conversion": [{"target": "ogg"}]})
    (tmp_path / "both.zip").write_bytes(requests.get(zipped["output"][0]["uri"], timeout=30).content)
    assert sorted(zipfile.ZipFile(tmp_path / "both.zip").namelist()) == ["scale-a.ogg", "scale-b.ogg"]

    Redis.from_url(hosts.settings.redis_url).delete("jobs-api:password-failures:127.0.0.1")  # other tests' tries
    protected = _job(hosts, {"input": [{"type": "remote", "source": f"{base}/scale-b.wav"}],
                             "conversion": [{"target": "wav"}], "download_passwords": ["letmein"]})
    output = protected["output"][0]
    assert requests.get(output["uri"], timeout=10).status_code == 401
    assert requests.get(output["uri"], headers={"X-Oc-Download-Password": "letmein"}, timeout=10).status_code == 200

    age(hosts.settings, OutputFile, output["id"],
        created_at=utcnow() - timedelta(seconds=hosts.settings.output_ttl_seconds + 5))
    wait_until(lambda: requests.get(output["uri"], headers={"X-Oc-Download-Password": "letmein"},
                                    timeout=10).status_code == 410, seconds=30)  # a worker's sweep

    leftovers = [path for name in ("api", "worker-1", "worker-2") for path in (tmp_path / name).rglob("*")
                 if path.is_file()]
    assert leftovers == []  # every shared file went through the bucket; scratch files went with their jobs


def test_a_worker_killed_mid_job_leaves_the_job_to_the_other(hosts: Hosts, file_server: tuple[str, Path]) -> None:
    base, folder = file_server
    make_audio(folder / "scale-long.wav", seconds=600, rate=22050, channels=1)
    created = requests.post(f"{hosts.api.url}/v2/jobs", headers=hosts.headers, timeout=10, json={
        "input": [{"type": "remote", "source": f"{base}/scale-long.wav"}],
        "conversion": [{"target": "mp3", "options": {"normalize": True}}]}).json()

    def converting() -> list[str]:
        return [name for name in hosts.workers if subprocess.run(
            ["pgrep", "-f", f"ffmpeg .*{hosts.root / name}"], capture_output=True).returncode == 0]

    wait_until(lambda: bool(converting()), seconds=60)
    (busy,) = converting()
    os.killpg(hosts.workers[busy].pid, signal.SIGKILL)
    hosts.workers[busy].wait()
    started = time.monotonic()
    job = wait_for_job(hosts.api.url, created["id"], hosts.key, seconds=240)
    assert job["status"]["code"] == "completed", (job["errors"], time.monotonic() - started)
    history = requests.get(f"{hosts.api.url}/v2/jobs/{created['id']}/history", headers=hosts.headers,
                           timeout=10).json()
    assert "Worker lost; attempt 2 of 3." in [entry["info"] for entry in history]

    # Its scratch is on its own disk: the worker started in its place removes it, even while
    # another host does every sweep of the shared state (here: none at all, the sweep is held).
    left = list((hosts.root / busy / "work").iterdir())
    assert left  # the killed run's work folder, with its copy of the input
    long_ago = time.time() - 3600
    for path in left:
        os.utime(path, (long_ago, long_ago))
    redis = Redis.from_url(hosts.settings.redis_url)
    redis.set(due_key(hosts.settings), "held", ex=300)
    try:
        hosts.workers[busy] = hosts.start_worker(busy)
        wait_until(lambda: not any(path.exists() for path in left), seconds=60)
        assert redis.get(due_key(hosts.settings)) == b"held"  # no worker swept the shared state
    finally:
        redis.delete(due_key(hosts.settings))
