"""Memory: a 2 GB upload and a 2 GB download through the API, and the worker converting that
file, against the same measures on a 5-second clip (and raw ffmpeg for the ffmpeg child).

The API's figure is the growth of a gunicorn worker's peak RSS (VmHWM, reset through
/proc/<pid>/clear_refs before each transfer) while it streams the file; the worker's is the
peak RSS of the `jobs-api worker` process and of the ffmpeg it runs (read every millisecond).

    python bench/memory.py            # a 2 GB WAV (3.4 hours of audio)
    python bench/memory.py --tiny     # a 20 MB WAV: checks that it runs
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Service, generate, parser, report, service, worker_plan  # noqa: E402
from bench.s3_server import S3Server  # noqa: E402
from workers.ffmpeg.commands import convert_args  # noqa: E402

MB = 1024 * 1024
BYTES_PER_SECOND = 44100 * 2 * 2  # 16-bit stereo


def make_wav(path: Path, size: int) -> Path:
    """A WAV of about `size` bytes (a tone: cheap to generate; memory does not depend on it)."""
    return generate(path, f"sine=frequency=440:sample_rate=44100:duration={size // BYTES_PER_SECOND}")


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes (0 if it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return {"VmRSS": 0, "VmHWM": 0}
    values = dict(line.split(":", 1) for line in lines if line.startswith(("VmRSS", "VmHWM")))
    return {name: int(value.split()[0]) * 1024 for name, value in values.items()}


def reset_peak(pid: int) -> int:
    """Set the process's peak RSS to its current RSS, and return that."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return status(pid)["VmRSS"]


def children(pid: int) -> list[int]:
    """The process's children, from each of its threads' /proc children list."""
    found = []
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in listing.read_text().split()]
        except OSError:
            continue
    return found


def ffmpeg_runs(pid: int) -> list[int]:
    """The ffmpeg runs among `pid`'s descendants: forks of the worker's fork server, with their
    command lines (the server and its keepers show a blank one; RQ's scheduler is no ffmpeg)."""
    found = [pid]
    for ancestor in found:
        found += children(ancestor)
    return [child for child in found[1:] if len(command := _command(child)) > 1 and command[0] == "ffmpeg"]


def _command(pid: int) -> list[str]:
    try:
        return [part for part in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
                if part.strip()]
    except OSError:
        return []


def api_pids(running: Service) -> list[int]:
    """The gunicorn workers (children of the arbiter that `jobs-api serve` became)."""
    return children(running.processes[0].pid)


def api_growth(running: Service, transfer: Callable[[], object]) -> int:
    """Largest growth of any gunicorn worker's peak RSS while `transfer()` runs, in bytes."""
    before = {pid: reset_peak(pid) for pid in api_pids(running)}
    transfer()
    return max(status(pid)["VmHWM"] - rss for pid, rss in before.items())


class Sampler:
    """Peak RSS of the worker process and of the ffmpeg runs it starts (VmHWM both). An ffmpeg's
    is read every millisecond while it runs: once it has exited it has none, and converting the
    5 s clip takes a few tens of milliseconds, so its figure is the peak up to the last read (a
    lower bound), or none at all."""

    def __init__(self, worker: int) -> None:
        self.worker, self.child_peak, self.running = worker, 0, True
        reset_peak(worker)
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while self.running:
            for pid in ffmpeg_runs(self.worker):
                self.child_peak = max(self.child_peak, status(pid).get("VmHWM", 0))
            time.sleep(0.001)

    def stop(self) -> tuple[int, int]:
        """The worker's peak and its ffmpeg's (0 if no read caught it running)."""
        self.running = False
        self.thread.join()
        return status(self.worker)["VmHWM"], self.child_peak


def convert(running: Service, source: Path, target: str) -> tuple[dict[str, Any], int, int, int]:
    """Upload and convert; (the job, the API's upload growth, the worker's peak, ffmpeg's peak)."""
    headers = {"X-Oc-Api-Key": running.key}
    job = requests.post(f"{running.url}/v2/jobs", headers=headers, timeout=30,
                        json={"process": False, "conversion": [{"target": target}]}).json()
    upload = ["curl", "-sS", "--fail", "-o", "/dev/null", "-H", f"X-Oc-Token: {job['token']}",
              "-F", f"file=@{source}", f"{job['server']}/upload-file/{job['id']}"]
    growth = api_growth(running, lambda: subprocess.run(upload, check=True))
    sampler = Sampler(running.processes[1].pid)
    requests.patch(f"{running.url}/v2/jobs/{job['id']}", headers=headers, json={"process": True},
                   timeout=30).raise_for_status()
    with requests.Session() as http:
        done = running.finished_job(http, job["id"], every=0.1)
    worker_peak, ffmpeg_peak = sampler.stop()
    return done, growth, worker_peak, ffmpeg_peak


