"""Slow clients (issue 26): 50 connections sending their request a byte at a time for 30 s,
and clients that keep their side open after an answer, leave ordinary requests answered within
a second, and requests that have arrived in part cost nothing while they wait
(jobs_api/gunicorn_worker.py), against the real service: gunicorn with two processes of four
threads."""
from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests
from conftest import start_service

from bench.common import process_cpu_ms
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
    slow = [(b"", HEAD + b'{"input": []}')] * 8  # the head, a byte at a time
    slow += [(HEAD, b'{"input": [], "conversion": []}' + b" " * 8)] * 8  # then a small body
    slow += [(large + b"A" * (LARGE // 2), b"A" * LARGE)] * 8  # half a large body, then the rest
    # A chunked body, a chunk at a time: each byte is more of it, and woke its connection.
    slow += [(CHUNKED_HEAD + b"1\r\n{\r\n", b'c\r\n"input": []}\r\n0\r\n\r\n')] * 8
    # Bodies larger than the service waits for, from callers with no key or token: answered 401
    # before the body is read, and not waited for after. Each group alone outnumbers the threads.
    huge = str(4 * LARGE).encode()
    slow += [(HEAD.replace(b"40", huge) + b'{"input": [{"type": "base64", "source": "', b"A" * LARGE)] * 9
    upload = HEAD.replace(b"/v2/jobs", b"/v2/dl/upload-file/nope").replace(b"40", huge)
    slow += [(upload + b"--x\r\n", b"A" * LARGE)] * 9
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


HELD_OPEN = 25  # connections each such client keeps open at once (about 1.3 s of them)


def _hold_open_after_answers(address: tuple[str, int], stop: threading.Event) -> None:
    """Ask with "Connection: close", read the answer, and keep the connection open (the last
    HELD_OPEN of them), until `stop`."""
    held: list[socket.socket] = []
    try:
        while not stop.wait(0.05):
            connection = socket.create_connection(address, timeout=5)
            held.append(connection)
            connection.sendall(b"GET /livez HTTP/1.1\r\nHost: slow\r\nConnection: close\r\n\r\n")
            connection.recv(4096)
            if len(held) > HELD_OPEN:
                held.pop(0).close()
    except OSError:
        pass
    finally:
        for connection in held:
            connection.close()


def test_clients_that_keep_their_side_open_after_the_answer_leave_the_service_answering(
        config: Config, tmp_path: Path) -> None:
    # gthread's close waited on the worker's main thread for the client to close its side, up
    # to 2 s each: four such clients stalled every request for seconds.
    service = start_service(config.replace(queue_name="held-open"), tmp_path)
    address = (urlsplit(service.url).hostname or "", urlsplit(service.url).port or 0)
    stop = threading.Event()
    holders = [threading.Thread(target=_hold_open_after_answers, args=(address, stop), daemon=True)
               for _ in range(4)]
    latencies = []
    try:
        for holder in holders:
            holder.start()
        time.sleep(2)
        for _ in range(10):
            started = time.monotonic()
            assert requests.get(f"{service.url}/livez", timeout=10).status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.3)
    finally:
        stop.set()
        for holder in holders:
            holder.join()
        service.stop()
    assert max(latencies) < 1.0, sorted(latencies)[-5:]


def _cpu_seconds(pids: list[int]) -> float:
    """User and system time the processes (each still running) have used so far."""
    stats = [process_cpu_ms(pid) for pid in pids]
    assert all(parent for parent, _ in stats), "a web worker has gone"
    return sum(ms for _, ms in stats) / 1000


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
