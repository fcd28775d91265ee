"""Every option of the catalog, measured on the produced file (real worker, real ffmpeg)."""
from __future__ import annotations

import statistics
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import format_tags, loudness, make_audio, packet_sizes, probe, run_worker
from test_conversion import convert, download

from jobs_api import catalog
from workers.ffmpeg.meters import SPLIT_SECONDS
from workers.services import worker_services

# A target, an option set it can produce, and what ffprobe must then report.
MATRIX = [
    ("mp3", {"frequency": 22050, "channels": "mono", "audio_bitrate": 128},
     {"sample_rate": "22050", "channels": 1, "bit_rate": 128000}),
    ("wav", {"frequency": 96000, "audio_bitdepth": 8}, {"sample_rate": "96000", "codec_name": "pcm_u8"}),
    ("wav", {"audio_bitdepth": 24, "channels": "mono"}, {"codec_name": "pcm_s24le", "channels": 1}),
    ("wav", {"audio_bitdepth": 32, "frequency": 8000}, {"codec_name": "pcm_s32le", "sample_rate": "8000"}),
    ("flac", {"frequency": 96000, "audio_bitdepth": 24}, {"sample_rate": "96000", "bits_per_raw_sample": "24"}),
    ("flac", {"frequency": 16000, "audio_bitdepth": 16, "channels": "mono"},
     {"sample_rate": "16000", "bits_per_raw_sample": "16", "channels": 1}),
    ("aiff", {"audio_bitdepth": 24, "frequency": 44100}, {"codec_name": "pcm_s24be", "sample_rate": "44100"}),
    ("alac", {"audio_bitdepth": 24, "frequency": 96000}, {"bits_per_raw_sample": "24", "sample_rate": "96000"}),
    ("ogg", {"frequency": 32000, "audio_bitrate": 96}, {"codec_name": "vorbis", "sample_rate": "32000"}),
    ("ogg", {"audio_codec": "opus", "channels": "mono"}, {"codec_name": "opus", "channels": 1}),
    ("ogg", {"audio_codec": "speex", "frequency": 16000}, {"codec_name": "speex", "sample_rate": "16000"}),
    ("opus", {"frequency": 48000, "audio_bitrate": 64, "channels": "mono"}, {"sample_rate": "48000", "channels": 1}),
    ("webm", {"audio_codec": "vorbis", "frequency": 22050}, {"codec_name": "vorbis", "sample_rate": "22050"}),
    ("aac", {"frequency": 32000, "audio_bitrate": 96, "channels": "mono"}, {"sample_rate": "32000", "channels": 1}),
    ("m4a", {"frequency": 22050, "audio_bitrate": 64}, {"sample_rate": "22050", "codec_name": "aac"}),
    ("wma", {"frequency": 32000, "audio_bitrate": 64, "channels": "mono"}, {"sample_rate": "32000", "channels": 1}),
]


@pytest.fixture(scope="module")
def source(audio_dir: Path) -> Path:
    return make_audio(audio_dir / "source48.wav", seconds=4.0, rate=48000)


def bit_rate(path: Path) -> int:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                          "stream=bit_rate", "-of", "csv=p=0", str(path)], capture_output=True, text=True).stdout
    return int(out.strip())


@pytest.mark.parametrize("target, options, expected", MATRIX, ids=[f"{t}-{'-'.join(map(str, o.values()))}"
                                                                   for t, o, _ in MATRIX])
def test_options_are_what_ffprobe_reports(target: str, options: dict[str, Any], expected: dict[str, Any],
                                          client: Any, config: Any, headers: dict[str, str], source: Path,
                                          tmp_path: Path) -> None:
    job = convert(client, config, headers, source, target, options)
    assert job["status"]["code"] == "completed", job["errors"]
    produced = download(client, job, tmp_path)
    measured = probe(produced)
    for name, value in expected.items():
        if name == "bit_rate":
            assert bit_rate(produced) == value
        else:
            assert measured[name] == value, name
    # ADTS has no duration field; ffprobe estimates it from the bitrate.
    assert abs(measured["duration"] - 4.0) < (0.25 if target == "aac" else 0.1)
    reported = job["output"][0]["metadata"]
    assert reported["sample_rate"] == int(measured["sample_rate"]) and reported["channels"] == measured["channels"]


