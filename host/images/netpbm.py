"""Binary PPM (``P6``) and PGM (``P5``) read row by row straight from the file.

Netpbm is the one format whose pixels sit uncompressed at a known offset, so any band of rows
is one ``seek`` + ``read``: nothing of the image is held beyond the rows asked for. The header
(magic, width, height, maxval, with ``#`` comments) is parsed here; only maxval < 256 (8-bit)
is read, and a header claiming more pixels than the file holds is refused up front (truncated
file, or a bomb).

Why not ``np.memmap``: a mapping of the whole file keeps every page it has read resident in the
process until it is unmapped, which defeats the bound (measured: a 6000x6000 PPM read in
256-row bands peaks at 136 MB of RSS mapped, 35 MB with ``seek`` + ``read``); a mapping per
band costs the same as the read and adds nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fcnseg.host.images.guard import check_pixels
from fcnseg.host.images.messages import image_error

_MAGICS = {b"P5": 1, b"P6": 3}  # magic -> channels
_HEADER_BYTES = 512  # enough for any real header, comments included


def is_netpbm(path: str | os.PathLike[str]) -> bool:
    """True for a binary PPM/PGM (magic ``P5``/``P6``), whatever its suffix."""
    try:
        with open(path, "rb") as handle:
            return handle.read(2) in _MAGICS
    except OSError:
        return False


def _skip_space_and_comments(head: bytes, i: int) -> int:
    while i < len(head):
        if head[i : i + 1].isspace():
            i += 1
        elif head[i : i + 1] == b"#":
            while i < len(head) and head[i : i + 1] not in (b"\n", b"\r"):
                i += 1
        else:
            break
    return i


def parse_header(path: Path, head: bytes) -> tuple[int, int, int, int]:
    """``(channels, width, height, offset of the first pixel)`` from the file's first bytes."""
    if head[:2] not in _MAGICS:
        raise image_error(path, "not_netpbm")
    fields: list[int] = []
    i = 2
    while len(fields) < 3:
        i = _skip_space_and_comments(head, i)
        j = i
        while j < len(head) and head[j : j + 1].isdigit():
            j += 1
        if j == i or j >= len(head):
            raise image_error(path, "netpbm_header")
        fields.append(int(head[i:j]))
        i = j
    width, height, maxval = fields
    if width < 1 or height < 1 or not 0 < maxval < 256:
        raise image_error(path, "netpbm_kind", width=width, height=height, maxval=maxval)
    return _MAGICS[head[:2]], width, height, i + 1  # one whitespace byte ends the header


class NetpbmRows:
    """Binary PPM/PGM with maxval < 256, read row by row from the file (module docstring)."""

    def __init__(self, path: Path, max_pixels: int | None = None) -> None:
        self.path = path
        self.file = open(path, "rb")  # noqa: SIM115 - closed by close()
        try:
            self.channels, self.width, self.height, self.offset = parse_header(
                path, self.file.read(_HEADER_BYTES)
            )
            size = os.fstat(self.file.fileno()).st_size
            need = self.offset + self.width * self.height * self.channels
            if size < need:
                what = f"{self.width}x{self.height} needs {need} bytes, the file has {size}"
                raise image_error(path, "truncated", what=what)
            check_pixels(path, self.width, self.height, max_pixels)
        except BaseException:
            self.file.close()
            raise

    def read(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` as ``(y1 - y0, W, 3) uint8`` (gray replicated to RGB)."""
        row = self.width * self.channels
        self.file.seek(self.offset + y0 * row)
        data = self.file.read((y1 - y0) * row)
        if len(data) != (y1 - y0) * row:
            raise image_error(self.path, "truncated", what=f"at row {y0 + len(data) // row}")
        rows = np.frombuffer(data, dtype=np.uint8).reshape(y1 - y0, self.width, self.channels)
        return rows if self.channels == 3 else np.repeat(rows, 3, axis=2)

    def close(self) -> None:
        self.file.close()
