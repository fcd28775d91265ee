"""A FLAC encode in two halves on two cores, joined into the file one ffmpeg run makes.

Fenced cleverness, for a FLAC conversion of a plain PCM WAV that changes nothing but the
container (workers/upload_conversion.py). ffmpeg's FLAC encoder uses one core, and on the
official SDK's path the encode is most of the job's time (issue 29, bench/RESULTS.md). Two
ffmpeg runs, each given one half of the samples, cut at a multiple of the block size, make the
same frames as one run but for the second half's frame numbers, which start again at 0. This
module renumbers them, fixes each changed header's CRC-8 and each frame's CRC-16 (a CRC is
linear: the new one is the old one plus the CRC of the header's change, carried over the rest
of the frame), and writes the first half's STREAMINFO again for the whole stream: its length,
its smallest and largest frames, and the MD5 of all its samples, which the caller computes.

It relies on ffmpeg 5.1's FLAC encoder coding each frame from that frame's samples alone with
a fixed block size, and on its muxer writing STREAMINFO as the first metadata block; both are
checked on every join (a block size that does not divide the cut, a frame that is not where
the next one must begin: `NotJoinable`), and tests/test_flac_split.py compares the joined file
byte for byte with one ffmpeg run. `FLAC_SPLIT_ENCODE=0` encodes in one run.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

SWITCH = "FLAC_SPLIT_ENCODE"
# Every block size ffmpeg's encoder chooses (192 or 256 times a power of two, up to 32768)
# divides this many samples, so a cut at a multiple of it ends a frame whatever it chose.
CUT_MULTIPLE = 9 * 32768
MIN_SAMPLES = 8 * CUT_MULTIPLE  # below about a minute, two processes cost more than they win
SYNC = b"\xff\xf8"  # frame sync code and a fixed block size
STREAMINFO_AT = 8  # after "fLaC" and the block's own header
CRC8_POLY, CRC16_POLY = 0x07, 0x8005


class NotJoinable(Exception):
    """The halves are not what this module expects; the caller encodes in one run instead."""


def cut(samples: int) -> int | None:
    """Where to cut a stream of `samples` samples (per channel), or None not to."""
    if samples < MIN_SAMPLES:
        return None
    return samples // 2 // CUT_MULTIPLE * CUT_MULTIPLE


def _tables() -> tuple[list[int], list[int]]:
    crc8, crc16 = [], []
    for byte in range(256):
        small, large = byte, byte << 8
        for _ in range(8):
            small = (small << 1 ^ CRC8_POLY if small & 0x80 else small << 1) & 0xFF
            large = (large << 1 ^ CRC16_POLY if large & 0x8000 else large << 1) & 0xFFFF
        crc8.append(small)
        crc16.append(large)
    return crc8, crc16


CRC8, CRC16 = _tables()


def crc8(data: bytes) -> int:
    value = 0
    for byte in data:
        value = CRC8[value ^ byte]
    return value


def crc16(data: bytes, value: int = 0) -> int:
    for byte in data:
        value = (value << 8 & 0xFFFF) ^ CRC16[value >> 8 ^ byte]
    return value


def _times(a: int, b: int) -> int:
    """a times b modulo FLAC's CRC-16 polynomial (both 16-bit remainders)."""
    product = 0
    for bit in range(16):
        if b >> bit & 1:
            product ^= a << bit
    for bit in range(30, 15, -1):
        if product >> bit & 1:
            product ^= (0x10000 | CRC16_POLY) << (bit - 16)
    return product


def coded_number(value: int) -> bytes:
    """A frame number as FLAC codes it (UTF-8's scheme, extended to 36 bits)."""
    if value < 0x80:
        return bytes([value])
    length = 2
    while value >= 1 << (5 * length + 1):
        length += 1
    lead = (0xFF00 >> length & 0xFF) | value >> 6 * (length - 1)
    return bytes([lead, *(0x80 | value >> 6 * shift & 0x3F for shift in range(length - 2, -1, -1))])


@dataclass
class StreamInfo:
    block_size: int
    smallest_frame: int
    largest_frame: int
    packed: int  # sample rate, channels, bits per sample and the number of samples, as stored
    frames_at: int  # where the first frame begins

    @classmethod
    def read(cls, head: bytes) -> StreamInfo:
        if head[:4] != b"fLaC" or head[4] & 0x7F != 0:
            raise NotJoinable("no STREAMINFO first")
        block_size, largest_block = struct.unpack(">HH", head[8:12])
        if block_size != largest_block:
            raise NotJoinable("blocks of more than one size")
        at = 4
        while True:  # the metadata blocks: a header byte (last-block flag, type), a 24-bit length
            if at + 4 > len(head):
                raise NotJoinable("metadata longer than expected")
            flags, length = head[at], int.from_bytes(head[at + 1:at + 4], "big")
            at += 4 + length
            if flags & 0x80:
                break
        return cls(block_size, int.from_bytes(head[12:15], "big"), int.from_bytes(head[15:18], "big"),
                   int.from_bytes(head[18:26], "big"), at)

    @property
    def samples(self) -> int:
        return self.packed & (1 << 36) - 1

    def encoded(self, samples: int, md5: bytes) -> bytes:
        return (struct.pack(">HH", self.block_size, self.block_size) + self.smallest_frame.to_bytes(3, "big")
                + self.largest_frame.to_bytes(3, "big") + (self.packed >> 36 << 36 | samples).to_bytes(8, "big") + md5)


