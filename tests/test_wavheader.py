"""The WAV header reader says what ffprobe says, and leaves every unusual file to ffprobe."""
from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import TEST_RUNS

from workers.ffmpeg import runner, wavheader
from workers.ffmpeg.plan import SourceInfo
from workers.ffmpeg.probe import parse_probe, probe_args


def make(path: Path, *args: str, seconds: float = 1.5, rate: int = 44100) -> Path:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency=440:sample_rate={rate}:duration={seconds}", *args, str(path)], check=True)
    return path


def probed(path: Path) -> SourceInfo:
    return parse_probe(runner.run(probe_args(path), sees=TEST_RUNS, deadline_seconds=30))


@pytest.mark.parametrize("args", [
    ("-ac", "2", "-c:a", "pcm_s16le"),
    ("-ac", "1", "-c:a", "pcm_s24le"),  # extensible header (more than 16 bits)
    ("-ac", "6", "-c:a", "pcm_s32le"),  # extensible, six channels
    ("-ac", "2", "-c:a", "pcm_f32le"),
    ("-ac", "2", "-c:a", "pcm_f64le"),
    ("-ac", "1", "-c:a", "pcm_u8"),
    ("-ac", "2", "-ar", "96000", "-c:a", "pcm_s16le"),
    ("-ac", "2", "-c:a", "pcm_s16le", "-metadata", "title=with a LIST chunk before the data"),
])
def test_reads_what_ffprobe_reads(tmp_path: Path, args: tuple[str, ...]) -> None:
    path = make(tmp_path / "in.wav", *args, seconds=1.2345)
    read, expected = wavheader.read(path), probed(path)
    assert read is not None
    assert read.duration == pytest.approx(expected.duration, abs=1e-4)
    assert replace(read, duration=0) == replace(expected, duration=0)


def test_files_it_does_not_know_go_to_ffprobe(tmp_path: Path) -> None:
    mp3 = make(tmp_path / "in.mp3", "-c:a", "libmp3lame")
    named_wav = tmp_path / "mp3-named.wav"
    named_wav.write_bytes(mp3.read_bytes())
    adpcm = make(tmp_path / "adpcm.wav", "-c:a", "adpcm_ms")
    alaw = make(tmp_path / "alaw.wav", "-c:a", "pcm_alaw")  # 8 bits a sample like pcm_u8, another codec
    streamed = tmp_path / "streamed.wav"  # written to a pipe: the data size is left unset
    streamed.write_bytes(subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "sine=duration=1",
         "-c:a", "pcm_s16le", "-f", "wav", "-"], check=True, capture_output=True).stdout)
    whole = make(tmp_path / "whole.wav", "-c:a", "pcm_s16le")
    truncated = tmp_path / "truncated.wav"  # the header promises more data than the file has
    truncated.write_bytes(whole.read_bytes()[:5000])
    padded = make(tmp_path / "padded.wav", "-ac", "1", "-c:a", "pcm_s24le")  # extensible: fmt data at byte 20
    header = bytearray(padded.read_bytes())
    assert header[12:16] == b"fmt " and header[20:22] == b"\xfe\xff"
    header[38:40] = (20).to_bytes(2, "little")  # 20 valid bits in 24-bit samples
    padded.write_bytes(header)
    playlist = tmp_path / "playlist.wav"
    playlist.write_text("#EXTM3U\n#EXTINF:10,\nfile:/etc/passwd\n")
    empty = tmp_path / "empty.wav"
    empty.touch()
    for path in (named_wav, adpcm, alaw, padded, streamed, truncated, playlist, empty):
        assert wavheader.read(path) is None, path.name
