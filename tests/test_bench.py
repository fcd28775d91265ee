"""The benchmarks still start and finish: each script on a tiny input, against its own
service, writing its table to a scratch file (bench/RESULTS.md is left alone)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("script", ["large_file", "small_file", "throughput", "api_load", "memory", "normalization",
                                    "many_jobs"])
def test_benchmark_runs_on_a_tiny_input(script: str, tmp_path: Path) -> None:
    results = tmp_path / "results.md"
    finished = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "--tiny", "--results", str(results)],
                              capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    table = results.read_text()
    header = next(line for line in table.splitlines() if line.startswith("| "))
    assert "ratio" in header or "overhead ms" in header  # our figure against the baseline
    assert len(table.splitlines()) > table.splitlines().index(header) + 2  # and at least one row
    assert "machine:" in table and "command:" in table
