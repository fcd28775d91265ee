"""What every benchmark shares: a service started as users start it, generated audio, timing,
and the table each script prints and appends to bench/RESULTS.md.

Every figure is a ratio against a baseline measured in the same run on the same machine
(raw ffmpeg, usually), so results from different machines can be compared.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from jobs_api import catalog
from jobs_api.config import Config
from workers.ffmpeg import runner
from workers.ffmpeg.plan import Limits, Plan, plan_conversion
from workers.ffmpeg.probe import parse_probe, probe_args
from workers.ffmpeg.sandbox import Sees

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
PYTHON = sys.executable


@dataclass
class Service:
    url: str
    key: str
    root: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    database_url: str = ""

    def finished_job(self, http: requests.Session, job_id: str, every: float) -> dict[str, Any]:
        """Poll the job every `every` seconds until it completed; RuntimeError if it failed."""
        while True:
            job: dict[str, Any] = http.get(f"{self.url}/v2/jobs/{job_id}", headers={"X-Oc-Api-Key": self.key},
                                           timeout=30).json()
            if job["status"]["code"] == "completed":
                return job
            if job["status"]["code"] == "failed":
                raise RuntimeError(f"the job failed: {job['errors']}")
            time.sleep(every)


class Callbacks:
    """A loopback HTTP server that takes the service's job callbacks (the job's JSON, POSTed
    when it completes or fails): how a client learns that a long job ended without polling."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.arrived = threading.Condition()
        callbacks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                job = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with callbacks.arrived:
                    callbacks.jobs[job["id"]] = job
                    callbacks.arrived.notify_all()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/done"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def ended(self, job_id: str, seconds: float = 3600) -> dict[str, Any]:
        """The job as its callback told it, completed or failed."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: job_id in self.jobs, timeout=seconds):
                raise RuntimeError(f"no callback for job {job_id} in {seconds} s")
            return self.jobs.pop(job_id)

    def wait(self, job_id: str, seconds: float = 3600) -> dict[str, Any]:
        """The job as its callback told it; RuntimeError if it failed."""
        job = self.ended(job_id, seconds)
        if job["status"]["code"] != "completed":
            raise RuntimeError(f"the job failed: {job['errors']}")
        return job

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def parser(description: str) -> argparse.ArgumentParser:
    args = argparse.ArgumentParser(description=description)
    args.add_argument("--tiny", action="store_true", help="a few seconds of audio: checks that the script runs")
    args.add_argument("--results", type=Path, default=RESULTS, help="the Markdown file the table is appended to")
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def service(workers: int | None = None, env: dict[str, str] | None = None) -> Iterator[Service]:
    """`jobs-api serve` and one `jobs-api worker` per core, on SQLite (or DATABASE_URL) in a
    temporary folder, with their own Redis queue; stopped and removed afterwards."""
    # Gigabytes an earlier script wrote may still be on their way to disk: flushed now, that
    # writeback does not land on this script's measurements.
    os.sync()
    root = Path(tempfile.mkdtemp(prefix="jobs-api-bench-"))
    port = free_port()
    settings = {
        "DATABASE_URL": os.environ.get("BENCH_DATABASE_URL", f"sqlite:///{root}/jobs.db"),
        "STORAGE_DIR": str(root / "storage"),
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "QUEUE_NAME": f"bench-{port}",
        "OUTBOUND_ALLOW": "127.0.0.1",  # the generated inputs are served from loopback
        "MAX_CONCURRENT_JOBS": "0",
        "MAX_JOBS_PER_MINUTE": "0",
        "MAX_INPUT_BYTES": str(4 * 1024**3),
        "MAX_OUTPUT_BYTES": str(4 * 1024**3),
        "PORT": str(port),
        "HOST": "127.0.0.1",
        **(env or {}),
    }
    full_env = {**os.environ, **settings}
    cli = [PYTHON, "-m", "jobs_api.cli"]
    subprocess.run([*cli, "migrate"], env=full_env, check=True, capture_output=True)
    key = subprocess.run([*cli, "keys", "create", "bench"], env=full_env, check=True,
                         capture_output=True, text=True).stdout.strip()
    logs = (root / "service.log").open("wb")
    processes = [subprocess.Popen([*cli, "serve"], env=full_env, stdout=logs, stderr=subprocess.STDOUT,
                                  start_new_session=True)]
    for _ in range((os.cpu_count() or 1) if workers is None else workers):
        processes.append(subprocess.Popen([*cli, "worker"], env=full_env, stdout=logs, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    running = Service(f"http://127.0.0.1:{port}", key, root, processes, settings["DATABASE_URL"])
    try:
        wait_for_port(port)
        wait_for_app(running)
        yield running
    finally:
        for process in processes:
            os.killpg(process.pid, 15)
        for process in processes:
            process.wait(timeout=30)
        subprocess.run(["rm", "-rf", str(root)], check=False)


def wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the service did not start on port {port}")


def wait_for_app(running: Service, seconds: float = 30) -> None:
    """Until the API answers: gunicorn opens the port before its workers have imported the
    app, and the first requests of a run would otherwise time their start-up (about 1 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{running.url}/v2/jobs", headers={"X-Oc-Api-Key": running.key}, timeout=5).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the service at {running.url} did not answer")


