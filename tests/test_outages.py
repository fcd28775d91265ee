"""Redis and the database going away, with real processes: the test's own redis-server on a
spare port, shut down and started again empty; a database address nothing answers on."""
from __future__ import annotations

import base64
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import (
    NO_WAIT,
    OwnPostgres,
    OwnRedis,
    create_key,
    free_port,
    make_audio,
    run_worker,
    start_service,
    start_worker,
    wait_until,
)
from redis import Redis
from rq import Worker
from sqlalchemy import update

from jobs_api.app import create_app
from jobs_api.cli import migrate
from jobs_api.config import Config
from jobs_api.db import make_engine, make_sessionmaker
from jobs_api.models import Job, utcnow
from jobs_api.queue import SWEEP, queue_for
from workers import sweeper
from workers.services import worker_services


@pytest.fixture()
def own_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OwnRedis]:
    """The in-process worker reads its settings from the environment, as in production."""
    redis = OwnRedis(tmp_path)
    monkeypatch.setenv("REDIS_URL", redis.url)
    worker_services.cache_clear()
    yield redis
    redis.stop()
    monkeypatch.undo()
    worker_services.cache_clear()


def _wav_job(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    wav = make_audio(tmp_path / "a.wav", seconds=1.0)
    return {"input": [{"type": "base64", "source": base64.b64encode(wav.read_bytes()).decode()}],
            "conversion": [{"target": "mp3"}], **extra}


def test_a_job_posted_while_redis_is_down_runs_once_it_is_back(
        config: Config, own_redis: OwnRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = config.replace(redis_url=own_redis.url)
    client = create_app(settings).test_client()
    headers = {"X-Oc-Api-Key": create_key(settings)}
    own_redis.shut_down()
    made = client.post("/v2/jobs", json=_wav_job(tmp_path), headers=headers)
    assert made.status_code == 201 and made.get_json()["status"]["code"] == "queued"  # accepted: the row is the truth
    assert "waits for the sweeper" in caplog.text
    job_id = made.get_json()["id"]
    assert client.get(f"/v2/jobs/{job_id}", headers=headers).status_code == 200  # reads need only the database

    own_redis.start_empty()
    with make_sessionmaker(make_engine(settings.database_url))() as session:  # as if 30 s had passed
        session.execute(update(Job).where(Job.id == job_id).values(modified_at=utcnow() - timedelta(seconds=60)))
        session.commit()
    queue_for(settings).enqueue(SWEEP)
    run_worker(settings)  # the sweep queues the job again; the same burst runs it
    job = client.get(f"/v2/jobs/{job_id}", headers=headers).get_json()
    history = client.get(f"/v2/jobs/{job_id}/history", headers=headers).get_json()
    assert job["status"]["code"] == "completed"
    assert any(event["info"] == "Queued again: the queue had lost the job." for event in history)


def test_a_protected_download_answers_503_while_redis_is_down(
        config: Config, own_redis: OwnRedis, tmp_path: Path) -> None:
    settings = config.replace(redis_url=own_redis.url)
    client = create_app(settings).test_client()
    headers = {"X-Oc-Api-Key": create_key(settings)}
    job = client.post("/v2/jobs", json=_wav_job(tmp_path, download_passwords=["secret"]), headers=headers).get_json()
    run_worker(settings)
    output = client.get(f"/v2/jobs/{job['id']}", headers=headers).get_json()["output"][0]
    path = output["uri"].removeprefix(settings.public_url)
    own_redis.shut_down()
    refused = client.get(path, headers={"X-Oc-Download-Password": "secret"})
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    assert "Redis" in refused.get_json()["message"]
    own_redis.start_empty()
    assert client.get(path, headers={"X-Oc-Download-Password": "secret"}).status_code == 200


def test_requests_answer_503_with_one_log_line_while_the_database_is_down(
        config: Config, caplog: pytest.LogCaptureFixture) -> None:
    nowhere = config.replace(database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test")
    client = create_app(nowhere).test_client()
    caplog.set_level(logging.ERROR)
    for path, dialect_headers in (("/v2/jobs", {"X-Oc-Api-Key": "any"}),
                                  ("/api/public/v1/byId?conversionType=FILE_CONVERT&task_id=x",
                                   {"Authorization": "any"})):
        caplog.clear()
        answer = client.get(path, headers=dialect_headers)
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
        body = answer.get_json()
        assert "database" in (body.get("message") or body.get("error"))
        assert len(caplog.records) == 1 and caplog.records[0].exc_info is None
    assert client.get("/livez").status_code == 200


def test_a_worker_outlives_a_redis_restart_and_schedules_its_sweeper_again(
        config: Config, own_redis: OwnRedis, tmp_path: Path, file_server: tuple[str, Path]) -> None:
    """Redis shut down under a worker converting a job, and started again empty: the job
    completes, the worker stays up, registers again, sweeps again, and runs the next job."""
    base, folder = file_server
    make_audio(folder / "redis-outage.wav", seconds=600, rate=22050, channels=1)
    settings = config.replace(redis_url=own_redis.url, queue_name="outage", stop_grace_seconds=1)
    client = create_app(settings).test_client()
    headers = {"X-Oc-Api-Key": create_key(settings)}
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log)
    redis = Redis.from_url(own_redis.url)
    sweep_key = sweeper.due_key(settings)
    started = f"Scheduler for {settings.queue_name} started"

    def workers() -> int:
        return int(Worker.count(connection=redis, queue=queue_for(settings)))

    def status(job_id: str) -> str:
        return str(client.get(f"/v2/jobs/{job_id}", headers=NO_WAIT | headers).get_json()["status"]["code"])

    try:
        wait_until(lambda: started in log.read_text())
        running = client.post("/v2/jobs", headers=headers, json={
            "input": [{"type": "remote", "source": f"{base}/redis-outage.wav"}],
            "conversion": [{"target": "mp3", "options": {"normalize": True}}]}).get_json()
        wait_until(lambda: status(running["id"]) == "processing", seconds=60)
        own_redis.shut_down()
        time.sleep(3)
        assert worker.poll() is None, log.read_text()[-2000:]
        own_redis.start_empty()
        # The worker finishes its job (Redis is not needed for that), then registers again.
        wait_until(lambda: status(running["id"]) == "completed", seconds=settings.ffmpeg_timeout_seconds,
                   state=lambda: log.read_text()[-3000:])
        wait_until(lambda: workers() == 1 and bool(redis.exists(sweep_key)),
                   state=lambda: f"workers {workers()}, keys {sorted(redis.keys('*'))[:20]}\n{_stacks(worker, log)}")
        assert "the worker starts anew" in log.read_text() or "the worker connects again" in log.read_text()
        # Stopped once the new worker has started its scheduler: RQ itself does not survive a
        # SIGTERM in the milliseconds between installing its handlers and forking its scheduler.
        wait_until(lambda: log.read_text().count(started) >= 2)
        if "the worker starts anew" in log.read_text():  # its own stop: no grace runs out for the new one
            time.sleep(settings.stop_grace_seconds + 0.5)
        job = client.post("/v2/jobs", json=_wav_job(tmp_path), headers=headers).get_json()
        wait_until(lambda: status(job["id"]) == "completed", state=lambda: log.read_text()[-3000:])
    finally:
        os.killpg(worker.pid, 15)
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"the worker did not stop; its log ends:\n{log.read_text()[-4000:]}") from exc
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, 9)
                worker.wait()


