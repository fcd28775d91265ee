"""Throughput: 200 five-second clips submitted at once (URL inputs, to mp3), one worker per
core, jobs per second against `xargs -P <cores> ffmpeg` with the worker's command on the same
files.

    python bench/throughput.py            # 200 clips, 5 rounds
    python bench/throughput.py --tiny     # 8 one-second clips, 1 round
"""
from __future__ import annotations

import http.client
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from functools import partial
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from redis import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402
    Callbacks,
    Service,
    make_audio,
    parser,
    process_cpu_ms,
    report,
    service,
    tree_cpu_ms,
    worker_plan,
)
from bench.small_file import Quiet  # noqa: E402
from jobs_api.config import Config  # noqa: E402
from workers.ffmpeg.commands import convert_args  # noqa: E402


def main() -> None:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--rounds", type=int, default=5,
                           help="service runs, each between two baseline runs (default 5; 1 with --tiny)")
    args = arguments.parse_args()
    count, seconds = (8, 1) if args.tiny else (200, 5)
    rounds = 1 if args.tiny else args.rounds
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        first = make_audio(root / "clip0.wav", seconds)
        clips = [first] + [root / f"clip{n}.wav" for n in range(1, count)]
        for clip in clips[1:]:
            clip.write_bytes(first.read_bytes())

        # Baseline: the worker's ffmpeg command for each clip, `cores` at a time. It runs before
        # and after every service run, so that a VM changing speed meanwhile weighs on both sides.
        plan, limits = worker_plan(first, "mp3", {})
        lines = "\n".join(shlex.join(convert_args(clip, clip.with_suffix(".mp3"), plan, limits))
                          for clip in clips)
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=folder))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base_url = f"http://127.0.0.1:{server.server_address[1]}"
        baselines = [xargs_rate(lines, count, cores)]
        rows: list[tuple[object, ...]] = []
        ratios, failures, spending = [], 0, []
        for number in range(1, rounds + 1):
            ours, failed, spent = through_service(clips, base_url, cores)
            baselines.append(xargs_rate(lines, count, cores))
            baseline = (baselines[-2] + baselines[-1]) / 2
            rows.append((number, count, cores, baseline, ours, ours / baseline, failed))
            ratios.append(ours / baseline)
            failures += failed
            spending.append(f"round {number}: " + ", ".join(f"{kind} {ms:.1f}" for kind, ms in spent.items()))
        server.shutdown()
    rows.append(("median", count, cores, "", "", statistics.median(ratios), failures))
    report("Throughput: many small jobs at once vs xargs -P ffmpeg",
           ("round", "clips", "workers", "xargs jobs/s", "service jobs/s", "ratio", "failed"), rows, args.results,
           notes=[f"input: {count} copies of a {seconds} s 44.1 kHz stereo WAV, to mp3; "
                  "the service gets them as URL inputs from a loopback HTTP server, 32 submitting threads; "
                  "each job's callback says it ended (polling the job list 20 times a second cost the API "
                  "about 15 ms of CPU per job here, on the cores the conversions run on)",
                  "each round starts a new service; its xargs jobs/s is the mean of the baseline runs just "
                  "before and just after it: " + ", ".join(f"{rate:.3f}" for rate in baselines),
                  "CPU per job in ms, from the first POST to the last callback (/proc; Redis's own count; ffmpeg: "
                  "what all cores spent, from /proc/stat, less the rest; idle: of all cores): " + "; ".join(spending)])


def through_service(clips: list[Path], base_url: str, cores: int) -> tuple[float, int, dict[str, float]]:
    """Jobs per second from the first POST to the last job's callback, how many failed, and the
    CPU each kind of process spent per job meanwhile (where the time goes besides ffmpeg)."""
    with service(workers=cores) as running, closing(Callbacks()) as callbacks:
        address = urlsplit(running.url)
        headers = {"X-Oc-Api-Key": running.key, "Content-Type": "application/json"}
        # Each submitting thread keeps one connection, as a client would; plain http.client,
        # because the client runs on the cores the service is measured on (requests cost
        # about 1.5 ms of CPU per POST here).
        clients = threading.local()

        def submit(clip: Path) -> str:
            if not hasattr(clients, "http"):
                clients.http = http.client.HTTPConnection(address.hostname or "", address.port, timeout=60)
            clients.http.request("POST", "/v2/jobs", headers=headers, body=json.dumps({
                "input": [{"type": "remote", "source": f"{base_url}/{clip.name}"}],
                "conversion": [{"target": "mp3"}], "callback": callbacks.url}))
            response = clients.http.getresponse()
            created = json.loads(response.read())
            if response.status != 201:
                raise RuntimeError(f"POST /v2/jobs answered {response.status}: {created}")
            return str(created["id"])

        before = cpu_spent(running)
        start = time.perf_counter()
        with ThreadPoolExecutor(32) as pool:
            ids = list(pool.map(submit, clips))
        ended = [callbacks.ended(job_id) for job_id in ids]
        rate = len(clips) / (time.perf_counter() - start)
        after = cpu_spent(running)
    spent = {kind: (after[kind] - before[kind]) / len(clips) for kind in before}
    busy = spent.pop("busy")
    spent = {"ffmpeg": busy - sum(ms for kind, ms in spent.items() if kind != "idle"), **spent}
    return rate, sum(job["status"]["code"] != "completed" for job in ended), spent


def cpu_spent(running: Service) -> dict[str, float]:
    """CPU milliseconds so far: all cores busy, the workers, the API (gunicorn and its workers),
    this script (client, file server, callbacks), Redis, and all cores idle. What the cores
    spent besides is ffmpeg's: its runs are not the workers' children (workers/ffmpeg/runner.py)."""
    api, *workers = (process.pid for process in running.processes)
    redis = Redis.from_url(Config.from_env().redis_url).info("cpu")
    # user, nice, system, idle, iowait, irq, softirq (steal: another guest's) of the "cpu" line
    ticks = [int(field) for field in Path("/proc/stat").read_text().split()[1:8]]
    own = os.times()
    tick = 1000 / os.sysconf("SC_CLK_TCK")
    return {
        "busy": (sum(ticks) - ticks[3] - ticks[4]) * tick,
        "worker": sum(process_cpu_ms(pid)[1] for pid in workers),
        "API": tree_cpu_ms(api),
        "benchmark client": (own.user + own.system) * 1000,
        "Redis": (redis["used_cpu_user"] + redis["used_cpu_sys"]) * 1000,
        "idle": (ticks[3] + ticks[4]) * tick,
    }


def xargs_rate(lines: str, count: int, cores: int) -> float:
    """Jobs per second of the ffmpeg command lines run `cores` at a time by xargs."""
    start = time.perf_counter()
    subprocess.run(["xargs", "-P", str(cores), "-I", "{}", "sh", "-c", "{} >/dev/null 2>&1"],
                   input=lines, text=True, check=True)
    return count / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
