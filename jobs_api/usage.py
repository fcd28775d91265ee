"""Usage figures and contracts, read from the job tables. No Flask here.

A key's "account" is every key with the same name (`jobs-api keys create NAME`): `all`
reports each of them, `single` only the calling key.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jobs_api.config import Config
from jobs_api.errors import RequestInvalid
from jobs_api.limits import RUNNING
from jobs_api.models import ApiKey, InputFile, Job, JobStatus, OutputFile, utcnow
from jobs_api.representation import iso

PERIODS = {"day": ("%Y-%m-%d", "yyyy-mm-dd"), "month": ("%Y-%m", "yyyy-mm"), "year": ("%Y", "yyyy")}
FILTERS = ("single", "all")


def period_bounds(unit: str, value: str) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the day, month or year written as `value`; 400 naming `unit` otherwise."""
    pattern, shown = PERIODS[unit]
    try:
        start = datetime.strptime(value, pattern).replace(tzinfo=UTC)
    except ValueError:
        raise RequestInvalid(f"Invalid {unit}.", {unit: [f"must be a date written {shown}"]}) from None
    try:
        if unit == "day":
            end = start + timedelta(days=1)
        elif unit == "month":
            end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
        else:
            end = start.replace(year=start.year + 1)
    except (ValueError, OverflowError):  # the period ends past the year 9999
        raise RequestInvalid(f"Invalid {unit}.", {unit: ["must end before the year 10000"]}) from None
    return start, end


def stats(session: Session, key_id: str, unit: str, value: str, scope: str) -> list[dict[str, Any]]:
    if scope not in FILTERS:
        raise RequestInvalid("Invalid filter.", {"filter": [f"allowed values: {', '.join(FILTERS)}"]})
    start, end = period_bounds(unit, value)
    keys = _account(session, key_id) if scope == "all" else [session.get(ApiKey, key_id)]
    in_period = (Job.created_at >= start) & (Job.created_at < end)
    return [_key_stats(session, key, in_period, value) for key in keys if key is not None]


def _key_stats(session: Session, key: ApiKey, in_period: Any, period: str) -> dict[str, Any]:
    mine = (Job.api_key_id == key.id) & in_period
    by_status: dict[str, int] = {row[0]: row[1] for row in session.execute(
        select(Job.status, func.count()).where(mine).group_by(Job.status))}
    inputs, input_bytes = session.execute(
        select(func.count(InputFile.id), func.coalesce(func.sum(InputFile.size), 0)).join(Job).where(mine)).one()
    outputs, output_bytes, downloads = session.execute(
        select(func.count(OutputFile.id), func.coalesce(func.sum(OutputFile.size), 0),
               func.coalesce(func.sum(OutputFile.downloads_counter), 0)).join(Job).where(mine)).one()
    return {
        "period": period,
        "api_key": {"id": key.id, "name": key.name},
        "jobs": sum(by_status.values()),
        "jobs_by_status": {status.value: by_status.get(status.value, 0) for status in JobStatus},
        "inputs": inputs,
        "input_bytes": int(input_bytes or 0),
        "outputs": outputs,
        "output_bytes": int(output_bytes or 0),
        "downloads": int(downloads or 0),
    }


def contracts(session: Session, config: Config, key_id: str) -> list[dict[str, Any]]:
    """The calling key's terms on this server: its limits, and how much of them it uses now."""
    key = session.get(ApiKey, key_id)
    assert key is not None
    now = utcnow()
    mine = Job.api_key_id == key_id
    running = session.scalar(select(func.count()).select_from(Job).where(mine, Job.status.in_(RUNNING)))
    last_minute = session.scalar(
        select(func.count()).select_from(Job).where(mine, Job.created_at > now - timedelta(minutes=1)))
    today = session.scalar(select(func.count()).select_from(Job).where(
        mine, Job.created_at >= now.replace(hour=0, minute=0, second=0, microsecond=0)))
    return [{
        "id": key.id,
        "name": key.name,
        "type": "self-hosted",
        "status": "active",
        "created_at": iso(key.created_at),
        "limits": {
            "concurrent_jobs": config.max_concurrent_jobs or None,
            "jobs_per_minute": config.max_jobs_per_minute or None,
            "max_input_bytes": config.max_input_bytes,
            "max_output_bytes": config.max_output_bytes,
            "max_duration_seconds": config.max_duration_seconds,
            "output_ttl_seconds": config.output_ttl_seconds,
        },
        "usage": {"running_jobs": running, "jobs_last_minute": last_minute, "jobs_today": today},
    }]


def _account(session: Session, key_id: str) -> list[ApiKey]:
    key = session.get(ApiKey, key_id)
    assert key is not None
    return list(session.scalars(
        select(ApiKey).where(ApiKey.name == key.name, ApiKey.revoked_at.is_(None)).order_by(ApiKey.created_at)))
