"""MP4 files of any length, made from the bundled 5 s sample by rewriting its sample tables.

fal bills video on the length of the clip it returns (e.g. 5.008 s for a 5 s
request), so an emulated output has to really be that long.  Re-encoding
needs a video codec; instead the sample's one group of pictures (it starts
with its only keyframe) is played several times over by pointing the MP4
sample tables at the same coded frames again, and the frame durations are
stretched to the exact length in milliseconds.  Only the ``moov`` box changes.
"""

from __future__ import annotations

import functools
import struct
from decimal import ROUND_HALF_UP, Decimal

from falwrap.testing.media import sample_mp4

__all__ = ["mp4_duration", "mp4_of_length"]

#: Boxes that only hold other boxes (ISO/IEC 14496-12); everything else is kept as raw bytes.
_CONTAINERS = frozenset({b"moov", b"trak", b"edts", b"mdia", b"minf", b"dinf", b"stbl"})

#: Media time unit of the rewritten track: milliseconds, so lengths like 5.008 s are exact.
_TIMESCALE = 1000

#: Length of the bundled sample in seconds: one repetition of its group of pictures.
_SAMPLE_SECONDS = 5

Box = tuple[bytes, "bytes | list[Box]"]


def _parse(data: bytes, start: int, end: int) -> list[Box]:
    boxes: list[Box] = []
    offset = start
    while offset < end:
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        body_start = offset + 8
        if kind in _CONTAINERS:
            boxes.append((kind, _parse(data, body_start, offset + size)))
        else:
            boxes.append((kind, data[body_start : offset + size]))
        offset += size
    return boxes


def _serialize(boxes: list[Box]) -> bytes:
    out = bytearray()
    for kind, body in boxes:
        payload = body if isinstance(body, bytes) else _serialize(body)
        out += struct.pack(">I4s", len(payload) + 8, kind) + payload
    return bytes(out)


def _find(boxes: list[Box], *path: bytes) -> bytes | list[Box]:
    kind, rest = path[0], path[1:]
    for name, body in boxes:
        if name == kind:
            if not rest:
                return body
            assert isinstance(body, list)
            return _find(body, *rest)
    msg = f"sample MP4 has no {b'/'.join(path).decode()} box"
    raise ValueError(msg)


def _replace(boxes: list[Box], path: tuple[bytes, ...], body: bytes) -> list[Box]:
    kind, rest = path[0], path[1:]
    result: list[Box] = []
    for name, old in boxes:
        if name == kind:
            new: bytes | list[Box] = body if not rest else _replace(old, rest, body)  # type: ignore[arg-type]
            result.append((name, new))
        else:
            result.append((name, old))
    return result


def _full_box(payload: bytes) -> bytes:
    return b"\x00\x00\x00\x00" + payload  # version 0, no flags