def test_lossless_outputs_report_their_bit_depth(client: Any, config: Any, headers: dict[str, str], source: Path,
                                                 tmp_path: Path) -> None:
    job = convert(client, config, headers, source, "flac", {"audio_bitdepth": 24})
    assert job["output"][0]["metadata"]["bit_depth"] == 24
    assert probe(download(client, job, tmp_path))["bits_per_raw_sample"] == "24"


def test_mp3_vbr_varies_its_frame_sizes_and_cbr_does_not(client: Any, config: Any, headers: dict[str, str],
                                                         audio_dir: Path, tmp_path: Path) -> None:
    music = make_audio(audio_dir / "noise-and-tone.wav", seconds=6.0, rate=44100,
                       source="anoisesrc=color=pink:duration=6:amplitude=0.4:sample_rate=44100,"
                              "volume='0.1+0.9*abs(sin(t*2))':eval=frame")
    spreads = {}
    for vbr in (False, True):
        job = convert(client, config, headers, music, "mp3", {"audio_bitrate": 128, "audio_vbr": vbr})
        sizes = packet_sizes(download(client, job, tmp_path))
        spreads[vbr] = max(sizes) - min(sizes)
    assert spreads[False] <= 1  # CBR frames differ only by the padding byte
    assert spreads[True] > 50


def test_opus_cbr_has_constant_packets(client: Any, config: Any, headers: dict[str, str], audio_dir: Path,
                                       tmp_path: Path) -> None:
    music = make_audio(audio_dir / "noise-for-opus.wav", seconds=4.0, rate=48000,
                       source="anoisesrc=color=pink:duration=4:amplitude=0.4:sample_rate=48000,"
                              "volume='0.1+0.9*abs(sin(t*2))':eval=frame")
    fixed = convert(client, config, headers, music, "opus", {"audio_vbr": False, "audio_bitrate": 64})
    varying = convert(client, config, headers, music, "opus", {"audio_bitrate": 64})
    cbr = packet_sizes(download(client, fixed, tmp_path))[2:-2]
    vbr = packet_sizes(download(client, varying, tmp_path))[2:-2]
    assert statistics.pstdev(cbr) < 1 < statistics.pstdev(vbr)


# Trims ---------------------------------------------------------------------------------

def pcm(path: Path, trim: str | None = None) -> bytes:
    """Decoded 16-bit mono samples at 48 kHz, optionally cut with ffmpeg's own atrim."""
    chain = ["-af", trim] if trim else []
    return subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), *chain, "-ac", "1", "-ar", "48000",
                           "-f", "s16le", "-"], check=True, capture_output=True).stdout


@pytest.mark.parametrize("start, end, seconds", [
    ("00:00:01", "00:00:03", 2.0), ("00:00:00.5", "00:00:02.25", 1.75), ("00:00:02.5", None, 1.5),
    (None, "00:00:01.2", 1.2),
])
def test_trim_keeps_exactly_the_requested_part(start: str | None, end: str | None, seconds: float, client: Any,
                                               config: Any, headers: dict[str, str], source: Path,
                                               tmp_path: Path) -> None:
    options = {name: value for name, value in (("start", start), ("end", end)) if value}
    job = convert(client, config, headers, source, "wav", options)
    produced = download(client, job, tmp_path)
    assert abs(probe(produced)["duration"] - seconds) <= 0.05
    # The tone's pitch rises over time: the kept samples must be the source's own samples
    # from that part, compared with ffmpeg's atrim of the same span.
    begin = catalog.parse_time(start) if start else 0.0
    expected = pcm(source, f"atrim=start={begin}:duration={seconds}")
    got = pcm(produced)
    assert len(got) == pytest.approx(len(expected), abs=2 * 48)  # within 1 ms
    common = min(len(got), len(expected))
    assert got[:common] == expected[:common]


# Normalization -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def varying(audio_dir: Path) -> Path:
    """20 s of pink noise whose level swells and fades: loudness changes over time."""
    return make_audio(audio_dir / "varying.wav", seconds=20.0, rate=48000,
                      source="anoisesrc=color=pink:duration=20:amplitude=0.5:sample_rate=48000:seed=11,"
                             "volume='0.2+0.8*abs(sin(t*0.8))':eval=frame")


