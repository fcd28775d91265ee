"""Long polling (jobs_api/job_waits.py): a poll of a queued or running job answers when the job
ends, woken by the worker's announcement on Redis or by its own look at the database; within
JOB_WAIT_SECONDS, in a bounded number of threads, and at once when the client asks with
`Prefer: wait=0`; over HTTP, kept alive with spaces so that a client's timeout between reads
does not end it. The jobs here stay queued (no worker runs): the test ends them itself."""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from api2convert import Api2Convert
from conftest import LiveService, create_key, start_api, wait_until
from redis import Redis

from jobs_api.app import create_app
from jobs_api.config import Config
from jobs_api.db import make_engine, make_sessionmaker
from jobs_api.job_waits import KEEP_ALIVE, WAIT_SLOTS, announce_change, channel, held_seconds, requested_seconds
from jobs_api.lifecycle import transition
from jobs_api.models import JobStatus


class Poll(threading.Thread):
    """A GET of the job on a thread of its own, as a client waiting on it."""

    def __init__(self, app: Any, job_id: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.app, self.job_id, self.headers = app, job_id, headers
        self.answer: dict[str, Any] = {}
        self.start()

    def run(self) -> None:
        self.answer = self.app.test_client().get(f"/v2/jobs/{self.job_id}", headers=self.headers).get_json()


QUEUED = {"input": [{"type": "remote", "source": "http://127.0.0.1:9/never.wav"}], "conversion": [{"target": "mp3"}]}


def _queued_job(client: Any, headers: dict[str, str]) -> str:
    created = client.post("/v2/jobs", headers=headers, json=QUEUED)
    assert created.status_code == 201 and created.get_json()["status"]["code"] == "queued"
    return str(created.get_json()["id"])


def _waiting(settings: Config, job_id: str) -> Callable[[], int]:
    """How many polls are subscribed to the job's announcements now."""
    redis = Redis.from_url(settings.redis_url)
    return lambda: int(redis.pubsub_numsub(channel(settings, job_id))[0][1])


def _end(settings: Config, job_id: str, status: JobStatus, announced: bool = True) -> None:
    with make_sessionmaker(make_engine(settings.database_url))() as session:
        assert transition(session, job_id, status, allowed_from=[JobStatus.QUEUED])
        session.commit()
    if announced:
        announce_change(settings, job_id)


@pytest.fixture()
def waiting_app(config: Config) -> Any:
    return create_app(config.replace(job_wait_seconds=120))  # far past any test: only an end answers


def test_a_poll_of_a_queued_job_answers_when_the_worker_announces_its_end(
        waiting_app: Any, config: Config, headers: dict[str, str]) -> None:
    job_id = _queued_job(waiting_app.test_client(), headers)
    poll = Poll(waiting_app, job_id, headers)
    wait_until(lambda: _waiting(config, job_id)() == 1, seconds=30)
    assert poll.is_alive()  # it did not answer "queued"
    _end(config, job_id, JobStatus.COMPLETED)
    poll.join(timeout=30)
    assert poll.answer["status"]["code"] == "completed"


def test_an_end_nobody_announces_is_found_by_the_poll_itself(
        waiting_app: Any, config: Config, headers: dict[str, str]) -> None:
    job_id = _queued_job(waiting_app.test_client(), headers)
    poll = Poll(waiting_app, job_id, headers)
    wait_until(lambda: _waiting(config, job_id)() == 1, seconds=30)
    _end(config, job_id, JobStatus.CANCELED, announced=False)
    poll.join(timeout=30)
    assert poll.answer["status"]["code"] == "canceled"


def test_at_most_wait_slots_polls_wait_and_the_next_answers_at_once(
        waiting_app: Any, config: Config, headers: dict[str, str]) -> None:
    job_id = _queued_job(waiting_app.test_client(), headers)
    polls = [Poll(waiting_app, job_id, headers) for _ in range(WAIT_SLOTS)]
    wait_until(lambda: _waiting(config, job_id)() == WAIT_SLOTS, seconds=30)
    answer = waiting_app.test_client().get(f"/v2/jobs/{job_id}", headers=headers).get_json()
    assert answer["status"]["code"] == "queued"  # no slot left: not held
    assert all(poll.is_alive() for poll in polls)
    _end(config, job_id, JobStatus.COMPLETED)
    for poll in polls:
        poll.join(timeout=30)
        assert poll.answer["status"]["code"] == "completed"


@pytest.mark.parametrize("prefer", ["wait=0", "respond-async, wait=0"])
def test_a_client_that_prefers_no_wait_is_answered_at_once(
        waiting_app: Any, headers: dict[str, str], prefer: str) -> None:
    job_id = _queued_job(waiting_app.test_client(), headers)
    poll = Poll(waiting_app, job_id, {**headers, "Prefer": prefer})
    poll.join(timeout=30)  # held, it would wait the app's 120 s
    assert not poll.is_alive() and poll.answer["status"]["code"] == "queued"


def test_a_poll_answers_the_running_status_once_its_wait_is_over(
        config: Config, headers: dict[str, str]) -> None:
    app = create_app(config.replace(job_wait_seconds=1))
    job_id = _queued_job(app.test_client(), headers)
    assert app.test_client().get(f"/v2/jobs/{job_id}", headers=headers).get_json()["status"]["code"] == "queued"


@pytest.mark.parametrize("prefer, seconds", [
    (None, 5.0), ("wait=2", 2.0), ("wait=60", 5.0), ("respond-async; wait=0", 0.0), ("handling=lenient", 5.0),
    ("await=1", 5.0), ("wait=-1", 5.0),
])
def test_the_prefer_header_only_shortens_the_wait(prefer: str | None, seconds: float) -> None:
    assert requested_seconds(prefer, 5.0) == seconds


SDK_AGENT = "api2convert-python/10.3.1 python/3.11.7"


@pytest.mark.parametrize("prefer, agent, seconds", [
    (None, SDK_AGENT, 25.0), (None, "python-httpx/0.28.1", 4.0), (None, None, 4.0), ("wait=0", SDK_AGENT, 0.0),
    ("wait=10", SDK_AGENT, 10.0), (None, f"my-app {SDK_AGENT}", 4.0),
])
def test_the_official_sdk_is_held_longest(config: Config, prefer: str | None, agent: str | None,
                                          seconds: float) -> None:
    assert held_seconds(config.replace(job_wait_seconds=4, sdk_job_wait_seconds=25), prefer, agent) == seconds


@pytest.fixture(scope="module")
def held_api(config: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """gunicorn, no worker; every poll held until the test ends the job."""
    settings = config.replace(queue_name="test-held-polls")
    api = start_api(settings, tmp_path_factory.mktemp("held-polls"),
                    {"JOB_WAIT_SECONDS": "120", "SDK_JOB_WAIT_SECONDS": "120"})
    yield api
    api.stop()


def _queued_over_http(api: LiveService, key: str) -> str:
    created = httpx.post(f"{api.url}/v2/jobs", headers={"X-Oc-Api-Key": key}, timeout=30, json=QUEUED)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_a_held_answer_sends_spaces_until_its_json(held_api: LiveService) -> None:
    key = create_key(held_api.settings)
    job_id = _queued_over_http(held_api, key)
    timeout = httpx.Timeout(1.0)  # between reads: the spaces come every RECHECK_SECONDS
    with httpx.stream("GET", f"{held_api.url}/v2/jobs/{job_id}", headers={"X-Oc-Api-Key": key},
                      timeout=timeout) as answer:
        assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
        chunks = answer.iter_raw()
        while_queued = b""
        while len(while_queued) < 3:  # 1.5 s or more: past the timeout
            while_queued += next(chunks)
        _end(held_api.settings, job_id, JobStatus.COMPLETED)
        rest = b"".join(chunks)
    assert while_queued == KEEP_ALIVE * len(while_queued)
    assert json.loads(rest)["status"]["code"] == "completed"


def test_the_official_sdk_with_a_one_second_timeout_waits_out_a_held_poll(held_api: LiveService) -> None:
    key = create_key(held_api.settings)
    job_id = _queued_over_http(held_api, key)
    sdk = Api2Convert(key, base_url=f"{held_api.url}/v2", timeout=1, max_retries=0)  # a timeout ends the wait
    done: list[Any] = []
    waiting = threading.Thread(target=lambda: done.append(sdk.jobs.wait(job_id)), daemon=True)
    waiting.start()
    wait_until(lambda: _waiting(held_api.settings, job_id)() == 1, seconds=30)
    waiting.join(timeout=3)  # three of its timeouts, in one held poll
    assert waiting.is_alive()
    _end(held_api.settings, job_id, JobStatus.COMPLETED)
    waiting.join(timeout=30)
    assert done and done[0].is_completed()