def make_audio(path: Path, seconds: float, varying: bool = True) -> Path:
    """Generated 44.1 kHz stereo 16-bit WAV: pink noise (music-like to the encoders), its level
    swinging by about 19 dB every 7 s (a wide loudness range) unless not `varying`."""
    graph = f"anoisesrc=color=pink:duration={seconds}:sample_rate=44100:amplitude=0.3"
    if varying:
        graph += ",volume='0.5+0.4*sin(2*PI*t/7)':eval=frame"
    return generate(path, graph)


def generate(path: Path, graph: str) -> Path:
    """A 16-bit stereo WAV from an ffmpeg source filter graph."""
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", graph,
                    "-ac", "2", "-c:a", "pcm_s16le", str(path)], check=True)
    return path


def timed(command: Sequence[str]) -> float:
    """Seconds one command takes, run to completion."""
    start = time.perf_counter()
    subprocess.run(list(command), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def worker_plan(source: Path, target: str, options: dict[str, Any]) -> tuple[Plan, Limits]:
    """The plan the worker makes for this file, so the baseline runs the worker's own command."""
    limits = Limits.of(Config.from_env())
    info = parse_probe(runner.run(probe_args(source), sees=Sees(reads=(source,)), deadline_seconds=60))
    return plan_conversion(catalog.TARGETS[target], options, info, limits), limits


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = int(Path("/proc/meminfo").read_text().split()[1]) // (1024 * 1024)
    ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split()[2]
    return f"{os.cpu_count()} cores ({cpu}), {memory} GiB, Python {platform.python_version()}, ffmpeg {ffmpeg}"


def process_cpu_ms(pid: int) -> tuple[int, float]:
    """A process's parent and its own CPU (user and system) in ms so far, from /proc/PID/stat
    (zeros once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # gone meanwhile
        return 0, 0.0
    tick = 1000 / os.sysconf("SC_CLK_TCK")
    return int(fields[1]), (int(fields[11]) + int(fields[12])) * tick


def tree_cpu_ms(pid: int) -> float:
    """The CPU in ms so far of a process and its live children: gunicorn's master and its workers."""
    children = [int(name) for name in os.listdir("/proc") if name.isdigit() and process_cpu_ms(int(name))[0] == pid]
    return sum(process_cpu_ms(one)[1] for one in [pid, *children])


# A setting that changes what a run measures, shown before its command when it is set.
SETTINGS_SHOWN = [f"{name}={os.environ[name]}" for name in ("FFMPEG_FORKSERVER",) if name in os.environ]


def report(title: str, header: Sequence[str], rows: Sequence[Sequence[object]], results: Path,
           notes: Sequence[str] = ()) -> str:
    """Print a Markdown table with the machine, date and command, and append it to `results`."""
    lines = [
        f"## {title}",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}",
        f"- command: `{shlex.join([*SETTINGS_SHOWN, 'python', *sys.argv])}`",
        *[f"- {note}" for note in notes],
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a", encoding="utf-8") as handle:
        handle.write(text + "\n")
    return text


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
