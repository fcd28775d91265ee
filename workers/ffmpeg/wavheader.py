"""What ffprobe would say about a plain PCM WAV file, read from its header in Python.

Starting ffprobe costs about as much as encoding a short clip: it loads all of ffmpeg's
libraries (bench/small_file.py). WAV is the most common input and its header says everything
a plan needs, so such files skip ffprobe. Anything unusual (no RIFF/WAVE, a codec other than
integer or float PCM, extensible headers with padded samples, a data size that is unset or
larger than the file) returns None and goes to ffprobe. ffmpeg still reads the file
with the demuxer whitelist, so this changes what is measured, never what is accepted.
"""
from __future__ import annotations

import struct
from pathlib import Path

from workers.ffmpeg.plan import SourceInfo

PCM, FLOAT, EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
CODECS = {(PCM, 8): "pcm_u8", (PCM, 16): "pcm_s16le", (PCM, 24): "pcm_s24le", (PCM, 32): "pcm_s32le",
          (FLOAT, 32): "pcm_f32le", (FLOAT, 64): "pcm_f64le"}
MAX_CHUNKS = 64  # chunks before "data" worth walking; more is unusual enough for ffprobe


def read(path: Path, arriving: bool = False) -> SourceInfo | None:
    """The file's one audio stream as ffprobe reports it, or None to ask ffprobe. `arriving`:
    the file is still being written, so its data may not all be there yet (workers/upload_conversion.py)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        riff = handle.read(12)
        if riff[:4] != b"RIFF" or riff[8:] != b"WAVE":
            return None
        fmt = None
        for _ in range(MAX_CHUNKS):
            header = handle.read(8)
            if len(header) < 8:
                return None
            name, length = header[:4], struct.unpack("<I", header[4:])[0]
            if name == b"fmt ":
                fmt = handle.read(min(length, 40))
                handle.seek(length - len(fmt) + (length & 1), 1)
            elif name == b"data":
                if fmt is None or length in (0, 0xFFFFFFFF) or (handle.tell() + length > size and not arriving):
                    return None
                return _stream(fmt, length)
            else:
                handle.seek(length + (length & 1), 1)
    return None


def _stream(fmt: bytes, data_bytes: int) -> SourceInfo | None:
    if len(fmt) < 16:
        return None
    code, channels, rate, _byte_rate, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if code == EXTENSIBLE:
        if len(fmt) < 40 or struct.unpack("<H", fmt[18:20])[0] != bits:
            return None  # padded samples (20 bits in 24): ffprobe knows how ffmpeg reads them
        code = struct.unpack("<H", fmt[24:26])[0]
    codec = CODECS.get((code, bits))
    if codec is None or not channels or not rate or block_align != channels * bits // 8:
        return None
    return SourceInfo(
        format_name="wav", codec=codec, duration=data_bytes // block_align / rate, sample_rate=rate,
        channels=channels, bits=bits, bit_rate=rate * block_align * 8,
    )
