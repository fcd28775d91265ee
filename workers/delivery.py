"""Delivering callbacks: the job as it was when its status changed, POSTed (signed when a
secret is set) through the outbound guard, retried from the queue after a time-out or a 5xx,
each attempt written to the job's history."""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from functools import partial

from sqlalchemy.orm import Session

from jobs_api import callbacks, outbound
from jobs_api.job_waits import announce_change
from jobs_api.lifecycle import record_note
from jobs_api.models import Job
from jobs_api.queue import DELIVER_CALLBACK, enqueue, enqueue_in
from workers.services import Services

FIRST_CALLBACK_TIMEOUT = 3.0
CALLBACK_TIMEOUT = 10.0


@dataclass(frozen=True)
class Attempt:
    job_id: str
    url: str
    body: str
    number: int


def announce(services: Services, session: Session, job_id: str, *, last: bool = False) -> None:
    """Announce the job's new status (committed already) to the polls waiting on it, and to its
    callback if it wants to hear of it.

    The `last` status of a task is delivered by the task at once, unless earlier changes were
    announced too and may still wait in the queue: a callback would otherwise overtake them.
    That spares a queue job of its own, whose bookkeeping costs RQ more CPU than a short
    clip's delivery. A retry is queued."""
    announce_change(services.config, job_id)  # to the polls waiting on it (jobs_api/job_waits.py)
    # The job is in the session as the task (or the sweeper) has just stored it: its status set
    # by the transition, its lists as the task wrote them. What the body shows of a started job
    # changes only by this task (a cancel is a transition that the task's own would have lost),
    # so the body is built from it without reloading the job and its three lists.
    job = session.get(Job, job_id)
    if job is None or not job.callback:
        return
    if last and callbacks.wanted(job) and not callbacks.hears_every_change(job):
        deliver(services, session, Attempt(job_id, job.callback, callbacks.body(job, services.config), 1),
                job.status)
    else:
        callbacks.announce(job, services.config, partial(enqueue, services.config))


def deliver(services: Services, session: Session, attempt: Attempt, status: str | None = None) -> int | None:
    """One attempt, noted in the job's history through `session`; the answer's status code.
    `status`: the job's, if the caller knows it."""
    session.commit()  # no transaction (nor a PostgreSQL connection) held during the request
    config = services.config
    raw = attempt.body.encode("utf-8")
    headers = {"Content-Type": "application/json"}
    if config.webhook_secret:
        headers["X-Oc-Signature"] = hmac.new(config.webhook_secret.encode(), raw, hashlib.sha256).hexdigest()
    code: int | None = None
    retry = False
    try:
        code = outbound.post(
            attempt.url, raw, headers, allow=outbound.Allowance.parse(config.outbound_allow),
            timeout=FIRST_CALLBACK_TIMEOUT if attempt.number == 1 else CALLBACK_TIMEOUT,
        )
        outcome, retry = f"answered {code}", code >= 500
    except outbound.OutboundRefused as exc:
        outcome = f"not sent: {exc}"
    except outbound.OutboundFailed as exc:
        outcome, retry = f"failed: {exc}", True
    delays = config.callback_retry_delays
    if retry and attempt.number <= len(delays):
        delay = delays[attempt.number - 1]
        outcome += f"; retry in {delay} s"
        enqueue_in(config, delay, DELIVER_CALLBACK, attempt.job_id, attempt.body, attempt.number + 1)
    record_note(session, attempt.job_id,
                f"callback attempt {attempt.number} ({_status_of(attempt.body)}): {outcome}", status)
    session.commit()
    return code


def _status_of(body: str) -> str:
    """The status a callback body reports, for the history line."""
    data = json.loads(body)
    status = data.get("status")
    return str(status.get("code") if isinstance(status, dict) else status)
