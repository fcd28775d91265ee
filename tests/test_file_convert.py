"""The File Conversion dialect, called the way seed 000's sample code calls it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import requests
from api2convert import Api2Convert
from api2convert.errors import SignatureVerificationError
from conftest import LiveService, Receiver, create_key, make_audio, probe

ENDPOINT = "/api/public/v1/file_convert"


def measured_download(url: str, folder: Path, name: str) -> dict[str, Any]:
    response = requests.get(url, timeout=30)
    assert response.status_code == 200
    path = folder / name
    path.write_bytes(response.content)
    return probe(path)


def finished(receiver: Receiver, secret: str) -> dict[str, Any]:
    [(headers, raw)] = receiver.wait(1)
    # Signed like /v2 callbacks: the official SDK's verifier accepts it, and refuses a tampered body.
    event = Api2Convert.webhooks().construct_event(raw, headers.get("X-Oc-Signature"), secret)
    assert event is not None
    with pytest.raises(SignatureVerificationError):
        Api2Convert.webhooks().construct_event(raw.replace(b"COMPLETED", b"FAILED"),
                                               headers.get("X-Oc-Signature"), secret)
    return json.loads(raw)  # type: ignore[no-any-return]


def test_url_input_with_webhook(live: LiveService, receiver: Receiver, wav_file: Path,
                                file_server: tuple[str, Path], tmp_path: Path) -> None:
    base, folder = file_server
    (folder / "fc-input.wav").write_bytes(wav_file.read_bytes())
    key = create_key(live.settings, "musicgpt")
    payload = {"audio_url": f"{base}/fc-input.wav", "target_format": "flac", "target_sr": 48000,
               "target_bit_depth": 24, "webhook_url": receiver.url}
    response = requests.post(f"{live.url}{ENDPOINT}", headers={"Authorization": key}, data=payload, files=[],
                             timeout=30)
    assert response.status_code == 200, response.text
    started = response.json()
    assert started["success"] is True and started["task_id"] and started["conversion_id"]

    hook = finished(receiver, live.settings.webhook_secret)
    assert hook["conversion_type"] == "File Conversion" and hook["status"] == "COMPLETED"
    assert (hook["task_id"], hook["conversion_id"]) == (started["task_id"], started["conversion_id"])
    measured = measured_download(hook["output_file_path"], tmp_path, "out.flac")
    assert (measured["format_name"], measured["sample_rate"], measured["bits_per_raw_sample"]) == (
        "flac", "48000", "24")

    # The same job is an ordinary /v2 job of that key.
    job = requests.get(f"{live.url}/v2/jobs/{started['task_id']}", headers={"X-Oc-Api-Key": key}, timeout=10).json()
    assert job["status"]["code"] == "completed" and job["conversion"][0]["target"] == "flac"

    for query in (f"task_id={started['task_id']}", f"conversion_id={started['conversion_id']}"):
        status = requests.get(f"{live.url}/api/public/v1/byId?conversionType=FILE_CONVERT&{query}",
                              headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
        assert status["success"] is True
        conversion = status["conversion"]
        assert conversion["status"] == "COMPLETED" and conversion["audio_url"] == hook["output_file_path"]
        assert conversion["task_id"] == started["task_id"] and conversion["createdAt"] and conversion["updatedAt"]


def test_upload_with_webhook(live: LiveService, receiver: Receiver, audio_dir: Path, tmp_path: Path) -> None:
    source = make_audio(audio_dir / "fc-upload.mp3", seconds=2.0, rate=44100)
    key = create_key(live.settings, "musicgpt-upload")
    payload = {"target_format": "wav", "target_sr": 16000, "webhook_url": receiver.url}
    with source.open("rb") as handle:
        files = [("audio_file", ("fc-upload.mp3", handle, "audio/mpeg"))]
        response = requests.post(f"{live.url}{ENDPOINT}", headers={"Authorization": f"Bearer {key}"},
                                 data=payload, files=files, timeout=30)
    assert response.status_code == 200, response.text
    hook = finished(receiver, live.settings.webhook_secret)
    assert hook["status"] == "COMPLETED" and hook["task_id"] == response.json()["task_id"]
    measured = measured_download(hook["output_file_path"], tmp_path, "out.wav")
    job = requests.get(f"{live.url}/v2/jobs/{response.json()['task_id']}", headers={"X-Oc-Api-Key": key},
                       timeout=10).json()
    assert job["input"][0]["checksum"] == hashlib.sha256(source.read_bytes()).hexdigest()
    # No bit depth asked: 16, the default where the format has one.
    assert (measured["codec_name"], measured["sample_rate"], measured["bits_per_sample"]) == ("pcm_s16le", "16000", 16)


def test_a_failed_conversion_reaches_the_webhook_as_failed(live: LiveService, receiver: Receiver) -> None:
    key = create_key(live.settings, "musicgpt-fail")
    payload = {"audio_url": "http://10.0.0.1/a.mp3", "target_format": "mp3", "webhook_url": receiver.url}
    started = requests.post(f"{live.url}{ENDPOINT}", headers={"Authorization": key}, data=payload, timeout=30).json()
    [(_headers, raw)] = receiver.wait(1)
    hook = json.loads(raw)
    assert hook["status"] == "FAILED" and hook["success"] is False and hook["output_file_path"] is None
    assert "not allowed" in hook["status_msg"] and hook["task_id"] == started["task_id"]


# Bad requests: 400 {"success": false, "error": "<field>: ..."} ---------------------------

def post(client: Any, key: str, data: dict[str, Any], upload: tuple[bytes, str] | None = None) -> Any:
    if upload is not None:
        from io import BytesIO
        data = {**data, "audio_file": (BytesIO(upload[0]), upload[1])}
    return client.post(ENDPOINT, headers={"Authorization": key}, data=data, content_type="multipart/form-data")


@pytest.mark.parametrize("data, upload, field", [
    ({"target_format": "mp3"}, None, "audio_url"),  # neither source
    ({"audio_url": "http://example.com/a.wav", "target_format": "mp3"}, "wav", "audio_url"),  # both
    ({"audio_url": "ftp://example.com/a.wav", "target_format": "mp3"}, None, "audio_url"),
    ({"audio_url": "http://example.com/a.wav", "target_format": "m4a"}, None, "target_format"),
    ({"audio_url": "http://example.com/a.wav"}, None, "target_format"),
    ({"audio_url": "http://example.com/a.wav", "target_format": "wav", "target_sr": 44000}, None, "target_sr"),
    ({"audio_url": "http://example.com/a.wav", "target_format": "wav", "target_sr": "fast"}, None, "target_sr"),
    ({"audio_url": "http://example.com/a.wav", "target_format": "mp3", "target_sr": 96000}, None, "target_sr"),
    ({"audio_url": "http://example.com/a.wav", "target_format": "webm", "target_sr": 44100}, None, "target_sr"),
    ({"audio_url": "http://example.com/a.wav", "target_format": "wav", "target_bit_depth": 8}, None,
     "target_bit_depth"),
    ({"audio_url": "http://example.com/a.wav", "target_format": "flac", "target_bit_depth": 32}, None,
     "target_bit_depth"),
    ({"audio_url": "http://example.com/a.wav", "target_format": "mp3", "webhook_url": "hook"}, None, "webhook_url"),
    ({"target_format": "mp3"}, "text", "audio_file"),  # an unreadable upload
    ({"target_format": "mp3"}, "empty", "audio_file"),
])
def test_bad_requests_are_400_naming_the_field(data: dict[str, Any], upload: str | None, field: str, client: Any,
                                               api_key: str, wav_file: Path) -> None:
    files = {None: None, "wav": (wav_file.read_bytes(), "a.wav"), "text": (b"not audio at all\n" * 50, "a.mp3"),
             "empty": (b"", "a.mp3")}[upload]
    response = post(client, api_key, data, files)
    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    assert body["success"] is False and body["error"].startswith(f"{field}:")
    assert "Traceback" not in body["error"]


def test_missing_or_wrong_key_is_401_in_this_dialect(client: Any) -> None:
    for headers, problem in (({}, "no API key was sent: send yours in the Authorization header"),
                             ({"Authorization": "Bearer nope"}, "no such key, or it was revoked")):
        response = client.post(ENDPOINT, headers=headers, data={"target_format": "mp3"})
        assert response.status_code == 401
        assert response.get_json() == {"success": False, "error": f"Invalid api key: {problem}"}


def test_by_id_of_another_key_or_kind_is_404(client: Any, config: Any, api_key: str) -> None:
    other = create_key(config, "someone-else")
    started = post(client, api_key, {"audio_url": "http://example.com/a.wav", "target_format": "mp3"}).get_json()
    url = f"/api/public/v1/byId?conversionType=FILE_CONVERT&task_id={started['task_id']}"
    assert client.get(url, headers={"Authorization": other}).status_code == 404
    mine = client.get(url, headers={"Authorization": api_key}).get_json()
    assert mine["conversion"]["status"] in ("IN_QUEUE", "PROCESSING", "FAILED")
    wrong_kind = url.replace("FILE_CONVERT", "TEXT_TO_SPEECH")
    assert client.get(wrong_kind, headers={"Authorization": api_key}).status_code == 400


def test_the_webhook_is_retried_like_v2_callbacks(live: LiveService, audio_dir: Path) -> None:
    receiver = Receiver(statuses=(503,))
    try:
        key = create_key(live.settings, "musicgpt-retry")
        source = make_audio(audio_dir / "fc-retry.wav", seconds=1.0)
        with source.open("rb") as handle:
            requests.post(f"{live.url}{ENDPOINT}", headers={"Authorization": key},
                          data={"target_format": "mp3", "webhook_url": receiver.url},
                          files={"audio_file": handle}, timeout=30)
        received = receiver.wait(2, seconds=30)
        assert len(received) == 2 and received[0][1] == received[1][1]
        assert json.loads(received[1][1])["status"] == "COMPLETED"
    finally:
        receiver.server.shutdown()