@pytest.fixture(scope="module")
def peaky(audio_dir: Path) -> Path:
    """Noise with near-full-scale clicks: a linear gain to -16 LUFS would push them over the limit."""
    return make_audio(audio_dir / "peaky.wav", seconds=12.0, rate=44100,
                      source="anoisesrc=color=pink:d=12:amplitude=0.5:sample_rate=44100:seed=12[n];"
                             "aevalsrc='if(lt(mod(t,1),0.004),0.95*sin(2*PI*3000*t),0)':s=44100:d=12[c];"
                             "[n][c]amix=inputs=2:normalize=0[out0]")


@pytest.fixture(scope="module")
def dynamic(audio_dir: Path) -> Path:
    """Loud and quiet passages in turn: a loudness range wider than 7 LU."""
    return make_audio(audio_dir / "dynamic.wav", seconds=24.0, rate=48000,
                      source="anoisesrc=color=pink:duration=24:amplitude=0.5:sample_rate=48000:seed=13,"
                             "volume='if(lt(mod(t,8),4),1,0.15)':eval=frame")


def normalized(client: Any, config: Any, headers: dict[str, str], path: Path, target: str,
               options: dict[str, Any], tmp_path: Path) -> tuple[dict[str, float], dict[str, Any]]:
    job = convert(client, config, headers, path, target, {"normalize": True, **options})
    assert job["status"]["code"] == "completed", job["errors"]
    produced = download(client, job, tmp_path)
    # the limiter works at four times the rate; the file keeps the planned one.
    rate = options.get("frequency") or min(int(probe(path)["sample_rate"]), 48000 if target == "mp3" else 10**6)
    assert int(probe(produced)["sample_rate"]) == rate
    return loudness(produced), job["output"][0]["metadata"]["loudness"]


@pytest.mark.parametrize("fixture, target, options", [
    ("varying", "wav", {}),
    ("varying", "mp3", {"normalize_target_level_ebu": -16, "normalize_true_peak_ebu": -1}),
    ("varying", "aac", {"normalize_target_level_ebu": -14, "normalize_true_peak_ebu": -1.5}),
    ("varying", "flac", {"normalize_target_level_ebu": -30, "frequency": 48000, "channels": "mono"}),
    ("peaky", "wav", {"normalize_target_level_ebu": -16, "normalize_true_peak_ebu": -2}),
    ("peaky", "mp3", {"normalize_target_level_ebu": -18, "normalize_true_peak_ebu": -3}),
    ("dynamic", "flac", {"normalize_target_level_ebu": -20, "normalize_loudness_range_target_ebu": 5}),
    ("tone", "wav", {"normalize_target_level_ebu": -18}),
    ("short_peaky", "wav", {"normalize_target_level_ebu": -14, "normalize_true_peak_ebu": -1}),
])
def test_ebu_r128_reaches_the_target_within_1_lu_and_keeps_the_true_peak(
        fixture: str, target: str, options: dict[str, Any], request: pytest.FixtureRequest, client: Any,
        config: Any, headers: dict[str, str], audio_dir: Path, tmp_path: Path) -> None:
    if fixture == "tone":
        path = make_audio(audio_dir / "tone-5s.wav", seconds=5.0, source="sine=frequency=1000:duration=5,volume=0.05")
    elif fixture == "short_peaky":
        path = make_audio(audio_dir / "short-peaky.wav", seconds=2.0,
                          source="aevalsrc='0.05*sin(2*PI*440*t)+if(lt(mod(t,0.5),0.004),0.9,0)':s=44100:d=2")
    else:
        path = request.getfixturevalue(fixture)
    measured, reported = normalized(client, config, headers, path, target, options, tmp_path)
    level = options.get("normalize_target_level_ebu", -23)
    peak = options.get("normalize_true_peak_ebu", -2)
    assert abs(measured["integrated"] - level) <= 1.0, (measured, reported)
    assert measured["true_peak"] <= peak + 0.5, (measured, reported)
    assert reported["integrated_lufs"] == pytest.approx(measured["integrated"], abs=0.2)
    if fixture == "tone":
        assert reported["method"] == "linear"  # a pure tone needs no limiter
    if fixture == "dynamic":  # riding the gain narrows the range from 16.5 LU to about the target
        assert reported["method"] == "dynamic"
        assert measured["lra"] <= options["normalize_loudness_range_target_ebu"] + 1.0, (measured, reported)
        assert reported["loudness_range_lu"] == pytest.approx(measured["lra"], abs=0.2)


