"""PNG chunks (the PNG spec, section 5): the few pieces the row reader and mask writer need.

A PNG is the 8-byte signature, then chunks ``length (4) | type (4) | data | CRC-32 (4)``, the
CRC over type and data. The mask writer emits ``IHDR``, ``PLTE``, an ``iTXt`` with the class
names, ``IDAT`` and ``IEND``; the row reader walks chunk headers to find ``IDAT``.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: colour type -> (channels, Pillow mode) of the 8-bit PNGs the row reader streams.
KINDS = {0: (1, "L"), 2: (3, "RGB"), 3: (1, "P"), 4: (2, "LA"), 6: (4, "RGBA")}
PALETTE_COLOUR_TYPE = 3


def chunk(kind: bytes, data: bytes) -> bytes:
    """One complete chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def ihdr(width: int, height: int, colour_type: int, depth: int = 8) -> bytes:
    """The 13-byte ``IHDR`` body: no interlace, the standard compression and filter methods."""
    return struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)


def itxt(keyword: str, text: str) -> bytes:
    """An uncompressed ``iTXt`` chunk (UTF-8 text; the keyword is Latin-1, 1-79 bytes)."""
    key = keyword.encode("latin-1")
    if not 0 < len(key) < 80:
        raise ValueError(f"PNG text keywords have 1-79 bytes, got {keyword!r}")
    return chunk(b"iTXt", key + b"\0\0\0" + b"\0" + b"\0" + text.encode("utf-8"))


def palette_bytes(palette: np.ndarray) -> bytes:
    """A ``PLTE`` body of 256 entries: ``palette (n, 3)``, zero-filled (or cut) to 256 colours."""
    full = np.zeros((256, 3), dtype=np.uint8)
    colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
    full[: len(colours)] = colours
    return full.tobytes()


def read_chunk_header(handle: BinaryIO) -> tuple[bytes, int] | None:
    """``(type, length)`` of the next chunk, or None if the file ends before a whole header."""
    head = handle.read(8)
    if len(head) != 8:
        return None
    length, kind = struct.unpack(">I4s", head)
    return kind, length
