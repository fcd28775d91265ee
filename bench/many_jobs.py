"""A key with many jobs: POST /v2/jobs and the job list when the key has made 100,000 jobs,
against the same requests when it had made 1,000.

Job rows are never deleted, so a busy key's count only grows. The POST runs the key's rate and
concurrency checks (on, with limits too high to refuse), and the list counts the key's jobs for
X-Count and reads its newest 50. The jobs are written into the service's database directly,
spread over the last 30 days; the requests go over HTTP, one at a time.

    python bench/many_jobs.py            # 1,000 then 100,000 jobs
    python bench/many_jobs.py --tiny     # 100 then 1,000
"""
from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path

import requests
from sqlalchemy import insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Service, median, parser, report, service  # noqa: E402
from jobs_api.db import make_engine  # noqa: E402
from jobs_api.models import ApiKey, Job, JobStatus, new_id, utcnow  # noqa: E402
from jobs_api.security import hash_secret  # noqa: E402

NO_LIMIT = str(10**9)  # the checks run, and never refuse
# A job that starts at once (an input and process): the POST runs both checks. No worker runs,
# so it stays queued.
BODY = {"input": [{"type": "remote", "source": "http://127.0.0.1:9/a.wav"}], "conversion": [{"target": "mp3"}]}


def add_jobs(running: Service, count: int) -> None:
    """`count` finished jobs of the service's key, created over the last 30 days."""
    engine = make_engine(running.database_url)
    try:
        with engine.begin() as connection:
            key_id = connection.scalar(select(ApiKey.id).where(ApiKey.key_hash == hash_secret(running.key)))
            now = utcnow()
            # The other columns get the model's defaults, as in any plain insert of it.
            connection.execute(insert(Job), [
                {"api_key_id": key_id, "token": new_id(), "status": JobStatus.COMPLETED.value,
                 "created_at": now - timedelta(days=30 * n / count)} for n in range(count)])
    finally:
        engine.dispose()


def timed_requests(running: Service, runs: int) -> dict[str, float]:
    """Median milliseconds of a POST /v2/jobs and of a GET /v2/jobs, each run `runs` times."""
    headers = {"X-Oc-Api-Key": running.key}
    figures = {}
    with requests.Session() as http:
        for name, send in (("POST /v2/jobs", lambda: http.post(f"{running.url}/v2/jobs", json=BODY, headers=headers)),
                           ("GET /v2/jobs", lambda: http.get(f"{running.url}/v2/jobs", headers=headers))):
            send().raise_for_status()  # warm
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                send().raise_for_status()
                times.append(time.perf_counter() - start)
            figures[name] = 1000 * median(times)
    return figures


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    few, many = (100, 1000) if args.tiny else (1000, 100_000)
    runs = 20 if args.tiny else 200
    with service(workers=0, env={"MAX_JOBS_PER_MINUTE": NO_LIMIT, "MAX_CONCURRENT_JOBS": NO_LIMIT}) as running:
        add_jobs(running, few)
        before = timed_requests(running, runs)
        add_jobs(running, many - few)
        after = timed_requests(running, runs)
    rows = [(name, before[name], after[name], after[name] / before[name]) for name in before]
    report(f"A key with many jobs: {many:,} against {few:,}",
           ("request", f"{few:,} jobs ms", f"{many:,} jobs ms", "ratio"), rows, args.results,
           notes=[f"median of {runs} requests one at a time; the key's rate and concurrency limits on "
                  f"(at {NO_LIMIT}), no worker: each POST's job stays queued; the list is the first page",
                  "the baseline is the same request when the key had made the fewer jobs"])


if __name__ == "__main__":
    main()