def test_a_long_input_is_measured_in_halves_side_by_side(client: Any, config: Any, headers: dict[str, str],
                                                         audio_dir: Path, tmp_path: Path) -> None:
    long = make_audio(audio_dir / "long-dynamic.wav", seconds=66.0, rate=44100,
                      source="anoisesrc=color=pink:duration=66:amplitude=0.5:sample_rate=44100:seed=6,"
                             "volume='if(lt(mod(t,8),4),1,0.15)':eval=frame")
    assert 66.0 >= SPLIT_SECONDS
    options = {"normalize_target_level_ebu": -18, "normalize_loudness_range_target_ebu": 6}
    measured, reported = normalized(client, config, headers, long, "flac", options, tmp_path)
    assert reported["method"] == "dynamic"
    assert reported["input_integrated_lufs"] == pytest.approx(loudness(long)["integrated"], abs=0.1)
    assert abs(measured["integrated"] - (-18)) <= 0.5 and measured["lra"] <= 7.0, (measured, reported)


@pytest.mark.parametrize("swing, method", [("", "linear"), (",volume='0.5+0.4*sin(2*PI*t/7)':eval=frame", "dynamic")])
def test_a_lossy_encode_makes_up_the_loudness_its_encoder_takes(
        swing: str, method: str, client: Any, config: Any, headers: dict[str, str], audio_dir: Path,
        tmp_path: Path) -> None:
    """AAC takes about 0.3 LU from pink noise: encoded once with the gain alone, this lands at
    -16.3. A pilot of 20 s from the middle tells the gain how much to make up."""
    assert 70.0 >= SPLIT_SECONDS
    noise = make_audio(audio_dir / f"pink-70s-{method}.wav", seconds=70.0,
                       source=f"anoisesrc=color=pink:duration=70:amplitude=0.3:sample_rate=44100:seed=3{swing}")
    options = {"normalize_target_level_ebu": -16, "normalize_true_peak_ebu": -1.5}
    measured, reported = normalized(client, config, headers, noise, "aac", options, tmp_path)
    assert reported["method"] == method and reported["encodes"] == 1, reported
    assert measured["integrated"] == pytest.approx(-16, abs=0.15), (measured, reported)  # ebur128 shows tenths


@pytest.mark.parametrize("kind, level, target", [
    ("rms", -20, "wav"), ("rms", -12, "mp3"), ("peak", -3, "wav"), ("peak", -1, "flac"), ("peak", -6, "mp3"),
    ("rms", -30, "ogg"),
])
def test_rms_and_peak_reach_the_level_within_half_a_db(kind: str, level: int, target: str, client: Any,
                                                        config: Any, headers: dict[str, str], varying: Path,
                                                        tmp_path: Path) -> None:
    options = {"normalize_type": kind, "normalize_target_level": level}
    measured, reported = normalized(client, config, headers, varying, target, options, tmp_path)
    assert abs(measured[kind] - level) <= 0.5, (measured, reported)
    assert reported["type"] == kind
    assert reported[f"{kind}_dbfs"] == pytest.approx(measured[kind], abs=0.2)  # the result's own meter


@pytest.mark.parametrize("target", sorted(catalog.TARGETS))
def test_every_target_is_measured_while_it_is_encoded(target: str, client: Any, config: Any,
                                                      headers: dict[str, str], varying: Path, tmp_path: Path) -> None:
    """The meter reads a Matroska copy of the encoded stream: each codec must go through it."""
    options = {"normalize_type": "peak", "normalize_target_level": -3}
    measured, reported = normalized(client, config, headers, varying, target, options, tmp_path)
    assert reported["peak_dbfs"] == pytest.approx(measured["peak"], abs=0.3)


@contextmanager
def worker_settings(monkeypatch: pytest.MonkeyPatch, **settings: str) -> Iterator[None]:
    """The in-process worker runs under these settings (it reads them from the environment)."""
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    worker_services.cache_clear()
    try:
        yield
    finally:
        monkeypatch.undo()
        worker_services.cache_clear()


def test_a_measured_encode_past_the_output_limit_fails_as_too_large(
        monkeypatch: pytest.MonkeyPatch, client: Any, config: Any, headers: dict[str, str], varying: Path) -> None:
    # The tee that feeds the meter ignores -fs; the kernel's file size limit stops ffmpeg instead.
    with worker_settings(monkeypatch, MAX_OUTPUT_BYTES="200000"):
        job = convert(client, config, headers, varying, "wav", {"normalize": True})
    assert job["status"]["code"] == "failed"
    [error] = job["errors"]
    assert "exceed the limit of 200000 bytes" in error["message"], error


