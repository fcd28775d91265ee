"""The catalog over HTTP: what /v2/conversions serves, what POST /v2/jobs refuses, presets."""
from __future__ import annotations

from typing import Any

import pytest
from conftest import create_key

from jobs_api import catalog


def refused(client: Any, headers: dict[str, str], target: str, options: dict[str, Any],
            metadata: dict[str, Any] | None = None) -> dict[str, list[str]]:
    conversion = {"target": target, "options": options, **({"metadata": metadata} if metadata else {})}
    response = client.post("/v2/jobs", json={"conversion": [conversion]}, headers=headers)
    assert response.status_code == 400, response.get_json()
    return response.get_json()["errors"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("target, options, field, allowed", [
    ("mp3", {"normalise": True}, "normalise", "normalize"),  # unknown option
    ("mp3", {"normalize": "yes"}, "normalize", "boolean"),  # wrong type
    ("mp3", {"frequency": "44100"}, "frequency", "integer"),
    ("flac", {"normalize_target_level_ebu": -80}, "normalize_target_level_ebu", "at least -70"),  # range
    ("flac", {"normalize_true_peak_ebu": 1}, "normalize_true_peak_ebu", "at most 0"),
    ("flac", {"normalize_loudness_range_target_ebu": 0.5}, "normalize_loudness_range_target_ebu", "at least 1"),
    ("wav", {"normalize_target_level": 3}, "normalize_target_level", "at most 0"),
    ("wav", {"normalize_type": "lufs"}, "normalize_type", "ebu, rms, peak"),
    ("wav", {"start": "1:02:03"}, "start", "pattern"),  # bad pattern
    ("wav", {"end": "00:00:5"}, "end", "pattern"),
    ("mp3", {"frequency": 96000}, "frequency", "44100, 48000"),  # the target cannot produce it
    ("opus", {"frequency": 44100}, "frequency", "48000"),
    ("ogg", {"audio_codec": "opus", "frequency": 44100}, "frequency", "48000"),
    ("ogg", {"audio_codec": "speex", "frequency": 44100}, "frequency", "8000, 16000, 32000"),
    ("flac", {"audio_bitdepth": 8}, "audio_bitdepth", "16, 24"),
    ("flac", {"audio_bitdepth": 32}, "audio_bitdepth", "16, 24"),
    ("alac", {"audio_bitdepth": 32}, "audio_bitdepth", "16, 24"),
    ("wav", {"start": "00:00:05", "end": "00:00:05"}, "end", "after start"),
    ("wav", {"start": "00:00:05", "end": "00:00:04.5"}, "end", "after start"),
    ("mp3", {"frequency": 8000, "audio_bitrate": 128}, "audio_bitrate", "32, 48, 64"),
    ("mp3", {"frequency": 22050, "audio_bitrate": 320}, "audio_bitrate", "128, 160"),
    ("aac", {"frequency": 8000, "channels": "mono", "audio_bitrate": 64}, "audio_bitrate", "32, 48"),
    ("ogg", {"frequency": 8000, "channels": "mono", "audio_bitrate": 64}, "audio_bitrate", "32"),
    ("ogg", {"audio_vbr": True}, "audio_vbr", "opus"),  # vorbis has no switch
    ("ogg", {"audio_codec": "flac"}, "audio_codec", "vorbis, opus, speex"),
    ("mp3", {"audio_codec": "opus"}, "audio_codec", "allowed options"),  # mp3 has one codec
    ("wav", {"audio_bitrate": 128}, "audio_bitrate", "allowed options"),
    ("mp3", {"language_tts": "xx-XX"}, "language_tts", "de-DE"),
    ("mp3", {"preset": ""}, "preset", "pattern"),
])
def test_invalid_options_are_400_naming_the_option_and_the_allowed_values(
        target: str, options: dict[str, Any], field: str, allowed: str, client: Any,
        headers: dict[str, str]) -> None:
    errors = refused(client, headers, target, options)
    assert list(errors) == [f"conversion.0.options.{field}"]
    assert allowed in errors[f"conversion.0.options.{field}"][0]


@pytest.mark.parametrize("metadata, field", [
    ({"titel": "x"}, "titel"), ({"title": 5}, "title"), ({"clear_all": "yes"}, "clear_all"),
    ({"comment": "a\x00b"}, "comment"), ({"title": "x" * 1001}, "title"),
])
def test_invalid_metadata_is_400_naming_the_tag(metadata: dict[str, Any], field: str, client: Any,
                                                headers: dict[str, str]) -> None:
    errors = refused(client, headers, "mp3", {}, metadata)
    assert list(errors) == [f"conversion.0.metadata.{field}"]


def test_valid_but_inapplicable_options_are_accepted(client: Any, headers: dict[str, str]) -> None:
    body = {"process": False, "conversion": [{"target": "mp3", "options": {
        "audio_bitdepth": 24, "normalize_target_level": -10, "language_tts": "fr-FR"}}]}
    assert client.post("/v2/jobs", json=body, headers=headers).status_code == 201


def test_patch_of_conversion_options_is_validated_on_the_merged_result(client: Any, headers: dict[str, str]) -> None:
    job = client.post("/v2/jobs", json={"process": False, "conversion": [
        {"target": "ogg", "options": {"audio_codec": "opus"}}]}, headers=headers).get_json()
    base = f"/v2/jobs/{job['id']}/conversions/{job['conversion'][0]['id']}"
    bad = client.patch(base, json={"options": {"frequency": 44100}}, headers=headers)
    assert bad.status_code == 400 and "48000" in bad.get_json()["errors"]["options.frequency"][0]
    good = client.patch(base, json={"options": {"audio_codec": None, "frequency": 44100}}, headers=headers)
    assert good.status_code == 200 and good.get_json()["options"]["frequency"] == 44100


def test_catalog_describes_every_option_with_its_schema(client: Any) -> None:
    entries = client.get("/v2/conversions?target=ogg").get_json()
    options = entries[0]["options"]
    assert options["audio_codec"] == {"type": "string", "description": options["audio_codec"]["description"],
                                      "enum": ["vorbis", "opus", "speex"], "default": "vorbis"}
    assert options["normalize_target_level_ebu"]["minimum"] == -70
    assert options["normalize_target_level_ebu"]["maximum"] == -5
    assert options["normalize_type"]["enum"] == ["ebu", "rms", "peak"]
    assert set(options["language_tts"]["enum"]) == set(catalog.TTS_VOICES)
    assert options["start"]["pattern"] == catalog.TIME_PATTERN
    seed = {"audio_bitdepth", "channels", "end", "frequency", "language_tts", "normalize", "normalize_type",
            "normalize_target_level", "normalize_target_level_ebu", "normalize_loudness_range_target_ebu",
            "normalize_true_peak_ebu", "output_filename", "preset", "start"}
    for entry in client.get("/v2/conversions").get_json():
        assert seed <= set(entry["options"]), entry["target"]
        assert all("type" in schema and "description" in schema for schema in entry["options"].values())
    assert client.get("/v2/conversions?category=audio&page=2").get_json() == []
    assert client.get("/v2/conversions?category=video").get_json() == []


def test_conversion_echoes_every_option_of_its_target(client: Any, headers: dict[str, str]) -> None:
    job = client.post("/v2/jobs", json={"process": False, "conversion": [
        {"target": "flac", "options": {"normalize": True}}]}, headers=headers).get_json()
    echoed = job["conversion"][0]["options"]
    assert set(echoed) == set(catalog.TARGETS["flac"].options)
    assert echoed["normalize"] is True and echoed["normalize_type"] is None


# Presets -------------------------------------------------------------------------------

def test_public_presets_are_listed_for_every_key(client: Any, headers: dict[str, str]) -> None:
    listed = client.get("/v2/presets", headers=headers).get_json()
    public = {preset["id"]: preset for preset in listed if preset["scope"] == "public"}
    assert {"podcast-loudness", "telephone", "cd-quality", "hires-flac"} <= set(public)
    assert public["telephone"]["options"]["frequency"] == 8000
    flac_only = client.get("/v2/presets?target=flac", headers=headers).get_json()
    assert {preset["target"] for preset in flac_only} == {"flac"}
    assert [p["id"] for p in client.get("/v2/presets?filter=podcast", headers=headers).get_json()] == [
        "podcast-loudness"]
    assert client.get("/v2/presets").status_code == 401


def test_private_presets_belong_to_their_key(client: Any, config: Any, headers: dict[str, str]) -> None:
    body = {"name": "My speech", "target": "mp3", "options": {"channels": "mono", "frequency": 22050}}
    created = client.post("/v2/presets", json=body, headers=headers)
    assert created.status_code == 201
    preset = created.get_json()
    assert preset["scope"] == "private" and preset["category"] == "audio"
    assert client.get(f"/v2/presets/{preset['id']}", headers=headers).get_json() == preset
    assert client.get(f"/presets/{preset['id']}", headers=headers).get_json() == preset  # old PHP SDK path

    patched = client.patch(f"/v2/presets/{preset['id']}", json={"options": {"frequency": None, "audio_bitrate": 96}},
                           headers=headers).get_json()
    assert patched["options"] == {"channels": "mono", "audio_bitrate": 96}

    other = {"X-Oc-Api-Key": create_key(config, "other")}
    assert client.get(f"/v2/presets/{preset['id']}", headers=other).status_code == 404
    assert client.delete(f"/v2/presets/{preset['id']}", headers=other).status_code == 404
    assert preset["id"] not in [p["id"] for p in client.get("/v2/presets", headers=other).get_json()]

    assert client.delete(f"/v2/presets/{preset['id']}", headers=headers).status_code == 204
    assert client.get(f"/v2/presets/{preset['id']}", headers=headers).status_code == 404


@pytest.mark.parametrize("body, field", [
    ({"name": "x", "target": "mp3", "options": {"frequency": 96000}}, "options.frequency"),
    ({"name": "x", "target": "mp4", "options": {}}, "target"),
    ({"name": "x", "target": "mp3", "options": {"preset": "telephone"}}, "options.preset"),
    ({"target": "mp3", "options": {}}, "name"),
    ({"name": "x", "target": "mp3", "scope": "public"}, "scope"),
])
def test_invalid_presets_are_400(body: dict[str, Any], field: str, client: Any, headers: dict[str, str]) -> None:
    response = client.post("/v2/presets", json=body, headers=headers)
    assert response.status_code == 400 and field in response.get_json()["errors"]


def test_public_presets_cannot_be_changed(client: Any, headers: dict[str, str]) -> None:
    assert client.patch("/v2/presets/telephone", json={"name": "mine"}, headers=headers).status_code == 409
    assert client.delete("/v2/presets/telephone", headers=headers).status_code == 409


def test_conversion_with_a_preset_is_validated_with_the_preset_merged(client: Any, headers: dict[str, str]) -> None:
    errors = refused(client, headers, "mp3", {"preset": "hires-flac"})  # 96 kHz: not for mp3
    assert "set by preset 'hires-flac'" in errors["conversion.0.options.frequency"][0]
    errors = refused(client, headers, "mp3", {"preset": "no-such-preset"})
    assert "GET /v2/presets" in errors["conversion.0.options.preset"][0]
    # The conversion's own frequency wins over the preset's, so this one is fine.
    options = {"preset": "hires-flac", "frequency": 48000}
    body = {"process": False, "conversion": [{"target": "mp3", "options": options}]}
    assert client.post("/v2/jobs", json=body, headers=headers).status_code == 201
