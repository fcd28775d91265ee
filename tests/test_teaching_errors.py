"""Errors that teach (issue 28): each wrong request says what was meant where it can tell."""
from __future__ import annotations

import io
import logging
from typing import Any

import pytest

from jobs_api.outbound import Allowance, OutboundRefused, fetch_to_file


def _job(client: Any, headers: dict[str, str], conversion: dict[str, Any]) -> Any:
    return client.post("/v2/jobs", headers=headers, json={
        "input": [{"type": "remote", "source": "http://example.com/a.wav"}], "conversion": [conversion]})


@pytest.mark.parametrize(("conversion", "field", "meant"), [
    ({"target": "mp4a"}, "conversion.0.target", "did you mean 'm4a'?"),
    ({"target": "FLAK"}, "conversion.0.target", "did you mean 'flac'?"),
    ({"target": "mp3", "options": {"audio_bitrte": 128}}, "conversion.0.options.audio_bitrte",
     "did you mean 'audio_bitrate'?"),
    ({"target": "mp3", "metadata": {"titel": "x"}}, "conversion.0.metadata.titel", "did you mean 'title'?"),
    ({"target": "flac", "options": {"samplerate": 48000}}, "conversion.0.options.samplerate",
     "did you mean 'frequency'?"),  # another name, not a misspelling
    ({"target": "mp3", "options": {"bitrate": 192}}, "conversion.0.options.bitrate", "did you mean 'audio_bitrate'?"),
])
def test_a_misspelled_name_gets_the_nearest_valid_one(client: Any, headers: dict[str, str],
                                                      conversion: dict[str, Any], field: str, meant: str) -> None:
    answer = _job(client, headers, conversion)
    assert answer.status_code == 400 and meant in answer.get_json()["errors"][field][0], answer.get_json()


def test_a_name_near_nothing_gets_only_the_allowed_ones(client: Any, headers: dict[str, str]) -> None:
    problem = _job(client, headers, {"target": "zzzzzz"}).get_json()["errors"]["conversion.0.target"][0]
    assert "did you mean" not in problem and "allowed values: mp3" in problem


def test_the_file_conversion_endpoint_refuses_a_field_it_does_not_read(client: Any, api_key: str) -> None:
    form = {"audio_url": "http://example.com/a.wav", "target_format": "wav", "target_samplerate": "8000"}
    answer = client.post("/api/public/v1/file_convert", headers={"Authorization": api_key},
                         content_type="multipart/form-data", data=form)
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert error.startswith("target_samplerate: unknown field; did you mean 'target_sr'?"), error
    form = {**form, "sample_rate": "8000"}
    del form["target_samplerate"]
    answer = client.post("/api/public/v1/file_convert", headers={"Authorization": api_key},
                         content_type="multipart/form-data", data=form)
    assert answer.get_json()["error"].startswith("sample_rate: unknown field; did you mean 'target_sr'?")


def test_a_path_without_v2_that_exists_under_v2_says_so(client: Any, headers: dict[str, str]) -> None:
    answer = client.get("/jobs", headers=headers)
    assert answer.status_code == 404
    assert answer.get_json()["message"] == "Not found: the API's paths begin with /v2; did you mean /v2/jobs?"
    assert "did you mean" not in client.get("/nothing-like-it").get_json()["message"]


def test_a_private_address_is_named_private_and_the_log_names_the_setting(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="jobs_api.outbound"), \
            pytest.raises(OutboundRefused, match="private or reserved address") as refused:
        fetch_to_file("http://127.0.0.1:9/a.wav", io.BytesIO(), allow=Allowance.parse([]), max_bytes=10, timeout=5)
    assert "OUTBOUND_ALLOW" not in str(refused.value)
    assert "OUTBOUND_ALLOW" in caplog.text and "127.0.0.1" in caplog.text


def test_a_form_field_whose_name_cannot_be_read_is_a_400_too(client: Any, api_key: str) -> None:
    # found by schemathesis: a quoted name ending in a backslash reaches the view as None (a 500)
    form = {"target_format": "mp3", "audio_url": "http://example.com/a.wav", "a\\": "x"}
    answer = client.post("/api/public/v1/file_convert", headers={"Authorization": api_key},
                         content_type="multipart/form-data", data=form)
    assert answer.status_code == 400 and "unknown field" in answer.get_json()["error"], answer.get_json()