def test_silence_completes_with_a_warning_instead_of_a_gain(client: Any, config: Any, headers: dict[str, str],
                                                            audio_dir: Path) -> None:
    silence = make_audio(audio_dir / "silence.wav", seconds=2.0, source="anullsrc=r=44100:cl=stereo:d=2")
    job = convert(client, config, headers, silence, "mp3", {"normalize": True})
    assert job["status"]["code"] == "completed"
    assert any("normalize skipped" in warning["message"] for warning in job["warnings"])


# Warnings, tags, text to speech --------------------------------------------------------

def test_bit_depth_on_a_lossy_target_is_a_warning(client: Any, config: Any, headers: dict[str, str],
                                                  source: Path) -> None:
    job = convert(client, config, headers, source, "mp3", {"audio_bitdepth": 24})
    assert job["status"]["code"] == "completed"
    [warning] = job["warnings"]
    assert warning["source"] == "conversion" and "audio_bitdepth" in warning["message"]


def test_metadata_is_written_as_tags(client: Any, config: Any, headers: dict[str, str], audio_dir: Path,
                                     tmp_path: Path) -> None:
    tagged = make_audio(audio_dir / "tagged.flac", seconds=1.0, extra=["-metadata", "genre=Source Genre"])
    metadata = {"title": "Über Title", "artist": "An Artist", "album": "An Album", "comment": "A comment"}
    job = convert(client, config, headers, tagged, "mp3", metadata=metadata)
    tags = format_tags(download(client, job, tmp_path))
    assert (tags["title"], tags["artist"], tags["album"]) == ("Über Title", "An Artist", "An Album")
    assert tags["genre"] == "Source Genre"  # kept from the source unless clear_all
    job = convert(client, config, headers, tagged, "mp3", metadata={"clear_all": True, "title": "Only this"})
    tags = format_tags(download(client, job, tmp_path))
    assert tags["title"] == "Only this" and "genre" not in tags


@pytest.mark.parametrize("target", ["ogg", "m4a", "flac", "wav", "opus", "webm", "wma", "aiff", "alac"])
def test_tags_land_in_every_container_that_holds_them(target: str, client: Any, config: Any,
                                                      headers: dict[str, str], source: Path, tmp_path: Path) -> None:
    job = convert(client, config, headers, source, target, metadata={"title": "T1", "artist": "A1"})
    tags = format_tags(download(client, job, tmp_path))
    assert (tags.get("title"), tags.get("artist")) == ("T1", "A1")


def test_metadata_on_aac_is_a_warning(client: Any, config: Any, headers: dict[str, str], source: Path) -> None:
    job = convert(client, config, headers, source, "aac", metadata={"title": "x"})
    assert job["status"]["code"] == "completed"
    assert "cannot hold tags" in job["warnings"][0]["message"]


@pytest.mark.parametrize("language", ["en-US", "de-DE", "ja-JP", "zh-HK"])
def test_text_is_spoken_in_the_requested_language(language: str, client: Any, config: Any,
                                                  headers: dict[str, str], audio_dir: Path, tmp_path: Path) -> None:
    text = audio_dir / f"speech-{language}.txt"
    text.write_text("Hello, this is a test of the speech output. 123.\n", encoding="utf-8")
    job = convert(client, config, headers, text, "mp3", {"language_tts": language, "frequency": 22050})
    assert job["status"]["code"] == "completed", job["errors"]
    produced = download(client, job, tmp_path)
    measured = probe(produced)
    assert measured["codec_name"] == "mp3" and measured["sample_rate"] == "22050"
    assert measured["duration"] > 1.0
    assert loudness(produced)["rms"] > -40  # speech, not silence


def test_text_that_is_not_utf8_fails_clearly(client: Any, config: Any, headers: dict[str, str],
                                              audio_dir: Path) -> None:
    text = audio_dir / "latin1.txt"
    text.write_bytes("Grüße aus Köln".encode("latin-1"))
    job = convert(client, config, headers, text, "mp3")
    assert job["status"]["code"] == "failed"
    assert job["errors"][0]["code"] == 2008 and "UTF-8" in job["errors"][0]["message"]


