"""Throughput: 200 five-second clips submitted at once (URL inputs, to mp3), one worker per
core, jobs per second against `xargs -P <cores> ffmpeg` with the worker's command on the same
files.

    python bench/throughput.py            # 200 clips
    python bench/throughput.py --tiny     # 8 one-second clips
"""
from __future__ import annotations

import os
import shlex
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

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Callbacks, make_audio, parser, report, service, worker_plan  # noqa: E402
from bench.small_file import Quiet  # noqa: E402
from workers import ffmpeg  # noqa: E402


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    count, seconds = (8, 1) if args.tiny else (200, 5)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        first = make_audio(root / "clip0.wav", seconds)
        clips = [first] + [root / f"clip{n}.wav" for n in range(1, count)]
        for clip in clips[1:]:
            clip.write_bytes(first.read_bytes())

        # Baseline: the worker's ffmpeg command for each clip, `cores` at a time; run before and
        # after the service, so that a VM changing speed meanwhile weighs on both sides.
        plan, limits = worker_plan(first, "mp3", {})
        lines = "\n".join(shlex.join(ffmpeg.convert_args(clip, clip.with_suffix(".mp3"), plan, limits))
                          for clip in clips)
        before = xargs_rate(lines, count, cores)

        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=folder))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base_url = f"http://127.0.0.1:{server.server_address[1]}"
        with service(workers=cores) as running, closing(Callbacks()) as callbacks:
            headers = {"X-Oc-Api-Key": running.key}
            clients = threading.local()  # each submitting thread keeps its connection, as a client would

            def submit(clip: Path) -> str:
                if not hasattr(clients, "http"):
                    clients.http = requests.Session()
                created = clients.http.post(f"{running.url}/v2/jobs", headers=headers, timeout=60, json={
                    "input": [{"type": "remote", "source": f"{base_url}/{clip.name}"}],
                    "conversion": [{"target": "mp3"}], "callback": callbacks.url})
                created.raise_for_status()
                return str(created.json()["id"])

            start = time.perf_counter()
            with ThreadPoolExecutor(32) as pool:
                ids = list(pool.map(submit, clips))
            ended = [callbacks.ended(job_id) for job_id in ids]
            ours = count / (time.perf_counter() - start)
            failed = sum(job["status"]["code"] != "completed" for job in ended)
        server.shutdown()
        after = xargs_rate(lines, count, cores)
    baseline = (before + after) / 2
    report("Throughput: many small jobs at once vs xargs -P ffmpeg",
           ("clips", "workers", "xargs jobs/s", "service jobs/s", "ratio", "failed"),
           [(count, cores, baseline, ours, ours / baseline, failed)], args.results,
           notes=[f"input: {count} copies of a {seconds} s 44.1 kHz stereo WAV, to mp3; "
                  "the service gets them as URL inputs from a loopback HTTP server, 32 submitting threads; "
                  "each job's callback says it ended (polling the job list 20 times a second cost the API "
                  "about 15 ms of CPU per job here, on the cores the conversions run on)",
                  f"xargs jobs/s: the mean of {before:.3f} before the service's run and {after:.3f} after it"])


def xargs_rate(lines: str, count: int, cores: int) -> float:
    """Jobs per second of the ffmpeg command lines run `cores` at a time by xargs."""
    start = time.perf_counter()
    subprocess.run(["xargs", "-P", str(cores), "-I", "{}", "sh", "-c", "{} >/dev/null 2>&1"],
                   input=lines, text=True, check=True)
    return count / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
