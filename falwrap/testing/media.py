"""Real media files for fake outputs: PNGs and JPEGs of an exact size, and a sample MP4.

Images are built with zlib and struct only (no Pillow in the main package):
a horizontal gradient whose rows are all identical, so even large images
compress to a few kilobytes and cost milliseconds.  Results are cached by size.
"""

from __future__ import annotations

import functools
import struct
import zlib
from importlib import resources

__all__ = ["image_size_of", "jpeg_bytes", "png_bytes", "sample_mp4"]

#: Largest side fal's flux endpoints accept; bigger requests are clamped.
MAX_SIDE = 14142


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@functools.lru_cache(maxsize=32)
def png_bytes(width: int, height: int) -> bytes:
    """A valid 8-bit RGB PNG of exactly ``width`` x ``height`` pixels.

    Args:
        width: pixels, 1..MAX_SIDE.
        height: pixels, 1..MAX_SIDE.

    Returns:
        The file's bytes.

    Raises:
        ValueError: when a side is out of range.
    """
    _check(width, height)
    row = bytearray(b"\x00")  # filter type "None"
    for x in range(width):
        shade = x * 255 // max(1, width - 1)
        row += bytes((shade, 96, 255 - shade))
    compressor = zlib.compressobj(6)
    # Row by row keeps memory flat even at 14142 x 14142.
    row_bytes = bytes(row)
    parts = [compressor.compress(row_bytes) for _ in range(height)]
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", b"".join(parts)),
            _png_chunk(b"IEND", b""),
        )
    )


@functools.lru_cache(maxsize=32)
def jpeg_bytes(width: int, height: int) -> bytes:
    """A valid baseline greyscale JPEG of exactly ``width`` x ``height`` pixels (uniform mid-grey).

    Every 8x8 block has a zero DC difference and no AC coefficients, so with
    one-symbol Huffman tables each block is two zero bits: the scan is tiny
    and needs no encoder.

    Args:
        width: pixels, 1..MAX_SIDE.
        height: pixels, 1..MAX_SIDE.

    Returns:
        The file's bytes.

    Raises:
        ValueError: when a side is out of range.
    """
    _check(width, height)
    blocks = -(-width // 8) * -(-height // 8)
    bits = 2 * blocks
    # Zero bits for the blocks, the last byte padded with ones as the standard asks.
    scan = bytearray(bits // 8)
    if bits % 8:
        scan.append((1 << (8 - bits % 8)) - 1)

    def segment(marker: int, payload: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload

    quant = segment(0xDB, b"\x00" + b"\x01" * 64)
    frame = segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
    # One code of length 1 for symbol 0: the DC difference category 0 / the AC end-of-block.
    one_symbol = b"\x01" + b"\x00" * 15 + b"\x00"
    huffman = segment(0xC4, b"\x00" + one_symbol + b"\x10" + one_symbol)
    scan_header = segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    return b"".join((b"\xff\xd8", quant, frame, huffman, scan_header, bytes(scan), b"\xff\xd9"))


@functools.lru_cache(maxsize=1)
def sample_mp4() -> bytes:
    """The bundled sample video: 5 s, 160x90, H.264 in MP4, about 5 kB.

    Returns:
        The file's bytes.
    """
    return resources.files("falwrap.testing").joinpath("assets/sample.mp4").read_bytes()


_JPEG_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def image_size_of(data: bytes) -> tuple[int, int] | None:
    """The (width, height) a PNG or JPEG file declares, or ``None`` for anything else.

    Reads only the headers (PNG's IHDR, JPEG's start-of-frame), so an upscaler
    can answer with an image of the input's size times its factor.

    Args:
        data: The file's bytes.

    Returns:
        The size in pixels, or ``None``.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return (width, height) if width and height else None
    if not data.startswith(b"\xff\xd8"):
        return None
    offset = 2
    while offset + 9 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        if marker in _JPEG_FRAMES:
            height, width = struct.unpack(">HH", data[offset + 5 : offset + 9])
            return (width, height) if width and height else None
        offset += 2 + length
    return None


def _check(width: int, height: int) -> None:
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        msg = f"image size {width}x{height} is outside 1..{MAX_SIDE}"
        raise ValueError(msg)
