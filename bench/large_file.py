"""Large-file overhead: a 10-minute 44.1 kHz stereo WAV uploaded, converted (FLAC, MP3,
EBU-normalized AAC) and downloaded through the service, against raw ffmpeg doing the same
conversion (the same command lines the worker builds) on the same file.

Two clients, in turns with raw ffmpeg: curl on a job created with `process: true` and a
callback (the upload starts the job), and the official SDK's `convert(path, target)` with its
default settings (a job created with `process: false`, the upload, `PATCH {"process": true}`,
polls with its own back-off, the download): what every SDK user gets.

    python bench/large_file.py            # 10 minutes of audio
    python bench/large_file.py --tiny     # 5 seconds: checks that it runs
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import requests
from api2convert import Api2Convert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Callbacks, Service, make_audio, median, parser, report, service, timed, worker_plan  # noqa: E402
from bench.s3_server import S3Server  # noqa: E402
from workers import loudness  # noqa: E402
from workers.ffmpeg import runner  # noqa: E402
from workers.ffmpeg.commands import convert_args  # noqa: E402
from workers.ffmpeg.meters import meter_args  # noqa: E402
from workers.ffmpeg.plan import Limits, Plan  # noqa: E402
from workers.ffmpeg.sandbox import Sees  # noqa: E402
from workers.normalization import Runs, aimed_gain, measure_input  # noqa: E402

CASES = {  # name: (target, options)
    "FLAC": ("flac", {}),
    "MP3": ("mp3", {}),
    "AAC, EBU R128": ("aac", {"normalize": True, "normalize_type": "ebu", "normalize_target_level_ebu": -16,
                              "normalize_true_peak_ebu": -1.5}),
}


def through_service(running: Service, source: Path, target: str, options: dict[str, Any], out: Path,
                    callbacks: Callbacks) -> tuple[float, float, float]:
    """Seconds of the upload (from the job's creation), of the wait for the job's end, and of
    the download. The job's callback says when it is done: polling every 20 ms cost the API
    about 3 s of CPU over a 12 s job here, on the cores the conversion runs on."""
    headers = {"X-Oc-Api-Key": running.key}
    start = time.perf_counter()
    job = requests.post(f"{running.url}/v2/jobs", headers=headers, timeout=30, json={
        "conversion": [{"target": target, "options": options}], "callback": callbacks.url}).json()
    subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null", "-H", f"X-Oc-Token: {job['token']}",
                    "-F", f"file=@{source}", f"{job['server']}/upload-file/{job['id']}"], check=True)
    uploaded = time.perf_counter()
    state = callbacks.wait(job["id"])
    converted = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", "-o", str(out), state["output"][0]["uri"]], check=True)
    return uploaded - start, converted - uploaded, time.perf_counter() - converted


def through_sdk(running: Service, source: Path, target: str, options: dict[str, Any], out: Path,
                waiting: bool = True) -> tuple[float, float]:
    """Seconds of the official SDK's `convert` (create, upload, start, polls) and of its download.
    Not `waiting`: each poll is answered at once (`Prefer: wait=0`), as before jobs_api/job_waits.py."""
    headers = {} if waiting else {"Prefer": "wait=0"}
    with httpx.Client(timeout=httpx.Timeout(30.0), headers=headers) as http:  # the SDK's own timeout
        sdk = Api2Convert(running.key, base_url=f"{running.url}/v2", http_client=http)
        start = time.perf_counter()
        result = sdk.convert(str(source), target, options)
        converted = time.perf_counter()
        result.save(out)
        return converted - start, time.perf_counter() - converted


def raw_ffmpeg(source: Path, target: str, options: dict[str, Any], out: Path) -> float:
    """Seconds the worker's own ffmpeg passes take, run directly (the plan is not timed)."""
    plan, limits = worker_plan(source, target, options)
    start = time.perf_counter()
    worker_passes(source, out, plan, limits)
    return time.perf_counter() - start


def worker_passes(source: Path, out: Path, plan: Plan, limits: Limits, measured: bool = False) -> str:
    """Measure (as the worker measures) and encode for normalization, or just encode; how the
    gain was applied. `measured`: the result is measured while it is encoded, as the worker does."""
    method = "none"
    if plan.normalization is not None:
        runs = Runs(limits, deadline_seconds=3600, sees=Sees(reads=(source,), writes=(out.parent,), job="bench"))
        gain, _correction = aimed_gain(source, out, plan, measure_input(source, plan, ("ebu",), runs), runs)
        envelope = loudness.write_envelope(out.with_name(f"{out.stem}.gain.f32"), gain.curve) if gain.curve else None
        plan, method = replace(plan, filters=gain.filters, envelope=envelope), gain.method
    if measured:
        runner.run_metered(lambda fd: convert_args(source, out, plan, limits, copy_fd=fd),
                           meter_args(("ebu",)), sees=Sees(reads=(source,), writes=(out.parent,), job="bench"),
                           deadline_seconds=3600)
    else:
        timed(convert_args(source, out, plan, limits))
    return method


def storages() -> Iterator[tuple[str, dict[str, str]]]:
    """Where the service keeps its files, in turn: its disk, then a bucket of an S3 server
    started here (STORAGE_URL)."""
    yield "disk", {}
    server = S3Server()
    try:
        yield "bucket", {**server.env, "STORAGE_URL": f"s3://{server.new_bucket('bench')}/files"}
    finally:
        server.stop()


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    seconds = 5 if args.tiny else 600
    runs = 1 if args.tiny else 5
    with tempfile.TemporaryDirectory() as folder:
        source = make_audio(Path(folder) / "long.wav", seconds)
        rows = []
        for where, env in storages():
            with service(env=env) as running, closing(Callbacks()) as callbacks:
                for name, (target, options) in CASES.items():
                    # In turns, so that this VM's drift in speed (10 % within minutes) falls on all three.
                    curl, sdk, sdk_at_once, base = [], [], [], []
                    for _ in range(runs):
                        curl.append(through_service(running, source, target, options,
                                                    Path(folder) / f"ours.{target}", callbacks))
                        sdk.append(through_sdk(running, source, target, options, Path(folder) / f"sdk.{target}"))
                        if where == "disk":
                            sdk_at_once.append(through_sdk(running, source, target, options,
                                                           Path(folder) / f"sdk.{target}", waiting=False))
                        base.append(raw_ffmpeg(source, target, options, Path(folder) / f"raw.{target}"))
                    raw = median(base)
                    total = median([sum(phases) for phases in curl])
                    rows.append((name, where, "curl, callback", *(median([p[i] for p in curl]) for i in range(3)),
                                 raw, total, total / raw))
                    for client, timed_runs in (("SDK convert()", sdk), ("SDK convert(), polls not held", sdk_at_once)):
                        if timed_runs:
                            total = median([sum(phases) for phases in timed_runs])
                            rows.append((name, where, client, "-", median([p[0] for p in timed_runs]),
                                         median([p[1] for p in timed_runs]), raw, total, total / raw))
    report("Large file: upload, convert, download vs raw ffmpeg",
           ("conversion", "files on", "client", "upload s", "then to the end s", "download s", "raw ffmpeg s",
            "service s", "ratio"), rows, args.results,
           notes=[f"input: {seconds} s 44.1 kHz stereo 16-bit WAV ({source.name}), median of {runs} runs, "
                  "each client and raw ffmpeg in turns",
                  "curl, callback: create a job with a callback, curl multipart upload, wait for the callback, "
                  "curl download; SDK convert(): the official `api2convert` client's `convert(path, target)` "
                  "and `save()` with its default settings (job with process false, upload, PATCH process true, "
                  "polls from 1 s backing off to 5 s, each held up to SDK_JOB_WAIT_SECONDS for the job's end), "
                  "its `convert` shown as 'then to the end'; polls not held: the same with `Prefer: wait=0` on "
                  "every request, so no poll waits for the job's end (jobs_api/job_waits.py), as before it existed",
                  "on disk, FLAC and MP3 are converted while the upload arrives (CONVERT_WHILE_UPLOADING); "
                  "in a bucket (SeaweedFS on this machine, STORAGE_URL) the upload goes into the bucket, and a "
                  "worker copies it out, converts, and puts the result back"])


if __name__ == "__main__":
    main()
