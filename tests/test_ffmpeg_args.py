"""Command lines are compared as lists, without running ffmpeg."""
from __future__ import annotations

from dataclasses import astuple, replace
from pathlib import Path

import pytest

from jobs_api.catalog import TARGETS
from workers import loudness
from workers.ffmpeg.commands import FORMAT_WHITELIST, convert_args, tts_args
from workers.ffmpeg.meters import Levels, measure_args, parse_levels
from workers.ffmpeg.plan import Limits, Normalization, PlanInvalid, SourceInfo, plan_conversion, with_tags
from workers.ffmpeg.probe import probe_args
from workers.normalization import Gain, NotMeasurable, gain_filters

LIMITS = Limits(max_duration=3600, max_output_bytes=1000, max_channels=8, max_sample_rate=192000)
CD = SourceInfo("wav", "pcm_s16le", duration=10.0, sample_rate=44100, channels=2, bits=16, bit_rate=None)


def test_a_measured_encode_tees_the_stream_to_the_meter_under_a_file_size_limit() -> None:
    plan = plan_conversion(TARGETS["m4a"], {}, CD, LIMITS)
    args = convert_args(Path("/s/in"), Path("/w/o.m4a"), plan, LIMITS, copy_fd=7)
    assert args[:4] == ["prlimit", "--fsize=1000", "--", "ffmpeg"]  # tee ignores -fs
    assert "-fs" not in args
    assert args[-3:] == ["-f", "tee", "[f=ipod:movflags=+faststart]file:/w/o.m4a|[f=matroska]pipe:7"]


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


# Options that change the command ------------------------------------------------------

EBU = Normalization("ebu", level=-16.0, true_peak=-1.0, loudness_range=7.0)


def test_vbr_and_codec_choice_become_encoder_arguments() -> None:
    abr = plan_conversion(TARGETS["mp3"], {"audio_vbr": True, "audio_bitrate": 128}, CD, LIMITS)
    args = convert_args(Path("/s/in"), Path("/w/o.mp3"), abr, LIMITS)
    assert args[args.index("-b:a") + 1] == "128k" and args[args.index("-abr") + 1] == "1"
    cbr = plan_conversion(TARGETS["opus"], {"audio_vbr": False}, CD, LIMITS)
    args = convert_args(Path("/s/in"), Path("/w/o.opus"), cbr, LIMITS)
    assert args[args.index("-vbr"):args.index("-vbr") + 4] == ["-vbr", "off", "-ar", "48000"]
    speex = plan_conversion(TARGETS["ogg"], {"audio_codec": "speex", "frequency": 16000}, CD, LIMITS)
    assert speex.codec == "libspeex" and speex.bitrate_k is None


def test_vorbis_without_a_bitrate_uses_its_quality_mode() -> None:
    plan = plan_conversion(TARGETS["ogg"], {}, CD, LIMITS)
    args = convert_args(Path("/s/in"), Path("/w/o.ogg"), plan, LIMITS)
    assert "-b:a" not in args and args[args.index("-q:a") + 1] == "5"


def test_the_default_bitrate_fits_the_rate_and_an_asked_one_must() -> None:
    phone = SourceInfo("wav", "pcm_s16le", 5.0, 8000, 1, 16, None)
    assert plan_conversion(TARGETS["mp3"], {}, phone, LIMITS).bitrate_k == 64  # MPEG-2.5 caps at 64
    with pytest.raises(PlanInvalid, match="320 kbit/s"):
        plan_conversion(TARGETS["mp3"], {"audio_bitrate": 320}, phone, LIMITS)


def test_tags_become_metadata_arguments() -> None:
    plan = with_tags(plan_conversion(TARGETS["flac"], {}, CD, LIMITS),
                     {"title": "A=B", "author": "Me", "clear_all": True})
    args = convert_args(Path("/s/in"), Path("/w/o.flac"), plan, LIMITS)
    assert args[args.index("-map_metadata") + 1] == "-1"
    assert [args[i + 1] for i, arg in enumerate(args) if arg == "-metadata"] == ["title=A=B", "artist=Me"]
    adts = with_tags(plan_conversion(TARGETS["aac"], {}, CD, LIMITS), {"title": "x"})
    assert "-metadata" not in convert_args(Path("/s/in"), Path("/w/o.aac"), adts, LIMITS)


