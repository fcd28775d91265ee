"""Long polling (jobs_api/job_waits.py): a poll of a queued or running job answers when the job
ends, woken by the worker's announcement on Redis or by its own look at the database; within
JOB_WAIT_SECONDS, in a bounded number of threads, and at once when the client asks with
`Prefer: wait=0`. The jobs here stay queued (no worker runs): the test ends them itself."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from conftest import wait_until
from redis import Redis

from jobs_api.app import create_app
from jobs_api.config import Config
from jobs_api.db import make_engine, make_sessionmaker
from jobs_api.job_waits import WAIT_SLOTS, announce_change, channel, requested_seconds
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


def _queued_job(client: Any, headers: dict[str, str]) -> str:
    created = client.post("/v2/jobs", headers=headers, json={
        "input": [{"type": "remote", "source": "http://127.0.0.1:9/never.wav"}], "conversion": [{"target": "mp3"}]})
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
