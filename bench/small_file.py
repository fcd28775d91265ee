"""Small-file latency: a 5-second clip given by URL, from POST to `completed` (polling every
10 ms) plus the download, against raw ffmpeg converting the same file (the worker's command);
and beside it the same service with its runs' sandbox turned off (FFMPEG_SANDBOX=0), for
what the sandbox costs.

    python bench/small_file.py            # 20 runs
    python bench/small_file.py --tiny     # 3 runs
"""
from __future__ import annotations

import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Service, make_audio, median, parser, report, service, timed, worker_plan  # noqa: E402
from workers.ffmpeg.commands import convert_args  # noqa: E402

TARGET = "mp3"


class Quiet(SimpleHTTPRequestHandler):
    """Serves the generated inputs without log lines, by sendfile(2) as a web server would:
    the benchmark's own file server shares the cores with the conversions it measures."""

    def copyfile(self, source: Any, outputfile: Any) -> None:
        self.connection.sendfile(source)

    def log_message(self, *_args: Any) -> None:
        pass


def through_service(running: Service, url: str) -> float:
    headers = {"X-Oc-Api-Key": running.key}
    with requests.Session() as http:
        start = time.perf_counter()
        job = http.post(f"{running.url}/v2/jobs", headers=headers, timeout=30, json={
            "input": [{"type": "remote", "source": url}], "conversion": [{"target": TARGET}]}).json()
        state = running.finished_job(http, job["id"], every=0.01)
        http.get(state["output"][0]["uri"], timeout=30).raise_for_status()
        return time.perf_counter() - start


def raw_ffmpeg(source: Path, out: Path) -> float:
    plan, limits = worker_plan(source, TARGET, {})
    return timed(convert_args(source, out, plan, limits))


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    runs = 3 if args.tiny else 20
    with tempfile.TemporaryDirectory() as folder:
        source = make_audio(Path(folder) / "clip.wav", 5)
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=folder))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/clip.wav"
        ours, open_, base = [], [], []
        with service() as running, service(env={"FFMPEG_SANDBOX": "0"}) as unsandboxed:
            through_service(running, url)  # warm-up: imports, connections
            through_service(unsandboxed, url)
            # Alternating, so that a VM slowing down or speeding up meanwhile weighs on each.
            for _ in range(runs):
                ours.append(through_service(running, url))
                open_.append(through_service(unsandboxed, url))
                base.append(raw_ffmpeg(source, Path(folder) / "raw.mp3"))
        server.shutdown()
    overhead_ms = (median(ours) - median(base)) * 1000
    sandbox_ms = (median(ours) - median(open_)) * 1000
    report("Small file: URL input to downloaded result vs raw ffmpeg",
           ("runs", "raw ffmpeg median s", "service median s", "overhead ms", "goal ms",
            "no sandbox median s", "sandbox ms", "goal ms"),
           [(runs, median(base), median(ours), overhead_ms, 100, median(open_), sandbox_ms, 10)], args.results,
           notes=["input: 5 s 44.1 kHz stereo WAV served over HTTP on loopback, to mp3",
                  "service: POST with a remote input, poll GET every 10 ms, GET the output",
                  "no sandbox: a second service beside it with FFMPEG_SANDBOX=0",
                  "runs alternate: the service, the service without sandbox, raw ffmpeg"])


if __name__ == "__main__":
    main()
