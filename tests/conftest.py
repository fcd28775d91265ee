"""Real services for the tests: Redis (a dedicated index, flushed), PostgreSQL when
TEST_DATABASE_URL points at it (CI) or SQLite, ffmpeg, and real HTTP servers."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from redis import Redis
from rq.serializers import JSONSerializer
from sqlalchemy import text

from jobs_api.app import create_app
from jobs_api.cli import migrate
from jobs_api.config import Config
from jobs_api.db import make_engine, make_sessionmaker
from jobs_api.models import FINISHED, ApiKey, Base
from jobs_api.queue import queue_for
from jobs_api.security import hash_secret, new_secret
from jobs_api.storage import storage_for
from workers.ffmpeg.forkserver import Forkserver
from workers.ffmpeg.sandbox import Sees
from workers.services import worker_services
from workers.worker import worker_class

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/: the S3 server the benchmarks start too
from bench.s3_server import S3Server as OwnS3  # noqa: E402

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_BUCKET = os.environ.get("TEST_STORAGE") == "s3"  # STORAGE_URL=s3://... for the whole suite


@pytest.fixture(scope="session")
def config(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Config:
    root = tmp_path_factory.mktemp("service")
    database_url = os.environ.get("TEST_DATABASE_URL") or f"sqlite:///{root}/jobs.db"
    settings = Config(
        database_url=database_url,
        redis_url=REDIS_URL,
        storage_dir=root / "storage",
        public_url="http://127.0.0.1:8000",
        # The suite's own HTTP servers run on loopback; nothing else is let through.
        outbound_allow=("127.0.0.1",),
        queue_name="test-conversions",
        webhook_secret="test-webhook-secret",
        callback_retry_delays=(1,) * 10,
        max_input_bytes=64 * 1024 * 1024,
        max_output_bytes=256 * 1024 * 1024,
        max_duration_seconds=3 * 3600,
        ffmpeg_timeout_seconds=120,
        download_timeout_seconds=30,
    )
    if not database_url.startswith("sqlite"):
        engine = make_engine(database_url)
        Base.metadata.drop_all(engine)
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
        engine.dispose()
    if IN_BUCKET:  # files in a bucket of the suite's own S3 server (CI runs the end-to-end tests so once)
        s3: OwnS3 = request.getfixturevalue("s3")
        settings = settings.replace(storage_url=f"s3://{s3.new_bucket('suite')}/files")
        os.environ.update(s3.env)
    migrate(settings)
    Redis.from_url(REDIS_URL).flushdb()
    # The in-process worker reads its settings from the environment, as in production.
    os.environ.update(service_env(settings))
    worker_services.cache_clear()
    return settings


def stored(settings: Config, kind: str) -> dict[str, int]:
    """The sizes of the service's stored inputs or outputs by key, in its folder or its bucket."""
    storage = storage_for(settings.storage_dir, settings.storage_url)
    if storage.shared_disk:
        folder = settings.storage_dir / kind
        return {path.name: path.stat().st_size for path in folder.iterdir()} if folder.exists() else {}
    bucket = storage.shelf
    prefix = f"{bucket.prefix}/{kind}/"
    pages = bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name, Prefix=prefix)
    return {item["Key"].rsplit("/", 1)[1]: item["Size"] for page in pages for item in page.get("Contents", [])}


def stored_input(settings: Config, key: str, folder: Path) -> bytes:
    return storage_for(settings.storage_dir, settings.storage_url).readable_input(key, folder).read_bytes()


def service_env(settings: Config) -> dict[str, str]:
    return {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "STORAGE_DIR": str(settings.storage_dir),
        "STORAGE_URL": settings.storage_url,
        "PUBLIC_URL": settings.public_url,
        "OUTBOUND_ALLOW": ",".join(settings.outbound_allow),
        "QUEUE_NAME": settings.queue_name,
        "WEBHOOK_SECRET": settings.webhook_secret,
        "CALLBACK_RETRY_DELAYS": ",".join(str(delay) for delay in settings.callback_retry_delays),
        "MAX_INPUT_BYTES": str(settings.max_input_bytes),
        "MAX_OUTPUT_BYTES": str(settings.max_output_bytes),
        "MAX_DURATION_SECONDS": str(settings.max_duration_seconds),
        "FFMPEG_TIMEOUT_SECONDS": str(settings.ffmpeg_timeout_seconds),
        "DOWNLOAD_TIMEOUT_SECONDS": str(settings.download_timeout_seconds),
        "OUTPUT_TTL": str(settings.output_ttl_seconds),
        "SWEEP_INTERVAL_SECONDS": str(settings.sweep_interval_seconds),
        "MAX_CONCURRENT_JOBS": str(settings.max_concurrent_jobs),
        "MAX_JOBS_PER_MINUTE": str(settings.max_jobs_per_minute),
        "MAX_PASSWORD_FAILURES": str(settings.max_password_failures),
        "CONVERT_WHILE_UPLOADING": str(int(settings.convert_while_uploading)),
        "STOP_GRACE_SECONDS": str(settings.stop_grace_seconds),
        "WORKER_LOST_SECONDS": str(settings.worker_lost_seconds),
        "MAX_ATTEMPTS": str(settings.max_attempts),
    }