def _stacks(worker: subprocess.Popen[bytes], log: Path) -> str:
    """The worker's log, ending with where each of its threads is (its SIGUSR1)."""
    worker.send_signal(signal.SIGUSR1)
    time.sleep(1)
    return log.read_text()[-6000:]


def test_a_worker_asked_to_stop_while_redis_is_down_stops(config: Config, own_redis: OwnRedis,
                                                          tmp_path: Path) -> None:
    settings = config.replace(redis_url=own_redis.url, queue_name="outage-stop")
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        redis = Redis.from_url(own_redis.url)
        wait_until(lambda: Worker.count(connection=redis, queue=queue_for(settings)) == 1)
        own_redis.shut_down()
        time.sleep(2)  # the worker is waiting for Redis now
        os.killpg(worker.pid, 15)
        assert worker.wait(timeout=10) == 0, (tmp_path / "worker.log").read_text()[-2000:]
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, 9)
            worker.wait()


@pytest.fixture()
def own_postgres() -> Iterator[OwnPostgres]:
    cluster = OwnPostgres()
    yield cluster
    cluster.remove()


def test_jobs_survive_a_postgresql_restart_while_they_run_and_clients_poll(
        config: Config, own_postgres: OwnPostgres, tmp_path: Path, file_server: tuple[str, Path]) -> None:
    """PostgreSQL down for 12 s under a running service: requests answer 503 with Retry-After,
    the worker waits (running encodes go on, their final writes and the jobs it takes wait for
    the database), and every job completes once it is back, with its output downloadable."""
    base, folder = file_server
    make_audio(folder / "pg-outage.wav", seconds=240, rate=22050, channels=1)
    settings = config.replace(database_url=own_postgres.url, queue_name="pg-outage")
    migrate(settings)
    key = create_key(settings)
    service = start_service(settings, tmp_path)
    headers = {"X-Oc-Api-Key": key}
    try:
        jobs = [requests.post(f"{service.url}/v2/jobs", headers=headers, timeout=10, json={
            "input": [{"type": "remote", "source": f"{base}/pg-outage.wav"}],
            "conversion": [{"target": "mp3", "options": {"normalize": True}}]}).json()["id"] for _ in range(5)]

        def status(job_id: str) -> str:
            return str(requests.get(f"{service.url}/v2/jobs/{job_id}", headers=NO_WAIT | headers, timeout=10)
                       .json()["status"]["code"])

        wait_until(lambda: status(jobs[0]) == "processing", seconds=60)
        own_postgres.stop()
        down = time.monotonic()
        answers = []
        while time.monotonic() - down < 12:
            answers.append(requests.get(f"{service.url}/v2/jobs/{jobs[-1]}", headers=headers, timeout=10))
            time.sleep(0.5)
        refused = requests.post(f"{service.url}/v2/jobs", headers=headers, timeout=10, json={
            "input": [{"type": "remote", "source": f"{base}/pg-outage.wav"}], "conversion": [{"target": "mp3"}]})
        own_postgres.start()
        assert {answer.status_code for answer in answers} == {503}
        assert all(answer.headers["Retry-After"] == "5" for answer in answers)
        assert refused.status_code == 503 and "database" in refused.json()["message"]
        wait_until(lambda: all(status(job_id) in ("completed", "failed") for job_id in jobs), seconds=240,
                   state=lambda: str([status(job_id) for job_id in jobs]))
        for job_id in jobs:
            done = requests.get(f"{service.url}/v2/jobs/{job_id}", headers=headers, timeout=10).json()
            assert done["status"]["code"] == "completed", done
            assert requests.get(done["output"][0]["uri"], timeout=30).status_code == 200
        api_log = (tmp_path / "api.log").read_text()
        assert "Traceback" not in api_log, api_log[-3000:]
    finally:
        service.stop()


def test_a_job_taken_off_the_queue_while_postgresql_is_down_runs_once_it_is_back(
        config: Config, own_postgres: OwnPostgres, tmp_path: Path) -> None:
    settings = config.replace(database_url=own_postgres.url, queue_name="pg-take")
    migrate(settings)
    client = create_app(settings).test_client()
    headers = {"X-Oc-Api-Key": create_key(settings)}
    job = client.post("/v2/jobs", json=_wav_job(tmp_path), headers=headers).get_json()
    own_postgres.stop()
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log)
    try:
        wait_until(lambda: "the database is unreachable" in log.read_text())
        own_postgres.start()
        wait_until(lambda: client.get(f"/v2/jobs/{job['id']}", headers=headers).get_json()["status"]["code"]
                   == "completed", state=lambda: log.read_text()[-3000:])
        assert "Traceback" not in log.read_text()
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(timeout=10)
