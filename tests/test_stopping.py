"""Stopping is quick: an idle worker on SIGTERM (to it, or to its process group, as systemd and
Docker send it), and the API with a worker on Ctrl-C, as scripts/run.sh runs them."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import NO_WAIT, create_key, free_port, make_audio, service_env, start_worker, wait_for_port, wait_until

from jobs_api.app import create_app
from jobs_api.config import Config


def _gone_within(processes: list[subprocess.Popen[bytes]], seconds: float) -> float:
    start = time.monotonic()
    for process in processes:
        process.wait(timeout=max(0.1, seconds - (time.monotonic() - start)))
    return time.monotonic() - start


@pytest.mark.parametrize("target", ["process", "group"])
def test_an_idle_worker_stops_within_two_seconds(config: Config, tmp_path: Path, target: str) -> None:
    settings = config.replace(queue_name=f"stop-{target}")
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log)
    try:
        wait_until(lambda: "Listening on" in log.read_text())
        time.sleep(0.5)  # idle: waiting for work
        if target == "process":
            worker.send_signal(signal.SIGTERM)
        else:
            os.killpg(worker.pid, signal.SIGTERM)
        assert _gone_within([worker], 2.0) < 2.0 and worker.returncode == 0
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def test_ctrl_c_stops_the_api_and_its_worker_within_five_seconds(config: Config, tmp_path: Path) -> None:
    """scripts/run.sh's last lines: the worker in the background, the API in the foreground, one
    process group, which a terminal's Ctrl-C sends SIGINT to as a whole."""
    port = free_port()
    settings = config.replace(queue_name="stop-run", public_url=f"http://127.0.0.1:{port}")
    script = ('"$PY" -m jobs_api.cli worker & worker=$!\n'
              "trap 'kill $worker 2>/dev/null || true' EXIT INT TERM\n"
              '"$PY" -m jobs_api.cli serve\n')
    log = tmp_path / "run.log"
    env = {**os.environ, **service_env(settings), "PY": sys.executable, "PORT": str(port), "HOST": "127.0.0.1",
           "WEB_CONCURRENCY": "2"}
    shell = subprocess.Popen(["bash", "-c", script], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                             start_new_session=True, env=env)
    try:
        wait_for_port(port)
        wait_until(lambda: "Listening on" in log.read_text())
        os.killpg(shell.pid, signal.SIGINT)
        start = time.monotonic()
        while time.monotonic() - start < 5 and _group_alive(shell.pid):
            time.sleep(0.05)
        assert not _group_alive(shell.pid), _group_state(shell.pid) + log.read_text()[-3000:]
        text = log.read_text()
        assert "out of memory" not in text and "SIGKILL" not in text and "Traceback" not in text
    finally:
        if _group_alive(shell.pid):
            os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()


def _group_state(group: int) -> str:
    return subprocess.run(["ps", "-o", "pid,ppid,stat,args", "-g", str(group)], capture_output=True, text=True).stdout


def _group_alive(group: int) -> bool:
    """Whether any process of the group is left (zombies of the group count as gone)."""
    found = subprocess.run(["pgrep", "-g", str(group)], capture_output=True, text=True).stdout.split()
    return any(_alive(int(pid)) for pid in found)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _long_job(settings: Config, file_server: tuple[str, Path], name: str) -> tuple[Any, dict[str, str], str]:
    """A job converting 600 s of audio with normalization, from the file server: the test
    client, its headers, the job's id."""
    base, folder = file_server
    make_audio(folder / name, seconds=600, rate=22050, channels=1)
    client = create_app(settings).test_client()
    headers = {"X-Oc-Api-Key": create_key(settings)}
    job = client.post("/v2/jobs", headers=headers, json={
        "input": [{"type": "remote", "source": f"{base}/{name}"}],
        "conversion": [{"target": "mp3", "options": {"normalize": True}}]}).get_json()
    return client, headers, job["id"]