def test_audio_sent_as_text_is_converted_as_audio(client: Any, config: Any, headers: dict[str, str],
                                                   source: Path, tmp_path: Path) -> None:
    named_text = tmp_path / "really-a-wav.txt"
    named_text.write_bytes(source.read_bytes())
    job = convert(client, config, headers, named_text, "flac")
    assert job["status"]["code"] == "completed", job["errors"]
    assert probe(download(client, job, tmp_path))["duration"] == pytest.approx(probe(source)["duration"], abs=0.05)


def test_speech_longer_than_the_limit_is_stopped_while_it_is_made(
        monkeypatch: pytest.MonkeyPatch, client: Any, config: Any, headers: dict[str, str], tmp_path: Path) -> None:
    text = tmp_path / "long.txt"
    text.write_text("This sentence takes a few seconds to speak. " * 40, encoding="utf-8")  # about two minutes
    with worker_settings(monkeypatch, MAX_DURATION_SECONDS="10"):
        job = convert(client, config, headers, text, "mp3")
    assert job["status"]["code"] == "failed", job
    assert job["errors"][0]["message"] == "The text would take longer than the limit of 10 s to speak."


def test_every_language_of_the_catalog_has_an_espeak_voice(tmp_path: Path) -> None:
    for language, voice in catalog.TTS_VOICES.items():
        wav = tmp_path / f"{language}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), "1 2 3"], check=True, capture_output=True)
        assert wav.stat().st_size > 1000, language


def test_language_tts_on_an_audio_input_is_a_warning(client: Any, config: Any, headers: dict[str, str],
                                                     source: Path) -> None:
    job = convert(client, config, headers, source, "mp3", {"language_tts": "de-DE"})
    assert job["status"]["code"] == "completed"
    assert "language_tts ignored" in job["warnings"][0]["message"]


def test_output_filename_names_the_download_never_a_path(client: Any, config: Any, headers: dict[str, str],
                                                         source: Path, tmp_path: Path) -> None:
    job = convert(client, config, headers, source, "flac", {"output_filename": "../../etc/My Song"})
    output = job["output"][0]
    assert output["filename"].endswith(".flac") and "/" not in output["filename"]
    assert "My Song" in output["filename"]
    response = client.get(output["uri"].replace("http://127.0.0.1:8000", ""))
    assert "My Song" in response.headers["Content-Disposition"] or "My%20Song" in response.headers[
        "Content-Disposition"]


def test_preset_options_apply_first_and_the_conversion_wins(client: Any, config: Any, headers: dict[str, str],
                                                            source: Path, tmp_path: Path) -> None:
    preset = client.post("/v2/presets", json={"name": "low mono", "target": "mp3", "options": {
        "frequency": 22050, "channels": "mono", "audio_bitrate": 64}}, headers=headers).get_json()
    job = convert(client, config, headers, source, "mp3", {"preset": preset["id"], "channels": "stereo"})
    measured = probe(download(client, job, tmp_path))
    assert (measured["sample_rate"], measured["channels"]) == ("22050", 2)
    job = convert(client, config, headers, source, "wav", {"preset": "telephone"})
    measured = probe(download(client, job, tmp_path))
    assert (measured["sample_rate"], measured["channels"], measured["codec_name"]) == ("8000", 1, "pcm_s16le")


def test_a_preset_deleted_before_the_job_runs_fails_it_clearly(client: Any, config: Any, headers: dict[str, str],
                                                               source: Path) -> None:
    preset = client.post("/v2/presets", json={"name": "gone soon", "target": "mp3", "options": {}},
                         headers=headers).get_json()
    body = {"process": False, "conversion": [{"target": "mp3", "options": {"preset": preset["id"]}}]}
    created = client.post("/v2/jobs", json=body, headers=headers).get_json()
    client.delete(f"/v2/presets/{preset['id']}", headers=headers)
    with source.open("rb") as handle:
        client.post(f"/v2/dl/upload-file/{created['id']}", data={"file": (handle, source.name)},
                    headers={"X-Oc-Token": created["token"]})
    client.patch(f"/v2/jobs/{created['id']}", json={"process": True}, headers=headers)
    run_worker(config)
    job = client.get(f"/v2/jobs/{created['id']}", headers=headers).get_json()
    assert job["status"]["code"] == "failed" and "no longer exists" in job["errors"][0]["message"]


