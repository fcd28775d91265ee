"""The encoders the targets use, and what each can produce: sample rates, channels, bit
depths and the bitrates its frames can carry (measured on Debian's ffmpeg where noted)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# The seed table's frequency enum plus the high rates File Conversion clients ask for;
# each target keeps the part its encoder can produce.
FREQUENCIES = (1000, 8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 176400, 192000)


@dataclass(frozen=True)
class Codec:
    """One encoder a target can use, and what it can produce."""

    name: str  # the value of the audio_codec option
    encoder: str  # ffmpeg -c:a (lossy codecs and the default depth of lossless ones)
    sample_rates: tuple[int, ...]
    max_channels: int = 8
    # Lossless codecs: bit depth -> (encoder, sample_fmt or None).
    depths: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    bitrates: tuple[int, ...] = ()  # kbit/s, lossy codecs
    default_bitrate: int | None = None
    # audio_vbr true/false -> encoder arguments; None where the encoder has no such switch.
    vbr: dict[bool, tuple[str, ...]] | None = None
    vbr_default: bool = False
    # (rate, channels) -> the kbit/s the encoder really produces at that rate; outside it
    # the encoder would fail or silently clamp. None: every listed bitrate works.
    bitrate_range: Callable[[int, int], tuple[int, int]] | None = None
    quality_args: tuple[str, ...] = ()  # used instead of a bitrate when none is asked for

    def bitrates_for(self, rate: int, channels: int) -> tuple[int, ...]:
        if self.bitrate_range is None:
            return self.bitrates
        low, high = self.bitrate_range(rate, channels)
        return tuple(kbps for kbps in self.bitrates if low <= kbps <= high)

    @property
    def lossless(self) -> bool:
        return bool(self.depths)


ANY_RATE = FREQUENCIES
LAME_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
OPUS_RATES = (48000,)  # Opus files always decode at 48 kHz; that is what ffprobe reports
SPEEX_RATES = (8000, 16000, 32000)
LOSSY_BITRATES = (32, 48, 64, 96, 112, 128, 160, 192, 224, 256, 320)
MP4_ARGS = ("-movflags", "+faststart")



def _lame_range(rate: int, _channels: int) -> tuple[int, int]:
    # MPEG-2.5 (under 16 kHz), MPEG-2 (under 32 kHz) and MPEG-1 frames cap the bitrate.
    return (8, 64) if rate < 16000 else (8, 160) if rate < 32000 else (32, 320)


def _aac_range(rate: int, channels: int) -> tuple[int, int]:
    # An AAC frame holds at most 6144 bits per channel for 1024 samples.
    return 8, 6 * rate * channels // 1000


# What libvorbis accepts as an average bitrate (-b:a), measured on this ffmpeg for each
# rate: (mono, stereo) ranges in kbit/s. Other rates and layouts use its quality mode.
VORBIS_ABR = {
    8000: ((32, 32), (32, 64)), 11025: ((32, 48), (32, 96)), 16000: ((32, 96), (32, 192)),
    22050: ((32, 64), (32, 160)), 24000: ((32, 64), (32, 160)), 32000: ((32, 160), (48, 320)),
    44100: ((32, 224), (48, 320)), 48000: ((32, 224), (48, 320)),
}


def _vorbis_range(rate: int, channels: int) -> tuple[int, int]:
    ranges = VORBIS_ABR.get(rate)
    return ranges[channels - 1] if ranges and channels in (1, 2) else (0, 0)


MP3 = Codec("mp3", "libmp3lame", LAME_RATES, 2, bitrates=LOSSY_BITRATES, default_bitrate=192,
            vbr={False: (), True: ("-abr", "1")}, bitrate_range=_lame_range)
VORBIS = Codec("vorbis", "libvorbis", ANY_RATE, bitrates=LOSSY_BITRATES, bitrate_range=_vorbis_range,
               quality_args=("-q:a", "5"))
OPUS = Codec("opus", "libopus", OPUS_RATES, bitrates=LOSSY_BITRATES[:-1], default_bitrate=128,
             vbr={True: ("-vbr", "on"), False: ("-vbr", "off")}, vbr_default=True)
SPEEX = Codec("speex", "libspeex", SPEEX_RATES, 2)
AAC = Codec("aac", "aac", AAC_RATES, bitrates=LOSSY_BITRATES, default_bitrate=192, bitrate_range=_aac_range)
WMA = Codec("wma", "wmav2", LAME_RATES, 2, bitrates=LOSSY_BITRATES[:9], default_bitrate=128)
FLAC = Codec("flac", "flac", ANY_RATE, depths={16: ("flac", "s16"), 24: ("flac", "s32")})
ALAC = Codec("alac", "alac", ANY_RATE, depths={16: ("alac", "s16p"), 24: ("alac", "s32p")})
WAV_PCM = Codec("pcm", "pcm_s16le", ANY_RATE, depths={
    8: ("pcm_u8", None), 16: ("pcm_s16le", None), 24: ("pcm_s24le", None), 32: ("pcm_s32le", None)})
AIFF_PCM = Codec("pcm", "pcm_s16be", ANY_RATE, depths={
    8: ("pcm_s8", None), 16: ("pcm_s16be", None), 24: ("pcm_s24be", None), 32: ("pcm_s32be", None)})
