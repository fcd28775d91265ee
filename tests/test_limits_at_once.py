"""Limits that hold with many requests at once (issue 26): a key's concurrent jobs and the
download-password tries, against the real service (gunicorn, two processes of threads)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import LiveService, create_key, make_audio, start_service
from redis import Redis
from test_delivery import protected_job

from jobs_api.config import Config


@pytest.fixture()
def api(config: Config, tmp_path: Path) -> Any:
    """The API alone: its worker is stopped at once, so every admitted job stays queued."""
    service = start_service(config.replace(max_concurrent_jobs=4, queue_name="at-once"), tmp_path)
    service.processes[1].kill()
    yield service
    service.stop()


def test_sixteen_jobs_at_once_get_four_slots(api: LiveService, config: Config) -> None:
    headers = {"X-Oc-Api-Key": create_key(config, "at-once")}
    body = {"input": [{"type": "remote", "source": "http://127.0.0.1:9/a.wav"}], "conversion": [{"target": "mp3"}]}

    def post(_: int) -> int:
        return requests.post(f"{api.url}/v2/jobs", json=body, headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(post, range(16)))
    assert sorted(statuses) == [201] * 4 + [429] * 12, statuses
    queued = requests.get(f"{api.url}/v2/jobs", params={"status": "queued"}, headers=headers, timeout=30).json()
    assert len(queued) == 4


def test_a_hundred_guesses_at_once_get_the_limits_tries(
        api: LiveService, client: Any, config: Config, headers: dict[str, str], tmp_path: Path) -> None:
    Redis.from_url(config.redis_url).delete("jobs-api:password-failures:127.0.0.1")  # other tests' tries
    tone = make_audio(tmp_path / "tone.wav", seconds=1.0)
    output = protected_job("option", client, config, headers, [tone])["output"][0]
    url = output["uri"].replace(config.public_url, api.url)

    def guess(number: int) -> int:
        return requests.get(url, headers={"X-Oc-Download-Password": f"guess {number}"}, timeout=60).status_code

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(guess, range(100)))
    assert statuses.count(401) == config.max_password_failures, statuses
    assert statuses.count(429) == 100 - config.max_password_failures