def test_a_bitrate_the_source_rate_cannot_hold_fails_the_job_clearly(client: Any, config: Any,
                                                                     headers: dict[str, str], audio_dir: Path) -> None:
    low = make_audio(audio_dir / "low-rate.wav", seconds=1.0, rate=8000)
    job = convert(client, config, headers, low, "mp3", {"audio_bitrate": 320})  # the source picks 8000 Hz
    assert job["status"]["code"] == "failed"
    assert "320 kbit/s" in job["errors"][0]["message"] and "set frequency" in job["errors"][0]["message"]


def test_a_preset_changed_before_the_job_runs_is_validated_again(client: Any, config: Any, headers: dict[str, str],
                                                                 source: Path) -> None:
    preset = client.post("/v2/presets", json={"name": "changes", "target": "ogg", "options": {}},
                         headers=headers).get_json()
    body = {"process": False, "conversion": [{"target": "mp3", "options": {"preset": preset["id"]}}]}
    created = client.post("/v2/jobs", json=body, headers=headers).get_json()
    changed = client.patch(f"/v2/presets/{preset['id']}", json={"options": {"audio_codec": "opus"}},
                           headers=headers)
    assert changed.status_code == 200, changed.get_json()  # right for ogg, not for the job's mp3
    with source.open("rb") as handle:
        client.post(f"/v2/dl/upload-file/{created['id']}", data={"file": (handle, source.name)},
                    headers={"X-Oc-Token": created["token"]})
    client.patch(f"/v2/jobs/{created['id']}", json={"process": True}, headers=headers)
    run_worker(config)
    job = client.get(f"/v2/jobs/{created['id']}", headers=headers).get_json()
    assert job["status"]["code"] == "failed", job
    message = job["errors"][0]["message"]
    assert "changed" in message and "audio_codec" in message, message


def test_an_input_of_unknown_length_converts_whole_or_fails_at_the_limit(
        monkeypatch: pytest.MonkeyPatch, client: Any, config: Any, headers: dict[str, str], tmp_path: Path) -> None:
    """A live Matroska stream says no length: 5 s converts whole (not "truncated"); with a
    limit of 3 s the job fails instead of being cut there and called completed."""
    live = tmp_path / "live.mkv"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=5", "-c:a", "flac", "-f", "matroska",
                    "-live", "1", str(live)], check=True)
    job = convert(client, config, headers, live, "mp3")
    assert job["status"]["code"] == "completed", job["errors"]
    assert probe(download(client, job, tmp_path))["duration"] == pytest.approx(5.0, abs=0.1)
    with worker_settings(monkeypatch, MAX_DURATION_SECONDS="3"):
        job = convert(client, config, headers, live, "mp3")
    assert job["status"]["code"] == "failed" and "does not say how long" in job["errors"][0]["message"], job


def test_a_file_of_many_streams_is_refused_by_the_jobs_stream_budget(
        monkeypatch: pytest.MonkeyPatch, client: Any, config: Any, headers: dict[str, str], tmp_path: Path) -> None:
    many = tmp_path / "twenty-streams.mka"
    splits = "".join(f"[a{index}]" for index in range(20))
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=0.5", "-filter_complex",
                    f"[0]asplit=20{splits}", *[arg for index in range(20) for arg in ("-map", f"[a{index}]")],
                    "-c:a", "flac", str(many)], check=True)
    job = convert(client, config, headers, many, "mp3", {"allow_multiple_outputs": True})
    assert job["status"]["code"] == "failed" and job["output"] == []
    assert job["errors"][0]["message"] == "The job would convert 20 audio streams; a job may convert at most 16."


def test_a_jobs_outputs_together_stay_within_the_output_limit(
        monkeypatch: pytest.MonkeyPatch, client: Any, config: Any, headers: dict[str, str], source: Path) -> None:
    size = source.stat().st_size
    two = [{"target": "wav"}, {"target": "wav"}]  # each about the size of the source
    with worker_settings(monkeypatch, MAX_OUTPUT_BYTES=str(int(size * 1.5))):
        job = convert(client, config, headers, source, "wav", conversion=two)  # two conversions, not one
    assert job["status"]["code"] == "failed", job
    assert "a job's outputs together" in job["errors"][0]["message"]
    seconds = probe(source)["duration"]
    with worker_settings(monkeypatch, MAX_JOB_SECONDS=str(int(seconds * 1.5))):
        job = convert(client, config, headers, source, "wav", conversion=two)  # two conversions, not one
    assert job["status"]["code"] == "failed", job
    assert "decode more than" in job["errors"][0]["message"]