@functools.lru_cache(maxsize=16)
def mp4_of_length(seconds: Decimal) -> bytes:
    """A valid H.264 MP4 (160x90) that plays for exactly ``seconds``, to the millisecond.

    Args:
        seconds: the length, > 0 (rounded to whole milliseconds).

    Returns:
        The file's bytes.

    Raises:
        ValueError: when ``seconds`` is not positive.
    """
    total = int((seconds * _TIMESCALE).to_integral_value(rounding=ROUND_HALF_UP))
    if total <= 0:
        msg = f"a video must last more than 0 s, got {seconds}"
        raise ValueError(msg)
    data = sample_mp4()
    top = _parse(data, 0, len(data))
    path = (b"moov", b"trak", b"mdia", b"minf", b"stbl")

    def leaf(*names: bytes) -> bytes:
        body = _find(top, *names)
        assert isinstance(body, bytes)
        return body

    sizes_body = leaf(*path, b"stsz")
    frame_count: int = struct.unpack(">I", sizes_body[8:12])[0]
    frame_sizes = sizes_body[12 : 12 + 4 * frame_count]
    old_delta: int = struct.unpack(">I", leaf(*path, b"stts")[12:16])[0]
    ctts_body = leaf(*path, b"ctts")
    ctts_entries = [
        struct.unpack(">II", ctts_body[8 + 8 * i : 16 + 8 * i]) for i in range(struct.unpack(">I", ctts_body[4:8])[0])
    ]
    old_media_time = struct.unpack(">i", leaf(b"moov", b"trak", b"edts", b"elst")[12:16])[0]
    chunk_offset = struct.unpack(">I", leaf(*path, b"stco")[8:12])[0]

    loops = max(1, int((seconds / _SAMPLE_SECONDS).to_integral_value(rounding=ROUND_HALF_UP)))
    frames = frame_count * loops
    delta = total // frames
    last = total - delta * (frames - 1)

    def scaled(ticks: int) -> int:
        return ticks * delta // old_delta

    ctts = [(count, scaled(offset)) for count, offset in ctts_entries] * loops
    tables = {
        b"stts": _full_box(struct.pack(">I", 2) + struct.pack(">II", frames - 1, delta) + struct.pack(">II", 1, last)),
        b"stss": _full_box(struct.pack(f">I{loops}I", loops, *(1 + frame_count * i for i in range(loops)))),
        b"ctts": _full_box(struct.pack(">I", len(ctts)) + b"".join(struct.pack(">II", c, o) for c, o in ctts)),
        b"stsc": _full_box(struct.pack(">IIII", 1, 1, frame_count, 1)),
        b"stsz": _full_box(struct.pack(">II", 0, frames) + frame_sizes * loops),
    }
    for kind, body in tables.items():
        top = _replace(top, (*path, kind), body)

    mvhd = bytearray(leaf(b"moov", b"mvhd"))
    movie_scale = struct.unpack(">I", mvhd[12:16])[0]
    movie_total = total * movie_scale // _TIMESCALE
    mvhd[16:20] = struct.pack(">I", movie_total)
    tkhd = bytearray(leaf(b"moov", b"trak", b"tkhd"))
    tkhd[20:24] = struct.pack(">I", movie_total)
    elst = bytearray(leaf(b"moov", b"trak", b"edts", b"elst"))
    elst[8:16] = struct.pack(">Ii", movie_total, scaled(old_media_time))
    mdhd = bytearray(leaf(b"moov", b"trak", b"mdia", b"mdhd"))
    mdhd[12:20] = struct.pack(">II", _TIMESCALE, total)
    top = _replace(top, (b"moov", b"mvhd"), bytes(mvhd))
    top = _replace(top, (b"moov", b"trak", b"tkhd"), bytes(tkhd))
    top = _replace(top, (b"moov", b"trak", b"edts", b"elst"), bytes(elst))
    top = _replace(top, (b"moov", b"trak", b"mdia", b"mdhd"), bytes(mdhd))

    # The coded frames stay where they are in mdat; every repetition is one more chunk
    # pointing at them.  moov precedes mdat, so its change in size moves them: measure
    # it with a chunk table of the final size first.
    placeholder = _full_box(struct.pack(f">I{loops}I", loops, *([0] * loops)))
    top = _replace(top, (*path, b"stco"), placeholder)
    shift = _moov_size(_serialize(top)) - _moov_size(data)
    stco = _full_box(struct.pack(f">I{loops}I", loops, *([chunk_offset + shift] * loops)))
    return _serialize(_replace(top, (*path, b"stco"), stco))


def _moov_size(data: bytes) -> int:
    offset = 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind == b"moov":
            return int(size)
        offset += size
    msg = "sample MP4 has no moov box"
    raise ValueError(msg)


def mp4_duration(data: bytes) -> Decimal:
    """How long an MP4 plays, from its movie header.

    Args:
        data: the file's bytes.

    Returns:
        Seconds, exact (the header's duration over its timescale).

    Raises:
        ValueError: when the file has no movie header.
    """
    mvhd = _find(_parse(data, 0, len(data)), b"moov", b"mvhd")
    assert isinstance(mvhd, bytes)
    if mvhd[0] == 1:
        scale, duration = struct.unpack(">IQ", mvhd[20:32])
    else:
        scale, duration = struct.unpack(">II", mvhd[12:20])
    return Decimal(duration) / Decimal(scale)
