"""Callback delivery against the running service: retries from the queue, final 4xx, history."""
from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import requests
from conftest import LiveService, Receiver, create_key, wait_for_job
from rq.job import Job as RqJob

from jobs_api.queue import queue_for, redis_for


def start_job(live: LiveService, key: str, wav_file: Path, callback: str) -> str:
    body = {"input": [{"type": "base64", "source": base64.b64encode(wav_file.read_bytes()).decode()}],
            "conversion": [{"target": "mp3"}], "callback": callback}
    created = requests.post(f"{live.url}/v2/jobs", json=body, headers={"X-Oc-Api-Key": key}, timeout=30).json()
    wait_for_job(live.url, created["id"], key)
    return str(created["id"])


def attempts(live: LiveService, key: str, job_id: str) -> list[str]:
    history = requests.get(f"{live.url}/v2/jobs/{job_id}/history", headers={"X-Oc-Api-Key": key}, timeout=10).json()
    return [event["info"] for event in history if event["info"].startswith("callback attempt")]


def test_5xx_is_retried_until_it_is_accepted(live: LiveService, wav_file: Path) -> None:
    receiver = Receiver(statuses=(500, 502, 503))
    try:
        key = create_key(live.settings, "retry")
        job_id = start_job(live, key, wav_file, receiver.url)
        receiver.wait(4, seconds=30)
        time.sleep(2.5)  # long enough for a fifth attempt, were one (wrongly) scheduled
        assert len(receiver.received) == 4
        bodies = {raw for _headers, raw in receiver.received}
        assert len(bodies) == 1  # the same Job JSON each time, equal to what GET answers
        job = requests.get(f"{live.url}/v2/jobs/{job_id}", headers={"X-Oc-Api-Key": key}, timeout=10).json()
        assert json.loads(bodies.pop()) == job
        notes = attempts(live, key, job_id)
        assert [note.split(":")[0] for note in notes] == [f"callback attempt {n} (completed)" for n in (1, 2, 3, 4)]
        assert "answered 500; retry in 1 s" in notes[0] and notes[3].endswith("answered 200")
    finally:
        receiver.server.shutdown()


def test_4xx_is_final(live: LiveService, wav_file: Path) -> None:
    receiver = Receiver(statuses=(400,))
    try:
        key = create_key(live.settings, "final")
        job_id = start_job(live, key, wav_file, receiver.url)
        receiver.wait(1, seconds=30)
        time.sleep(2.5)
        assert len(receiver.received) == 1
        assert attempts(live, key, job_id) == ["callback attempt 1 (completed): answered 400"]
    finally:
        receiver.server.shutdown()


def test_the_final_callback_is_sent_by_the_conversion_itself(live: LiveService, wav_file: Path) -> None:
    """No queue job of its own when nothing else was announced before it (a retry still is one)."""
    receiver = Receiver()
    try:
        key = create_key(live.settings, "inline")
        job_id = start_job(live, key, wav_file, receiver.url)
        assert len(receiver.wait(1, seconds=30)) == 1
        assert json.loads(receiver.received[0][1])["id"] == job_id
        queue = queue_for(live.settings)
        deadline = time.monotonic() + 10  # the task notes the attempt and finishes after the POST
        while True:
            finished = RqJob.fetch_many(queue.finished_job_registry.get_job_ids(), connection=redis_for(
                live.settings.redis_url), serializer=queue.serializer)
            tasks = [job.func_name for job in finished if job is not None and job_id in job.args]
            if tasks or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert tasks == ["workers.tasks.process_job"]
        assert attempts(live, key, job_id) == ["callback attempt 1 (completed): answered 200"]
    finally:
        receiver.server.shutdown()
