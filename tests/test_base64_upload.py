"""upload-base64's body read as it arrives (jobs_api/base64_upload.py): every way a JSON encoder
may write the same files gives the same bytes, however the body is cut into reads, and every
malformed body is a 400 naming the field, with nothing left on disk."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from jobs_api.base64_upload import Base64Upload
from jobs_api.errors import RequestInvalid
from jobs_api.storage import IncomingFile


class Trickle(io.RawIOBase):
    """A body that arrives a few bytes at a time, so every token is cut somewhere."""

    def __init__(self, data: bytes, seed: int) -> None:
        self.data, self.at, self.random = data, 0, random.Random(seed)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        piece = self.data[self.at:self.at + self.random.randint(1, 7)]
        self.at += len(piece)
        return piece


def _read(body: bytes, tmp_path: Path, seed: int = 0) -> list[tuple[bytes, str, str]]:
    made: list[IncomingFile] = []

    def new_file() -> IncomingFile:
        made.append(IncomingFile(tmp_path))
        return made[-1]

    files = Base64Upload(Trickle(body, seed), new_file).files()
    return [(item.incoming.path.read_bytes(), item.filename, item.incoming.sha256) for item in files]


def _php(text: str) -> str:
    """How PHP's json_encode writes a string: every slash escaped."""
    return text.replace("/", "\\/")


@pytest.mark.parametrize("seed", range(4))
def test_every_encoding_of_the_same_files_gives_the_same_bytes(tmp_path: Path, seed: int) -> None:
    first, second = os.urandom(3000 + seed), os.urandom(1 + seed)
    one, two = base64.b64encode(first).decode(), base64.b64encode(second).decode()
    bodies = [
        json.dumps([{"content": one, "filename": "a.wav"}, {"filename": "b/é.mp3", "content": two}]),
        _php(json.dumps([{"content": one, "filename": "a.wav"}, {"filename": "b/é.mp3", "content": two}])),
        f' [ {{ "content" : "data:audio/wav;base64,{one}" ,\n"filename":"a.wav"}},'
        f'{{"filename":"b\\/\\u00e9.mp3","content":"{two[:1]}\\u{ord(two[1]):04x}{two[2:]}"}} ] ',
    ]
    for body in bodies:
        read = _read(body.encode(), tmp_path, seed)
        assert [(content, name) for content, name, _ in read] == [(first, "a.wav"), (second, "b/é.mp3")], body[:80]
        assert [digest for _, _, digest in read] == [hashlib.sha256(data).hexdigest() for data in (first, second)]


def test_one_object_is_one_file_and_an_empty_array_none(tmp_path: Path) -> None:
    assert _read(b'{"content": "QUJD"}', tmp_path) == [(b"ABC", "file", hashlib.sha256(b"ABC").hexdigest())]
    assert _read(b"[]", tmp_path) == []


@pytest.mark.parametrize(("body", "field"), [
    (b"", "body"),
    (b'{"content": "QUJD"', "body"),
    (b'{"content": "QUJD"} x', "body"),
    (b'[{"content": "QUJD"} {"content": "QUJD"}]', "body"),
    (b'"QUJD"', "0"),
    (b"[1]", "0"),
    (b"{}", "0.content"),
    (b'{"filename": "a"}', "0.content"),
    (b'{"content": 12}', "0.content"),
    (b'{"content": ""}', "0.content"),
    (b'{"content": "QUJ"}', "0.content"),
    (b'{"content": "QQ==QUJD"}', "0.content"),
    (b'{"content": "QQ==="}', "0.content"),
    (b'{"content": "QU JD"}', "0.content"),
    (b'{"content": "QU\\nJD"}', "0.content"),
    (b'{"content": "QU\\u00e9JD"}', "0.content"),
    (b'{"content": "QUJD\xff"}', "0.content"),
    (b'{"content": "data:,"}', "0.content"),
    (b'{"content": "QUJD", "content": "QUJD"}', "0.content"),
    (b'{"content": "QUJD", "size": 3}', "0.size"),
    (b'{"content": "QUJD", "filename": 3}', "0.filename"),
    (b'{"content": "QUJD", "filename": "\\ud800"}', "0.filename"),
    (b'{"content": "QUJD", "filename": "a\x01b"}', "0.filename"),
    (b'{"content": "QUJD", "filename": "' + b"x" * 5000 + b'"}', "0.filename"),
    (b'[{"content": "QUJD"}, {"content": "QUJD", "x": 1}]', "1.x"),
])
def test_a_malformed_body_is_a_400_naming_the_field(tmp_path: Path, body: bytes, field: str) -> None:
    with pytest.raises(RequestInvalid) as refused:
        _read(body, tmp_path)
    assert list(refused.value.errors) == [field], refused.value.errors


def test_the_endpoint_reads_as_it_arrives_and_removes_what_it_refused(
        client: Any, headers: dict[str, str], config: Any) -> None:
    job = client.post("/v2/jobs", headers=headers,
                      json={"process": False, "conversion": [{"target": "flac"}]}).get_json()
    token = {"X-Oc-Token": job["token"]}
    content = os.urandom(200_000)
    body = _php(json.dumps({"content": "data:audio/wav;base64," + base64.b64encode(content).decode(),
                            "filename": "../up/tone.wav"}))
    answer = client.post(f"/v2/dl/upload-base64/{job['id']}", data=body, headers=token)
    assert answer.status_code == 201, answer.get_json()
    [item] = answer.get_json()
    assert (item["size"], item["checksum"], item["filename"]) == (len(content), hashlib.sha256(content).hexdigest(),
                                                                   "tone.wav")
    refused = client.post(f"/v2/dl/upload-base64/{job['id']}", headers=token,
                          data=json.dumps([{"content": base64.b64encode(content).decode()}, {"content": "!"}]))
    assert refused.status_code == 400 and list(refused.get_json()["errors"]) == ["1.content"]
    assert len(client.get(f"/v2/jobs/{job['id']}", headers=headers).get_json()["input"]) == 1
    assert list((config.storage_dir / "incoming").iterdir()) == []