def test_measuring_decodes_the_planned_part_in_the_output_shape() -> None:
    plan = plan_conversion(TARGETS["mp3"], {"start": "00:00:02", "end": "00:00:05", "channels": "mono",
                                            "normalize": True}, CD, LIMITS)
    args = measure_args(Path("/s/in"), ("ebu",), plan)
    assert args[args.index("-ss") + 1] == "2" and args[args.index("-t") + 1] == "3"
    assert args[args.index("-af") + 1] == (
        "aformat=sample_rates=44100:channel_layouts=mono,ebur128=peak=true:framelog=info")  # 100 ms reports
    assert args[-3:] == ["-f", "null", "-"] and "-format_whitelist" in args


def test_gain_is_linear_when_the_true_peak_allows_it() -> None:
    plan = plan_conversion(TARGETS["wav"], {"normalize": True}, CD, LIMITS)
    levels = Levels(integrated=-23.0, loudness_range=4.0, true_peak=-9.0)
    assert gain_filters(EBU, levels, plan) == Gain(("volume=7.00dB",), "linear")
    assert gain_filters(EBU, levels, plan, correction=-0.4) == Gain(("volume=6.60dB",), "linear")


def test_gain_before_a_lossy_encode_leaves_room_for_its_overshoot() -> None:
    """A lossy encoder raises the true peak a little: its gain stays linear only while the
    peak lands the margin below the limit; a lossless target may reach the limit itself."""
    levels = Levels(integrated=-23.0, loudness_range=4.0, true_peak=-8.3)  # -1.3 dBTP after +7 dB; the limit is -1
    for target, method in (("wav", "linear"), ("flac", "linear"), ("mp3", "limited"), ("aac", "limited")):
        plan = plan_conversion(TARGETS[target], {"normalize": True}, CD, LIMITS)
        assert gain_filters(EBU, levels, plan).method == method, target


def test_gain_over_the_true_peak_is_limited_after_oversampling() -> None:
    plan = plan_conversion(TARGETS["wav"], {"normalize": True}, CD, LIMITS)
    levels = Levels(integrated=-23.0, loudness_range=4.0, true_peak=-3.0)
    filters, method, _ = astuple(gain_filters(EBU, levels, plan))
    assert method == "limited"
    assert filters[0] == "volume=7.00dB" and filters[1] == "aresample=176400" and filters[-1] == "aresample=44100"
    assert filters[2].startswith("alimiter=limit=0.84140:")  # -1.5 dB: the limit less the margin
    assert "level=false" in filters[2] and "latency=true" in filters[2]


def frames_of(*passages: tuple[float, float, int]) -> loudness.Frames:
    """100 ms reports of passages of (loudness LUFS, true peak dBTP, frames), as if logged."""
    frames = loudness.Frames()
    for level, peak, count in passages:
        frames.momentary.extend([level] * count)
        frames.short_term.extend([level] * count)
        frames.true_peak.extend([peak] * count)
    return frames


def test_a_wide_loudness_range_rides_the_gain() -> None:
    plan = plan_conversion(TARGETS["wav"], {"normalize": True}, CD, LIMITS)
    levels = Levels(integrated=-20.0, loudness_range=15.0, true_peak=-10.0)
    frames = frames_of((-15.0, -10.0, 50), (-35.0, -30.0, 50))
    gain = gain_filters(EBU, levels, plan, frames=frames)
    assert gain.method == "dynamic" and gain.filters == ()  # peaks stay under the limit: no limiter
    assert len(gain.curve) == 100 and gain.curve[0] < gain.curve[-1]  # the quiet half is lifted more
    peaky = frames_of((-15.0, -1.0, 50), (-35.0, -30.0, 50))
    assert gain_filters(EBU, levels, plan, frames=peaky).filters[0] == "aresample=176400"
    short = plan_conversion(TARGETS["wav"], {"normalize": True, "end": "00:00:02"}, CD, LIMITS)
    assert gain_filters(EBU, levels, short, frames=frames).method == "linear"  # too short: range kept
    assert gain_filters(EBU, levels, plan).method == "linear"  # no 100 ms reports