def test_a_busy_worker_asked_to_stop_queues_its_job_again_for_the_next(
        config: Config, tmp_path: Path, file_server: tuple[str, Path]) -> None:
    """SIGTERM to the worker's process group while it converts (systemd, docker stop): after the
    grace the job goes back to the queue, not to failed, and the next worker completes it."""
    settings = config.replace(queue_name="stop-busy", stop_grace_seconds=1)
    client, headers, job_id = _long_job(settings, file_server, "long.wav")

    def status() -> str:
        return str(client.get(f"/v2/jobs/{job_id}", headers=NO_WAIT | headers).get_json()["status"]["code"])

    first = start_worker(settings, tmp_path / "first.log")
    try:
        wait_until(lambda: status() == "processing", seconds=60)
        os.killpg(first.pid, signal.SIGTERM)
        assert _gone_within([first], settings.stop_grace_seconds + 5) and first.returncode == 0
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert status() == "queued", (client.get(f"/v2/jobs/{job_id}", headers=headers).get_json(),
                                  (tmp_path / "first.log").read_text()[-4000:])
    history = client.get(f"/v2/jobs/{job_id}/history", headers=headers).get_json()
    assert history[-1]["status"] == "queued" and "queued again" in history[-1]["info"]
    second = start_worker(settings, tmp_path / "second.log")
    try:
        wait_until(lambda: status() in ("completed", "failed"), seconds=180)
        done = client.get(f"/v2/jobs/{job_id}", headers=headers).get_json()
        assert done["status"]["code"] == "completed" and len(done["output"]) == 1
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(timeout=30)


def _processes_naming(text: str) -> list[int]:
    """Live processes whose command line holds `text` (zombies count as gone)."""
    found = subprocess.run(["pgrep", "-f", text], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found if int(pid) != os.getpid() and _alive(int(pid))]


def test_a_killed_workers_job_runs_again_on_another_and_nothing_outlives_it(
        config: Config, tmp_path: Path, file_server: tuple[str, Path]) -> None:
    """kill -9 of a worker mid-ffmpeg, as the OOM killer does: its ffmpeg and its scheduler die
    with it; its job, without a heartbeat, is queued again for its second attempt, and another
    worker completes it."""
    settings = config.replace(queue_name="lost", worker_lost_seconds=3, sweep_interval_seconds=1)
    client, headers, job_id = _long_job(settings, file_server, "long-lost.wav")

    def status() -> str:
        return str(client.get(f"/v2/jobs/{job_id}", headers=NO_WAIT | headers).get_json()["status"]["code"])

    first = start_worker(settings, tmp_path / "first.log")
    try:
        wait_until(lambda: status() == "processing", seconds=60)
        wait_until(lambda: bool(_processes_naming(f"ffmpeg .*{settings.storage_dir}")), seconds=30)
        wait_until(lambda: "Scheduler for lost started" in (tmp_path / "first.log").read_text())
        first.kill()
        first.wait()
        wait_until(lambda: not _group_alive(first.pid) and not _processes_naming(f"ffmpeg .*{settings.storage_dir}"),
                   seconds=2, state=lambda: subprocess.run(["ps", "-eo", "pid,pgid,ppid,stat,args"],
                                                           capture_output=True, text=True).stdout[-3000:])
    finally:
        if first.poll() is None or _group_alive(first.pid):
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    second = start_worker(settings, tmp_path / "second.log")
    try:
        wait_until(lambda: status() in ("completed", "failed"), seconds=180)
        done = client.get(f"/v2/jobs/{job_id}", headers=headers).get_json()
        assert done["status"]["code"] == "completed" and len(done["output"]) == 1, done
        history = [entry["info"] for entry in client.get(f"/v2/jobs/{job_id}/history", headers=headers).get_json()]
        assert "Worker lost; attempt 2 of 3." in history
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(timeout=30)
