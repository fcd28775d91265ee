"""Command lines are compared as lists, without running ffmpeg."""
from __future__ import annotations

from pathlib import Path

import pytest

from jobs_api.catalog import TARGETS
from workers.ffmpeg import FORMAT_WHITELIST, Limits, PlanInvalid, SourceInfo, convert_args, plan_conversion, probe_args

LIMITS = Limits(max_duration=3600, max_output_bytes=1000, max_channels=8, max_sample_rate=192000)
CD = SourceInfo("wav", "pcm_s16le", duration=10.0, sample_rate=44100, channels=2, bits=16, bit_rate=None)


def test_mp3_defaults() -> None:
    plan = plan_conversion(TARGETS["mp3"], {}, CD, LIMITS)
    assert convert_args(Path("/s/in"), Path("/w/out.mp3"), plan, LIMITS) == [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-nostats",
        "-format_whitelist", FORMAT_WHITELIST, "-protocol_whitelist", "file",
        "-i", "file:/s/in", "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-c:a", "libmp3lame", "-b:a", "192k", "-ar", "44100", "-ac", "2",
        "-t", "10", "-fs", "1000", "-f", "mp3", "-progress", "pipe:1", "-y", "file:/w/out.mp3",
    ]


def test_options_become_validated_numbers() -> None:
    options = {"frequency": 48000, "channels": "mono", "start": "00:00:01.5", "end": "00:00:04", "audio_bitdepth": 24}
    plan = plan_conversion(TARGETS["flac"], options, CD, LIMITS)
    args = convert_args(Path("/s/in"), Path("/w/o.flac"), plan, LIMITS)
    assert args[args.index("-ss") + 1] == "1.5" and args.index("-ss") < args.index("-i")
    assert args[args.index("-t") + 1] == "2.5"
    assert args[args.index("-sample_fmt") + 1] == "s32"
    assert args[args.index("-ar") + 1] == "48000" and args[args.index("-ac") + 1] == "1"
    assert "-b:a" not in args


def test_wav_depth_picks_the_codec() -> None:
    assert plan_conversion(TARGETS["wav"], {"audio_bitdepth": 8}, CD, LIMITS).codec == "pcm_u8"
    hires = SourceInfo("flac", "flac", 5.0, 96000, 2, 24, None)
    assert plan_conversion(TARGETS["wav"], {}, hires, LIMITS).codec == "pcm_s24le"
    assert plan_conversion(TARGETS["aiff"], {}, hires, LIMITS).codec == "pcm_s24be"


@pytest.mark.parametrize("target, source_rate, expected", [
    ("mp3", 96000, 48000), ("mp3", 44100, 44100), ("opus", 44100, 48000), ("opus", 16000, 48000),
    ("aac", 192000, 96000), ("flac", 192000, 192000), ("wma", 7000, 8000),
])
def test_default_rate_is_the_source_where_the_target_can_hold_it(target: str, source_rate: int, expected: int) -> None:
    source = SourceInfo("wav", "pcm_s16le", 5.0, source_rate, 2, 16, None)
    assert plan_conversion(TARGETS[target], {}, source, LIMITS).sample_rate == expected


def test_channels_are_capped_by_the_target() -> None:
    surround = SourceInfo("wav", "pcm_s16le", 5.0, 48000, 6, 16, None)
    assert plan_conversion(TARGETS["mp3"], {}, surround, LIMITS).channels == 2
    assert plan_conversion(TARGETS["flac"], {}, surround, LIMITS).channels == 6


def test_duration_is_capped_by_the_limit_and_start_must_be_inside() -> None:
    endless = SourceInfo("wav", "pcm_s16le", 0.0, 48000, 2, 16, None)  # unknown length
    assert plan_conversion(TARGETS["mp3"], {}, endless, LIMITS).duration == 3600
    with pytest.raises(PlanInvalid, match="start"):
        plan_conversion(TARGETS["mp3"], {"start": "00:00:30"}, CD, LIMITS)


def test_probe_uses_the_demuxer_whitelist() -> None:
    args = probe_args(Path("/s/x"))
    assert args[0] == "ffprobe" and args[-1] == "file:/s/x"
    assert args[args.index("-format_whitelist") + 1] == FORMAT_WHITELIST
    assert "hls" not in FORMAT_WHITELIST.split(",") and "concat" not in FORMAT_WHITELIST.split(",")