def download(running: Service, job: dict[str, Any]) -> int:
    """The API's peak RSS growth while curl downloads the job's output."""
    command = ["curl", "-sS", "--fail", "-o", "/dev/null", job["output"][0]["uri"]]
    return api_growth(running, lambda: subprocess.run(command, check=True))


def in_bucket(small: Path, big: Path) -> tuple[int, int, int]:
    """With STORAGE_URL (an S3 server started here): the API's RSS growth while the big file is
    uploaded and its output downloaded, and the most its scratch folder held meanwhile."""
    server = S3Server()
    try:
        env = {**server.env, "STORAGE_URL": f"s3://{server.new_bucket('bench')}/files"}
        with service(workers=1, env=env) as running:
            convert(running, small, "wav")  # warm-up
            scratch = DiskWatch(running.root / "storage", skip="work")  # work/: the worker's copy
            job, up, _worker, _ffmpeg = convert(running, big, "wav")
            down = download(running, job)
            return up, down, scratch.stop()
    finally:
        server.stop()


class DiskWatch:
    """The most the files under `folder` (but its folder `skip`) held together, read every 50 ms
    until stopped."""

    def __init__(self, folder: Path, skip: str) -> None:
        self.folder, self.skip, self.peak, self.done = folder, skip, 0, threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.done.wait(0.05):
            sizes = []
            for path in self.folder.rglob("*"):
                if path.relative_to(self.folder).parts[0] == self.skip:
                    continue
                try:
                    sizes.append(path.stat().st_size if path.is_file() else 0)
                except FileNotFoundError:
                    pass  # gone meanwhile
            self.peak = max(self.peak, sum(sizes))

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return self.peak


def raw_ffmpeg_peak(source: Path, out: Path) -> int:
    """Peak RSS of raw ffmpeg running the worker's command, from GNU time's %M (KiB)."""
    plan, limits = worker_plan(source, "wav", {})
    finished = subprocess.run(["/usr/bin/time", "-f", "%M", *convert_args(source, out, plan, limits)],
                              check=True, capture_output=True, text=True)
    return int(finished.stderr.strip().splitlines()[-1]) * 1024


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    size = 20 * MB if args.tiny else 2 * 1024 * MB
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        big = make_wav(folder / "big.wav", size)
        small = make_wav(folder / "small.wav", 5 * BYTES_PER_SECOND)
        with service(workers=1) as running:
            convert(running, small, "wav")  # warm-up: imports and connections in every process
            small_job, small_up, small_worker, small_ffmpeg = convert(running, small, "wav")
            small_down = download(running, small_job)
            big_job, big_up, big_worker, big_ffmpeg = convert(running, big, "wav")
            big_down = download(running, big_job)
        bucket_up, bucket_down, bucket_disk = in_bucket(small, big)
        raw = raw_ffmpeg_peak(big, folder / "raw.wav")
        size_mb = big.stat().st_size / MB
    rows = [
        ("API upload", "peak RSS growth MB", small_up / MB, big_up / MB, f"file {size_mb:.0f} MB",
         big_up / MB / size_mb, "< 100 MB"),
        ("API download", "peak RSS growth MB", small_down / MB, big_down / MB,
         f"file {big_job['output'][0]['size'] / MB:.0f} MB", big_down / big_job["output"][0]["size"], "< 100 MB"),
        ("API upload, files in a bucket", "peak RSS growth MB", "", bucket_up / MB, f"file {size_mb:.0f} MB",
         bucket_up / MB / size_mb, "< 100 MB"),
        ("API download, files in a bucket", "peak RSS growth MB", "", bucket_down / MB,
         f"file {big_job['output'][0]['size'] / MB:.0f} MB", bucket_down / big_job["output"][0]["size"], "< 100 MB"),
        ("API scratch disk, files in a bucket", "peak MB", "", bucket_disk / MB, f"file {size_mb:.0f} MB",
         bucket_disk / MB / size_mb, "none"),
        ("worker process", "peak RSS MB", small_worker / MB, big_worker / MB, "the 5 s clip",
         big_worker / small_worker, "no growth"),
        ("its ffmpeg", "peak RSS MB", f">= {small_ffmpeg / MB:.3f}" if small_ffmpeg else "ended unread",
         big_ffmpeg / MB, f"raw ffmpeg {raw / MB:.1f} MB", big_ffmpeg / raw, "no growth"),
    ]
    report("Memory: 2 GB through the API and the worker",
           ("process", "measure", "5 s clip", f"{size_mb:.0f} MB file", "baseline", "ratio", "goal"), rows,
           args.results,
           notes=["input: a 44.1 kHz stereo 16-bit WAV (a tone), uploaded with curl, converted to WAV "
                  "(an output as large as the input), downloaded with curl",
                  "API: growth of a gunicorn worker's peak RSS during the transfer; worker: peak RSS of "
                  "the `jobs-api worker` process and, read every millisecond while it runs, of its ffmpeg"])


if __name__ == "__main__":
    main()
