"""Normalization: EBU R128 to -16 LUFS / -1.5 dBTP on a 10-minute WAV to AAC, by the worker's
own passes (run directly, and through the service) against `ffmpeg-normalize` on the same file
with the same targets; the median time of three rounds (the three in turns), and the integrated
loudness and true peak each output measures.

    python bench/normalization.py            # 10 minutes of audio
    python bench/normalization.py --tiny     # 5 seconds: checks that it runs
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Callbacks, make_audio, median, parser, report, service, worker_plan  # noqa: E402
from bench.large_file import through_service, worker_passes  # noqa: E402
from workers.ffmpeg import runner  # noqa: E402
from workers.ffmpeg.meters import Levels, measure_args, parse_levels  # noqa: E402
from workers.ffmpeg.plan import Limits, Plan  # noqa: E402
from workers.ffmpeg.sandbox import Sees  # noqa: E402

TARGET, TRUE_PEAK, LRA = -16.0, -1.5, 7.0
# The one installed next to this Python (the dev dependency) before any other on PATH.
FFMPEG_NORMALIZE = (shutil.which("ffmpeg-normalize", path=str(Path(sys.executable).parent))
                    or shutil.which("ffmpeg-normalize"))
OPTIONS: dict[str, Any] = {"normalize": True, "normalize_type": "ebu", "normalize_target_level_ebu": TARGET,
                           "normalize_true_peak_ebu": TRUE_PEAK, "normalize_loudness_range_target_ebu": LRA}


def ours(source: Path, out: Path, plan: Plan, limits: Limits) -> tuple[float, str]:
    """The worker's passes, timed: measure, choose the gain, encode while measuring the result
    (as the worker does, to report it and correct a miss)."""
    start = time.perf_counter()
    method = worker_passes(source, out, plan, limits, measured=True)
    return time.perf_counter() - start, method


def ffmpeg_normalize(source: Path, out: Path, bitrate: str) -> float:
    assert FFMPEG_NORMALIZE is not None  # main() stops first without it
    command = [FFMPEG_NORMALIZE, str(source), "-o", str(out), "-f", "-q",
               "-nt", "ebu", "-t", str(TARGET), "-tp", str(TRUE_PEAK), "-lrt", str(LRA),
               "-c:a", "aac", "-b:a", bitrate, "-ar", "44100"]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def loudness(path: Path) -> Levels:
    log = runner.run_for_log(measure_args(path, ("ebu",)), sees=Sees(reads=(path,)), deadline_seconds=3600)
    return parse_levels(log)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    seconds = 5 if args.tiny else 600
    rounds = 1 if args.tiny else 3
    if FFMPEG_NORMALIZE is None:
        raise SystemExit("ffmpeg-normalize is not installed: pip install -e '.[dev]'")
    rows = []
    with tempfile.TemporaryDirectory() as scratch, service() as running, closing(Callbacks()) as callbacks:
        folder = Path(scratch)
        for material, varying in (("steady", False), ("varying", True)):
            source = make_audio(folder / f"{material}.wav", seconds, varying)
            plan, limits = worker_plan(source, "aac", OPTIONS)
            bitrate = f"{plan.bitrate_k}k" if plan.bitrate_k else "128k"
            outputs = {name: folder / f"{material}-{name}.m4a" for name in ("theirs", "ours", "served")}
            # In turns, each normalizer once a round: a single run of each put this VM's swings in
            # speed on one of them (the steady input through the service: 1.94x, then 2.77x).
            times: dict[str, list[float]] = {name: [] for name in outputs}
            for _ in range(rounds):
                times["theirs"].append(ffmpeg_normalize(source, outputs["theirs"], bitrate))
                our_seconds, method = ours(source, outputs["ours"], plan, limits)
                times["ours"].append(our_seconds)
                phases = through_service(running, source, "aac", OPTIONS, outputs["served"], callbacks)
                times["served"].append(sum(phases))
            base_seconds = median(times["theirs"])
            for name, label in (("theirs", "ffmpeg-normalize"), ("ours", f"worker passes ({method})"),
                                ("served", "service: upload to download")):
                levels = loudness(outputs[name])
                took = median(times[name])
                rows.append((material, label, took, base_seconds / took, levels.integrated,
                             abs((levels.integrated or 0) - TARGET), levels.true_peak))
    report("Normalization: EBU R128 vs ffmpeg-normalize",
           ("input", "normalizer", "seconds", "speed-up (ratio)", "integrated LUFS", "off target LU", "true peak dBTP"),
           rows, args.results,
           notes=[f"input: {seconds} s 44.1 kHz stereo 16-bit WAV of pink noise, steady or with its level "
                  f"swinging 19 dB every 7 s (a loudness range over the target), to AAC {bitrate}",
                  f"targets: {TARGET} LUFS, true peak {TRUE_PEAK} dBTP, loudness range {LRA} LU; "
                  "outputs measured with ffmpeg's ebur128 (true peak)",
                  f"seconds: median of {rounds} rounds, the three normalizers in turns in each",
                  "speed-up: ffmpeg-normalize's seconds over the row's (goal >= 2, ambition 3)"])


if __name__ == "__main__":
    main()
