"""Chunked request bodies (Transfer-Encoding: chunked) against the real service under gunicorn:
whole ones are read like any other, and a body whose chunks are broken is a 400 naming the
body, not a 500. How one that arrives slowly waits is tests/test_slow_clients.py's."""
from __future__ import annotations

import hashlib
import json
import socket
from urllib.parse import urlsplit

import pytest
import requests
from conftest import LiveService, create_key

JOB = json.dumps({"process": False, "conversion": [{"target": "mp3"}]}).encode()


def _post_chunked(live: LiveService, key: str, chunked_body: bytes, shut: bool = False) -> tuple[int, dict]:
    """Status and JSON of a POST /v2/jobs whose body is sent as `chunked_body`, framing and all;
    `shut`: the client then ends its side, as one that went away midway."""
    head = (f"POST /v2/jobs HTTP/1.1\r\nHost: test\r\nX-Oc-Api-Key: {key}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(urlsplit(live.url).netloc.split(":"), timeout=30) as sock:  # type: ignore[arg-type]
        sock.sendall(head + chunked_body)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def test_a_whole_chunked_body_is_read_with_its_extensions_and_trailer(live: LiveService) -> None:
    key = create_key(live.settings, "chunked")
    body = b"%x;note=first\r\n%s\r\n%x\r\n%s\r\n0\r\nX-Trailer: yes\r\n\r\n" % (5, JOB[:5], len(JOB) - 5, JOB[5:])
    status, job = _post_chunked(live, key, body)
    assert status == 201, job
    assert job["conversion"][0]["target"] == "mp3" and job["process"] is False


@pytest.mark.parametrize(("chunked_body", "shut", "problem"), [
    (b"zz\r\n{}\r\n0\r\n\r\n", False, "InvalidChunkSize"),  # a size that is not hex
    (b"2\r\n{}XX0\r\n\r\n", False, "ChunkMissingTerminator"),  # a chunk without its line end
    (b"9\r\n{\"proc", True, "NoMoreData"),  # the client gone before the last chunk
])
def test_a_broken_chunked_body_is_a_400_naming_the_body(live: LiveService, chunked_body: bytes, shut: bool,
                                                        problem: str) -> None:
    key = create_key(live.settings, "broken-chunks")
    status, answer = _post_chunked(live, key, chunked_body, shut)
    assert status == 400, answer
    assert answer["errors"] == {"body": [f"broken chunked encoding ({problem})"]}
    assert requests.get(f"{live.url}/v2/jobs", headers={"X-Oc-Api-Key": key}, timeout=10).json() == []


def test_a_chunked_upload_arrives_whole_with_its_checksum(live: LiveService) -> None:
    key = create_key(live.settings, "chunked-upload")
    job = requests.post(f"{live.url}/v2/jobs", headers={"X-Oc-Api-Key": key}, data=JOB, timeout=10).json()
    content = bytes(range(256)) * 4096  # 1 MiB, sent in pieces of 64 KiB
    pieces = (content[at:at + 65536] for at in range(0, len(content), 65536))
    boundary = "chunked-upload-boundary"
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n\r\n".encode(),
             *pieces, f"\r\n--{boundary}--\r\n".encode()]
    answer = requests.post(f"{job['server']}/upload-file/{job['id']}", data=iter(parts), timeout=30,
                           headers={"X-Oc-Token": job["token"],
                                    "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert answer.status_code == 201, answer.text
    assert (answer.json()["size"], answer.json()["checksum"]) == (len(content), hashlib.sha256(content).hexdigest())