def join(first: Path, second: Path, md5: bytes) -> None:
    """Append `second`'s frames to `first`, renumbered, and make `first`'s STREAMINFO the whole
    stream's, with `md5` the MD5 of all its samples. NotJoinable leaves `first` unchanged."""
    with first.open("rb") as handle:
        head = StreamInfo.read(handle.read(64 * 1024))
    data = second.read_bytes()
    tail = StreamInfo.read(data)
    if tail.block_size != head.block_size or tail.packed >> 36 != head.packed >> 36:
        raise NotJoinable("the halves differ in block size or format")
    if head.samples % head.block_size:
        raise NotJoinable("the cut is not at the end of a frame")
    pieces, smallest, largest = _renumbered(data, tail, head.samples // head.block_size)
    head.smallest_frame, head.largest_frame = min(head.smallest_frame, smallest), max(head.largest_frame, largest)
    with first.open("r+b") as handle:
        handle.seek(0, 2)
        handle.write(b"".join(pieces))
        handle.seek(STREAMINFO_AT)
        handle.write(head.encoded(head.samples + tail.samples, md5))


def _renumbered(data: bytes, info: StreamInfo, offset: int) -> tuple[list[bytes | memoryview], int, int]:
    """The frames of `data`, each numbered `offset` more; and the smallest and largest frame."""
    frames = -(-info.samples // info.block_size)
    view, pieces, sizes = memoryview(data), list[bytes | memoryview](), list[int]()
    carry = [1]  # carry[n]: x to the power 8n, modulo the CRC-16 polynomial
    at = info.frames_at
    form = Header(data[at + 2], data[at + 3] & 0x0F)
    header_end = form.end(data, at, 0, frames)
    if header_end is None:
        raise NotJoinable("no frame where the frames begin")
    for number in range(frames):
        end, next_header_end = (len(data), 0) if number == frames - 1 else form.next(data, header_end, number + 1,
                                                                                        frames)
        header = data[at:header_end]
        new_header = header[:4] + coded_number(number + offset) + header[4 + len(coded_number(number)):-1]
        new_header += bytes([crc8(new_header)])
        rest = end - 2 - header_end
        while len(carry) <= rest:
            carry.append((carry[-1] << 8 & 0xFFFF) ^ CRC16[carry[-1] >> 8])
        change = crc16(header) ^ crc16(new_header)
        frame_crc = int.from_bytes(data[end - 2:end], "big") ^ _times(change, carry[rest])
        pieces += [new_header, view[header_end:end - 2], frame_crc.to_bytes(2, "big")]
        sizes.append(len(new_header) + rest + 2)
        at, header_end = end, next_header_end
    return pieces, min(sizes), max(sizes)


@dataclass
class Header:
    """What every frame header of one encode holds but its channel coding and number: the
    block size and sample rate codes (`sizes`; the last frame may code its block size
    explicitly), the sample size and reserved bit (`depth`)."""

    sizes: int
    depth: int

    def end(self, data: bytes, at: int, number: int, frames: int) -> int | None:
        """Where the header of frame `number` at `at` ends (after its CRC-8); None if `at` does
        not hold that header. Together, the sync code, the fixed codes, the number and the CRC-8
        leave a chance of about 2 ** -46 that compressed data looks like the header."""
        if at + 4 > len(data):
            return None
        sizes, channels = data[at + 2], data[at + 3]
        last_sizes = sizes & 0x0F | 0x60, sizes & 0x0F | 0x70
        if (data[at:at + 2] != SYNC or channels & 0x0F != self.depth or channels >> 4 > 10
                or not (sizes == self.sizes or number == frames - 1 and sizes in last_sizes)):
            return None
        coded = coded_number(number)
        end = at + 4 + len(coded)
        if data[at + 4:end] != coded:
            return None
        end += {6: 1, 7: 2}.get(sizes >> 4, 0) + {12: 1, 13: 2, 14: 2}.get(sizes & 0x0F, 0)
        return end + 1 if end < len(data) and crc8(data[at:end]) == data[end] else None

    def next(self, data: bytes, after: int, number: int, frames: int) -> tuple[int, int]:
        """Where frame `number` begins, the first place past `after` that holds its header, and
        where its header ends."""
        start = SYNC + bytes([self.sizes]) if number < frames - 1 else SYNC
        at = data.find(start, after)
        while at >= 0:
            end = self.end(data, at, number, frames)
            if end is not None:
                return at, end
            at = data.find(start, at + 1)
        raise NotJoinable(f"no frame {number}")