def test_a_gain_curve_is_multiplied_in_before_the_filters() -> None:
    plan = replace(plan_conversion(TARGETS["flac"], {"start": "00:00:01"}, CD, LIMITS),
                   envelope=Path("/w/gain.f32"), filters=("aresample=176400", "alimiter=limit=0.8", "aresample=44100"))
    args = convert_args(Path("/s/in"), Path("/w/o.flac"), plan, LIMITS)
    assert args[args.index("-ss") + 2:args.index("-ss") + 4] == ["-i", "file:/s/in"]  # the trim is the audio's
    assert args[args.index("-f") + 1] == "f32le" and args[args.index("file:/w/gain.f32") - 1] == "-i"
    assert args[args.index("-filter_complex") + 1] == (
        "[0:a:0]aformat=sample_rates=44100:channel_layouts=stereo[audio];"
        "[1:a]aresample=44100,pan=stereo|c0=c0|c1=c0[gain];"
        "[audio][gain]amultiply,aresample=176400,alimiter=limit=0.8,aresample=44100[out]")
    assert args[args.index("-map") + 1] == "[out]" and args.count("-map") == 1 and "-af" not in args
    envelope = args.index("file:/w/gain.f32")
    assert args[envelope - 11:envelope - 7] == ["-format_whitelist", "f32le", "-protocol_whitelist", "file"]


def test_rms_and_peak_gains() -> None:
    plan = plan_conversion(TARGETS["wav"], {"normalize": True}, CD, LIMITS)
    levels = Levels(peak=-6.0, rms=-20.0)
    assert gain_filters(Normalization("peak", -1.0, -2.0, 7.0), levels, plan) == Gain(("volume=5.00dB",), "linear")
    assert gain_filters(Normalization("rms", -18.0, -2.0, 7.0), levels, plan) == Gain(("volume=2.00dB",), "linear")
    filters, method, _ = astuple(gain_filters(Normalization("rms", -10.0, -2.0, 7.0), levels, plan))
    assert method == "limited" and filters[0] == "volume=10.00dB"


def test_silence_cannot_be_normalized() -> None:
    plan = plan_conversion(TARGETS["wav"], {"normalize": True}, CD, LIMITS)
    with pytest.raises(NotMeasurable):
        gain_filters(EBU, Levels(integrated=-70.0, true_peak=None), plan)
    with pytest.raises(NotMeasurable):
        gain_filters(Normalization("peak", -1.0, -2.0, 7.0), Levels(peak=None, rms=None), plan)


def test_meter_summaries_are_parsed() -> None:
    log = """[Parsed_astats_1 @ 0x1] Overall
[Parsed_astats_1 @ 0x1] Peak level dB: -3.250000
[Parsed_astats_1 @ 0x1] RMS level dB: -18.500000
[Parsed_ebur128_0 @ 0x2] Summary:

  Integrated loudness:
    I:         -19.2 LUFS
    Threshold: -29.2 LUFS

  Loudness range:
    LRA:         6.1 LU
    Threshold: -39.2 LUFS

  True peak:
    Peak:       -1.4 dBFS
"""
    assert parse_levels(log) == Levels(integrated=-19.2, loudness_range=6.1, true_peak=-1.4,
                                       peak=-3.25, rms=-18.5)
    assert parse_levels("True peak:\n    Peak:       -inf dBFS\n").true_peak is None


def test_speech_is_read_as_plain_text() -> None:
    assert tts_args(Path("/s/t"), Path("/w/s.wav"), "de", 10) == [
        "prlimit", "--fsize=441044", "--", "espeak-ng", "-v", "de", "-w", "/w/s.wav", "-f", "/s/t"]