class Receiver:
    """A real local HTTP server that records every POST it gets: (headers, raw body).

    It answers with `statuses` in turn (then 200)."""

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        received, answers = self.received, list(statuses)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                received.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(answers.pop(0) if answers else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int = 1, seconds: float = 60) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + seconds
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.received


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.server.shutdown()


@pytest.fixture(scope="session")
def app(config: Config) -> Any:
    return create_app(config)


@pytest.fixture()
def client(app: Any) -> Any:
    return app.test_client()


def create_key(settings: Config, name: str = "test") -> str:
    secret = new_secret()
    with make_sessionmaker(make_engine(settings.database_url))() as session:
        session.add(ApiKey(name=name, key_hash=hash_secret(secret)))
        session.commit()
    return secret


@pytest.fixture()
def api_key(config: Config) -> str:
    return create_key(config)


@pytest.fixture()
def headers(api_key: str) -> dict[str, str]:
    return {"X-Oc-Api-Key": api_key}


def run_worker(settings: Config) -> None:
    """Run every queued task in this process, then return (RQ's burst mode)."""
    queue = queue_for(settings)
    worker_class()([queue], connection=queue.connection, serializer=JSONSerializer).work(burst=True)


# Audio ---------------------------------------------------------------------------

# What a test's own runs of ffmpeg may see: every test's files are under the temporary folder.
# The sandbox itself is tested in test_sandbox.py.
TEST_RUNS = Sees(writes=(Path(tempfile.gettempdir()).resolve(),), job="tests")


@pytest.fixture()
def unsandboxed(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests of the runner that run a shell script, which execs other programs: a sandboxed
    run may execute nothing."""
    monkeypatch.setenv("FFMPEG_SANDBOX", "0")


def ffmpeg_runs() -> set[int]:
    """The ffmpeg runs this process has going: its descendants named ffmpeg, each in a process
    group of its own, less the fork servers they are forked from (workers/ffmpeg/forkserver.py)."""
    parents, groups = {}, {}
    for entry in Path("/proc").iterdir():
        try:
            name, fields = (entry / "stat").read_text().rsplit(")", 1)
        except OSError:
            continue
        if name.endswith("(ffmpeg"):
            parents[int(entry.name)], groups[int(entry.name)] = int(fields.split()[1]), int(fields.split()[2])
    servers = {server.process.pid for server in (*Forkserver.servers.values(), *Forkserver.spares.values())}

    def mine(pid: int) -> bool:
        while pid in parents:
            pid = parents[pid]
        return pid == os.getpid()

    return {pid for pid in parents if groups[pid] == pid and pid not in servers and mine(pid)}


def make_audio(path: Path, seconds: float = 3.0, rate: int = 44100, channels: int = 2,
               extra: list[str] | None = None, source: str | None = None) -> Path:
    """A generated fixture: a tone whose pitch rises over time (so trims are checkable)."""
    lavfi = source or f"sine=frequency=220:beep_factor=2:sample_rate={rate}:duration={seconds}"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", lavfi,
         "-ac", str(channels), "-ar", str(rate), *(extra or []), str(path)],
        check=True,
    )
    return path


def probe(path: Path) -> dict[str, Any]:
    """What ffprobe says of a produced file: the first audio stream plus the container."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries",
         "format=format_name,duration:stream=codec_name,codec_type,sample_rate,channels,"
         "bits_per_raw_sample,bits_per_sample,sample_fmt", "-of", "json", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout
    data = json.loads(out)
    stream = next(s for s in data["streams"] if s["codec_type"] == "audio")
    return {**stream, "format_name": data["format"]["format_name"],
            "duration": float(data["format"]["duration"])}


def loudness(path: Path) -> dict[str, float]:
    """ffmpeg's own meters on a produced file: EBU R128 (ebur128) and RMS / sample peak (astats)."""
    log = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-map", "0:a:0",
         "-af", "ebur128=peak=true:framelog=verbose,astats=measure_perchannel=none", "-f", "null", "-"],
        check=True, capture_output=True, text=True,
    ).stderr
    summary = log[log.rindex("Summary:"):]

    def last(pattern: str, text: str) -> float:
        return float(re.findall(pattern, text)[-1])

    return {
        "integrated": last(r"I:\s+(-?[\d.]+) LUFS", summary),
        "lra": last(r"LRA:\s+(-?[\d.]+) LU", summary),
        "true_peak": last(r"Peak:\s+(-?[\d.]+) dBFS", summary),
        "rms": last(r"RMS level dB:\s+(-?[\d.]+)", log),
        "peak": last(r"Peak level dB:\s+(-?[\d.]+)", log),
    }


