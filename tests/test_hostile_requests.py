"""Hostile requests (issue 26, request parsing): each is a 4xx naming the field, never a 500,
never a value stored to break a later answer; the service goes on serving after each."""
from __future__ import annotations

import json
from typing import Any

import pytest


def _post_raw(client: Any, headers: dict[str, str], body: str) -> Any:
    return client.post("/v2/jobs", headers={**headers, "Content-Type": "application/json"}, data=body)


def _still_serving(client: Any, headers: dict[str, str]) -> None:
    answer = client.get("/v2/jobs", headers=headers)
    assert answer.status_code == 200
    json.loads(answer.get_data(as_text=True))  # strict JSON: no NaN, no lone surrogate


def _job(**conversion: Any) -> dict[str, Any]:
    return {"input": [{"type": "remote", "source": "http://example.com/a.wav"}],
            "conversion": [{"target": "mp3", **conversion}]}


@pytest.mark.parametrize("depth", [50, 100_000])
def test_deeply_nested_json_is_refused(client: Any, headers: dict[str, str], depth: int) -> None:
    body = json.dumps(_job(metadata={"title": "x"}))
    nested = "[" * depth + "]" * depth
    answer = _post_raw(client, headers, body.replace('"x"', nested))
    assert answer.status_code == 400 and "nested" in json.dumps(answer.get_json())
    _still_serving(client, headers)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_number_that_is_not_finite_is_refused(client: Any, headers: dict[str, str], number: str) -> None:
    body = json.dumps(_job(options={"normalize_target_level_ebu": 12345})).replace("12345", number)
    answer = _post_raw(client, headers, body)
    assert answer.status_code == 400, answer.get_json()
    assert "conversion.0.options.normalize_target_level_ebu" in answer.get_json()["errors"]
    _still_serving(client, headers)


def test_an_integer_beyond_64_bits_is_refused(client: Any, headers: dict[str, str]) -> None:
    answer = _post_raw(client, headers, json.dumps(_job(metadata={"track": 10**30})))
    assert answer.status_code == 400 and "conversion.0.metadata.track" in answer.get_json()["errors"]
    _still_serving(client, headers)


@pytest.mark.parametrize("character", ["\\ud800", "\\u0000"])  # not text; PostgreSQL cannot store a NUL
@pytest.mark.parametrize("where", ["callback", "source", "filename", "metadata", "option"])
def test_a_string_that_is_not_text_is_refused_where_it_stands(client: Any, headers: dict[str, str], where: str,
                                                              character: str) -> None:
    job: dict[str, Any] = _job()
    if where == "callback":
        job["callback"] = "http://example.com/MARK"
    elif where == "source":
        job["input"][0]["source"] = "http://example.com/MARK.wav"
    elif where == "filename":
        job["input"][0]["filename"] = "MARK.wav"
    elif where == "metadata":
        job["conversion"][0]["metadata"] = {"title": "MARK"}
    else:
        job["conversion"][0]["options"] = {"output_filename": "MARK"}
    answer = _post_raw(client, headers, json.dumps(job).replace("MARK", character))
    assert answer.status_code == 400, answer.get_json()
    assert "not valid text" in json.dumps(answer.get_json())
    _still_serving(client, headers)


def test_a_preset_named_with_a_nul_is_a_400(client: Any, headers: dict[str, str]) -> None:
    # found by schemathesis on PostgreSQL: the row could not be written, a 500
    answer = client.post("/v2/presets", headers=headers, json={"target": "mp3", "name": "a\u0000b"})
    assert answer.status_code == 400 and "name" in answer.get_json()["errors"], answer.get_json()
    _still_serving(client, headers)


@pytest.mark.parametrize("url", ["/v2/jobs/%00", "/v2/jobs?status=%00", "/v2/presets?filter=a%00b", "/v2/jobs?%00=1"])
def test_a_nul_in_the_url_is_a_400(client: Any, headers: dict[str, str], url: str) -> None:
    answer = client.get(url, headers=headers)
    assert answer.status_code == 400 and "url" in answer.get_json()["errors"], answer.get_json()
    _still_serving(client, headers)


@pytest.mark.parametrize("query", ["page=100000000000000000000", "page=-1", "page=abc"])
def test_a_page_out_of_range_is_a_400_naming_page(client: Any, headers: dict[str, str], query: str) -> None:
    for path in ("/v2/jobs", "/v2/conversions"):
        answer = client.get(f"{path}?{query}", headers=headers)
        assert answer.status_code == 400 and "page" in answer.get_json()["errors"], (path, answer.get_json())


@pytest.mark.parametrize("period", ["year/9999", "year/0000", "year/99999", "month/9999-12", "day/9999-12-31"])
def test_a_stats_period_out_of_range_is_a_400(client: Any, headers: dict[str, str], period: str) -> None:
    answer = client.get(f"/v2/stats/{period}/single", headers=headers)
    assert answer.status_code == 400 and answer.get_json()["errors"], answer.get_data(as_text=True)


@pytest.mark.parametrize("value", [[1, 2], {"a": 1}, "loud", True])
def test_a_preset_option_of_the_wrong_type_is_a_400(client: Any, headers: dict[str, str], value: Any) -> None:
    answer = client.post("/v2/presets", headers=headers, json={
        "name": "wrong type", "target": "mp3", "options": {"audio_bitrate": value}})
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert any("audio_bitrate" in field for field in answer.get_json()["errors"])
    _still_serving(client, headers)


def test_many_unknown_options_give_a_bounded_answer(client: Any, headers: dict[str, str]) -> None:
    options = {f"unknown_{number}": 1 for number in range(20_000)}
    answer = client.post("/v2/jobs", headers=headers, json=_job(options=options))
    assert answer.status_code == 400
    assert len(answer.get_data()) < 20_000, len(answer.get_data())


@pytest.mark.parametrize("preset", [[1], {"a": 1}, 7])
def test_a_preset_named_by_something_else_than_a_string_is_a_400(
        client: Any, headers: dict[str, str], preset: Any) -> None:
    answer = client.post("/v2/jobs", headers=headers, json=_job(options={"preset": preset}))
    assert answer.status_code == 400 and "conversion.0.options.preset" in answer.get_json()["errors"]


def test_a_remote_inputs_filename_is_display_text(client: Any, headers: dict[str, str]) -> None:
    hostile = "../../etc/\u202egpj.wav\x07" + "x" * 5000
    job = client.post("/v2/jobs", headers=headers, json={
        "process": False, "input": [{"type": "remote", "source": "http://example.com/a.wav", "filename": hostile}],
        "conversion": [{"target": "mp3"}]}).get_json()
    name = job["input"][0]["filename"]
    assert "/" not in name and "\u202e" not in name and "\x07" not in name and len(name) <= 255
    assert name.startswith("gpj.wav")


def test_a_nul_in_a_file_conversion_field_is_a_400(client: Any, api_key: str) -> None:
    answer = client.post("/api/public/v1/file_convert", headers={"Authorization": api_key},
                         content_type="multipart/form-data",
                         data={"audio_url": "http://example.com/a.wav", "target_format": "wav",
                               "webhook_url": "http://example.com/\x00"})
    assert answer.status_code == 400 and answer.get_json()["error"].startswith("webhook_url:"), answer.get_json()
