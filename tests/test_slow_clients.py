"""Slow clients (issue 26): 50 connections sending their request a byte at a time for 30 s
leave ordinary requests answered within a second, and requests that have arrived in part cost
nothing while they wait (jobs_api/gunicorn_worker.py), against the real service: gunicorn with
two processes of four threads."""
from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests
from conftest import start_service

from jobs_api.config import Config

SLOW_SECONDS = 30
HEAD = b"POST /v2/jobs HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n"
CHUNKED_HEAD = HEAD.replace(b"Content-Length: 40", b"Transfer-Encoding: chunked")
LARGE = 512 * 1024  # a job with an inline base64 input


def _drip(address: tuple[str, int], at_once: bytes, slowly: bytes, stop: threading.Event) -> None:
    """Send `at_once`, then `slowly` a byte every 2 s, on a new connection whenever the service
    closes one, until `stop`."""
    while not stop.is_set():
        try:
            with socket.create_connection(address, timeout=5) as connection:
                connection.sendall(at_once)
                for byte in slowly:
                    if stop.wait(2.0):
                        return
                    connection.sendall(bytes([byte]))
        except OSError:
            stop.wait(0.2)


def test_fifty_slow_clients_leave_the_service_answering(config: Config, tmp_path: Path) -> None:
    service = start_service(config.replace(queue_name="slow"), tmp_path)
    address = (urlsplit(service.url).hostname or "", urlsplit(service.url).port or 0)
    stop = threading.Event()
    large = HEAD.replace(b"40", str(LARGE).encode()) + b'{"input": [{"type": "base64", "source": "'
    slow = [(b"", HEAD + b'{"input": []}')] * 13  # the head, a byte at a time
    slow += [(HEAD, b'{"input": [], "conversion": []}' + b" " * 8)] * 13  # then a small body
    slow += [(large + b"A" * (LARGE // 2), b"A" * LARGE)] * 12  # half a large body, then the rest
    # A chunked body, a chunk at a time: each byte is more of it, and woke its connection.
    slow += [(CHUNKED_HEAD + b"1\r\n{\r\n", b'c\r\n"input": []}\r\n0\r\n\r\n')] * 12
    drips = [threading.Thread(target=_drip, args=(address, *drip, stop), daemon=True) for drip in slow]
    latencies = []
    try:
        for drip in drips:
            drip.start()
        time.sleep(2)  # every slow connection has begun
        until = time.monotonic() + SLOW_SECONDS
        while time.monotonic() < until:
            started = time.monotonic()
            answer = requests.get(f"{service.url}/livez", timeout=10)
            latencies.append(time.monotonic() - started)
            assert answer.status_code == 200
            time.sleep(0.5)
    finally:
        stop.set()
        service.stop()
    assert max(latencies) < 1.0, sorted(latencies)[-5:]


def _cpu_seconds(pids: list[int]) -> float:
    """User and system time the processes have used so far."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime and stime, fields 14 and 15 of proc(5)
    return ticks / os.sysconf("SC_CLK_TCK")


def test_requests_that_arrived_in_part_cost_no_cpu_while_they_wait(config: Config, tmp_path: Path) -> None:
    # Their sockets stay readable: looked at each time the poller says so, three of them kept
    # both cores busy (about 6 s of CPU in 3 s) until their 10 s were up.
    service = start_service(config.replace(queue_name="partial"), tmp_path)
    address = (urlsplit(service.url).hostname or "", urlsplit(service.url).port or 0)
    try:
        requests.get(f"{service.url}/livez", timeout=10)
        web = [int(pid) for pid in subprocess.run(["pgrep", "-P", str(service.processes[0].pid)],
                                                  capture_output=True, text=True).stdout.split()]
        partial = [socket.create_connection(address, timeout=5) for _ in range(6)]
        for number, connection in enumerate(partial):
            connection.sendall((HEAD[:40], HEAD + b'{"input"', CHUNKED_HEAD + b"1\r\n{\r\n")[number % 3])
        before = _cpu_seconds(web)
        time.sleep(3)
        used = _cpu_seconds(web) - before
        assert requests.get(f"{service.url}/livez", timeout=10).status_code == 200
    finally:
        service.stop()
    assert used < 0.5, f"{used:.2f} s of CPU in 3 s"
