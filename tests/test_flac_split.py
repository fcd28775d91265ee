"""A FLAC encode in two halves (workers/ffmpeg/flac_split.py): the joined file is, byte for
byte, the file one ffmpeg run makes of the same upload; anything unexpected is refused."""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import make_audio

from jobs_api.catalog import TARGETS
from jobs_api.storage import Storage
from workers import upload_conversion
from workers.ffmpeg import flac_split
from workers.ffmpeg.plan import Limits, plan_conversion

LIMITS = Limits(max_duration=3600, max_output_bytes=256 * 1024 * 1024, max_channels=8, max_sample_rate=192000)
JOB = "5d7e1c2a-3b4f-4e6d-8a9b-0c1d2e3f4a5b"


@pytest.fixture()
def storage(tmp_path: Path) -> Storage:
    storage = Storage(tmp_path / "storage")
    storage.ensure()
    return storage


def noisy_wav(path: Path, seconds: float, rate: int, channels: int, extra: list[str] | None = None) -> Path:
    """Music-like content: a rising tone under pink noise, so frames are large and varied."""
    lavfi = (f"sine=frequency=220:beep_factor=2:sample_rate={rate}:duration={seconds}[tone];"
             f"anoisesrc=color=pink:amplitude=0.2:seed=7:sample_rate={rate}:duration={seconds}[noise];"
             "[tone][noise]amix=inputs=2")
    return make_audio(path, seconds, rate, channels, extra, source=lavfi)


def convert_early(storage: Storage, wav: Path, monkeypatch: pytest.MonkeyPatch, split: bool) -> bytes:
    """The early conversion of `wav` arriving in pieces, to FLAC; the output's bytes."""
    monkeypatch.setenv(flac_split.SWITCH, "1" if split else "0")
    content = wav.read_bytes()
    incoming = storage.incoming / f"tmp{'split' if split else 'whole'}"
    incoming.write_bytes(content[:1_000_000])
    arrival = upload_conversion.Arrival.open(storage, incoming.name)
    assert arrival is not None

    def api() -> None:  # the rest in pieces, then adopted into the job's inputs
        for at in range(1_000_000, len(content), 4_000_000):
            time.sleep(0.01)
            with incoming.open("ab") as handle:
                handle.write(content[at:at + 4_000_000])
        os.replace(incoming, storage.incoming / f"adopted-{incoming.name}")

    writer = threading.Thread(target=api)
    with arrival:
        source = arrival.source()
        assert source is not None
        plan = plan_conversion(TARGETS["flac"], {}, source, LIMITS)
        assert upload_conversion._in_halves(arrival, plan) is split
        writer.start()
        early = upload_conversion.UploadConversion(storage, JOB, LIMITS, 60)
        assert early.convert("conversion-1", arrival, plan, lambda: False) == "converted"
    writer.join()
    output = early.folder / "output.flac"
    made = output.read_bytes()
    shutil.rmtree(early.folder)
    return made


@pytest.mark.parametrize("seconds, rate, channels, extra", [
    (61.3, 44100, 2, None),  # the last frame is short
    (58.0, 48000, 1, ["-c:a", "pcm_s24le"]),
    (67.0, 96000, 6, None),  # another block size (8192), and the halves' frame numbers take more bytes
])
def test_the_halves_joined_are_the_file_one_ffmpeg_run_makes(
        storage: Storage, audio_dir: Path, monkeypatch: pytest.MonkeyPatch,
        seconds: float, rate: int, channels: int, extra: list[str] | None) -> None:
    wav = noisy_wav(audio_dir / f"split-{rate}-{channels}.wav", seconds, rate, channels, extra)
    split = convert_early(storage, wav, monkeypatch, split=True)
    assert split == convert_early(storage, wav, monkeypatch, split=False)
    assert split[:4] == b"fLaC" and len(split) > 1_000_000


def test_a_short_file_or_a_changed_one_is_encoded_in_one_run(audio_dir: Path, storage: Storage) -> None:
    long = noisy_wav(audio_dir / "split-long.wav", 60.0, 44100, 2)
    short = make_audio(audio_dir / "split-short.wav", seconds=20.0)
    for wav, target, options, halves in [(long, "flac", {}, True), (short, "flac", {}, False),
                                         (long, "mp3", {}, False), (long, "flac", {"frequency": 48000}, False),
                                         (long, "flac", {"channels": "mono"}, False),
                                         (long, "flac", {"audio_bitdepth": 24}, False),
                                         (long, "flac", {"start": "00:00:01"}, False),
                                         (long, "flac", {"end": "00:00:59"}, False),
                                         (long, "flac", {"normalize": True}, False)]:
        incoming = storage.incoming / "tmpcheck"
        shutil.copy(wav, incoming)
        arrival = upload_conversion.Arrival.open(storage, incoming.name)
        assert arrival is not None
        with arrival:
            source = arrival.source()
            assert source is not None
            plan = plan_conversion(TARGETS[target], options, source, LIMITS)
            assert upload_conversion._in_halves(arrival, plan) is halves, (wav.name, target, options)


@pytest.fixture(scope="module")
def half(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ffmpeg encode of whole frames only (4,608 samples each at 44.1 kHz)."""
    folder = tmp_path_factory.mktemp("half")
    wav = noisy_wav(folder / "half.wav", 600 * 4608 / 44100, 44100, 2)
    out = folder / "half.flac"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(wav), str(out)], check=True)
    return out


def test_joined_halves_decode_without_an_error(half: Path, tmp_path: Path) -> None:
    first = tmp_path / "twice.flac"
    shutil.copy(half, first)
    flac_split.join(first, half, bytes(16))
    decoded = subprocess.run(["ffmpeg", "-hide_banner", "-v", "error", "-err_detect", "crccheck", "-i", str(first),
                              "-f", "s16le", "-"], capture_output=True, check=True)  # CRC errors on stderr
    assert decoded.stderr == b"" and len(decoded.stdout) == 2 * 600 * 4608 * 4
    assert flac_split.StreamInfo.read(first.read_bytes()[:8192]).samples == 2 * 600 * 4608


@pytest.mark.parametrize("damage", ["blocking", "number", "crc8"])
def test_a_damaged_second_half_is_refused_and_the_first_left_as_it_was(
        half: Path, tmp_path: Path, damage: str) -> None:
    first = tmp_path / "first.flac"
    shutil.copy(half, first)
    before = first.read_bytes()
    damaged = bytearray(before)
    info = flac_split.StreamInfo.read(before)
    frame = damaged.find(flac_split.SYNC, info.frames_at)
    while damaged[frame + 4:frame + 6] != flac_split.coded_number(300):  # frame 300's header
        frame = damaged.find(flac_split.SYNC, frame + 1)
    damaged[frame + {"blocking": 1, "number": 5, "crc8": 6}[damage]] ^= 0x01
    second = tmp_path / "second.flac"
    second.write_bytes(bytes(damaged))
    with pytest.raises(flac_split.NotJoinable):
        flac_split.join(first, second, bytes(16))
    assert first.read_bytes() == before


@pytest.mark.parametrize("value", [0, 0x7F, 0x80, 0x7FF, 0x800, 0xD7FF, 0xE000, 0xFFFF, 0x10000, 0x10FFFF])
def test_frame_numbers_are_coded_as_utf8_codes_them(value: int) -> None:
    assert flac_split.coded_number(value) == chr(value).encode("utf-8")