def format_tags(path: Path) -> dict[str, str]:
    """Tags as ffprobe reads them, container and stream merged, names lower-cased."""
    data = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format_tags:stream_tags", "-of", "json", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout)
    tags = dict(data.get("format", {}).get("tags", {}))
    for stream in data.get("streams", []):
        tags.update(stream.get("tags", {}))
    return {name.lower(): value for name, value in tags.items()}


def packet_sizes(path: Path) -> list[int]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "packet=size", "-of", "csv=p=0",
         str(path)], check=True, capture_output=True, text=True,
    ).stdout
    return [int(line.split(",")[0]) for line in out.split() if line.strip()]


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audio")


@pytest.fixture(scope="session")
def wav_file(audio_dir: Path) -> Path:
    return make_audio(audio_dir / "tone.wav", seconds=3.0)


# Local HTTP servers --------------------------------------------------------------

class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def file_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on loopback serving a folder: (base URL, folder)."""
    folder = tmp_path_factory.mktemp("served")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


class LiveService:
    def __init__(self, url: str, settings: Config, processes: list[subprocess.Popen[bytes]], logs: Path) -> None:
        self.url, self.settings, self.processes, self.logs = url, settings, processes, logs

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, 15)
        for process in self.processes:
            process.wait(timeout=20)


def start_service(settings: Config, logs: Path, extra_env: dict[str, str] | None = None) -> LiveService:
    """`jobs-api serve` (gunicorn) and `jobs-api worker` as processes, on a free port."""
    service = start_api(settings, logs, extra_env)
    service.processes.append(start_worker(service.settings, logs / "worker.log", extra_env))
    return service


def start_api(settings: Config, logs: Path, extra_env: dict[str, str] | None = None) -> LiveService:
    """`jobs-api serve` (gunicorn) as a process, on a free port; no worker."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = settings.replace(public_url=url)
    env = {**os.environ, **service_env(settings), "PORT": str(port), "HOST": "127.0.0.1",
           "WEB_CONCURRENCY": "2", **(extra_env or {})}
    service = LiveService(url, settings, [_command("serve", env, logs / "api.log")], logs)
    try:
        wait_for_port(port)
    except RuntimeError:
        service.stop()
        raise
    return service


def start_worker(settings: Config, log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`jobs-api worker` as a process of its own, in a process group of its own."""
    return _command("worker", {**os.environ, **service_env(settings), **(extra_env or {})}, log)


def _command(name: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "jobs_api.cli", name], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_until(condition: Callable[[], bool], seconds: float = 30, state: Callable[[], str] = lambda: "") -> None:
    """Until `condition()` holds (an exception counts as not yet: a service may be starting);
    `state()` says what was seen instead, if it never does."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds} s: {state()}")


class OwnRedis:
    """A redis-server of the test's own on a spare port, to shut down and start again empty."""

    def __init__(self, folder: Path) -> None:
        self.port, self.folder = free_port(), folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.server = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        server = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(self.folder)], stdout=subprocess.DEVNULL)
        wait_for_port(self.port)
        return server

    def shut_down(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True, check=False)
        self.server.wait(timeout=10)

    def start_empty(self) -> None:
        self.server = self._start()

    def stop(self) -> None:
        if self.server.poll() is None:
            self.server.terminate()
            self.server.wait(timeout=10)


class OwnPostgres:
    """A PostgreSQL cluster of the test's own on a spare port, to stop and start again. Its
    programs run as the postgres user when the suite runs as root (initdb refuses root)."""

    def __init__(self) -> None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not found:
            pytest.skip("no PostgreSQL server programs (apt-get install postgresql)")
        self.bin, self.port = found[-1].parent, free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="own-postgres-"))
        self.folder.chmod(0o755)
        self.data = self.folder / "data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def _run(self, program: str, *args: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_postgres, str(self.bin / program), *args], check=True, capture_output=True)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def s3() -> Iterator[OwnS3]:
    server = OwnS3()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def live(config: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """The service as users run it: `jobs-api serve` (gunicorn) and `jobs-api worker`."""
    service = start_service(config.replace(queue_name="test-live"), tmp_path_factory.mktemp("live-logs"))
    yield service
    service.stop()


# Polls that look for a status on the way (processing, say) are answered at once; a poll of a
# running job otherwise waits for its end (jobs_api/job_waits.py).
NO_WAIT = {"Prefer": "wait=0"}


ENDED = tuple(sorted(status.value for status in FINISHED))


def wait_for_job(url: str, job_id: str, key: str, seconds: float = 60,
                 until: tuple[str, ...] = ENDED) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    headers = {"X-Oc-Api-Key": key}
    if set(until) - set(ENDED):
        headers |= NO_WAIT
    while True:
        job = requests.get(f"{url}/v2/jobs/{job_id}", headers=headers, timeout=10).json()
        if job["status"]["code"] in until or time.monotonic() > deadline:
            return job  # type: ignore[no-any-return]
        time.sleep(0.1)
