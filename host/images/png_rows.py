"""8-bit, non-interlaced PNG decoded band by band, never whole: what bounds memory on a board.

The compressed stream is inflated incrementally (``zlib``, at most one band of scanlines at a
time, so a zlib bomb inflates no further than asked). Scanline *filters* (Sub, Up, Average,
Paeth) chain each row to the one before, which numpy cannot undo fast; Pillow's decoder does,
so each band is handed to it as a small PNG of its own: the previous row, unfiltered (filter
byte 0), then the band's filtered rows as they are, with the original PLTE/tRNS. The previous
row's raw bytes come back from Pillow as the band's last row (``tobytes`` of the 8-bit modes L,
LA, RGB, RGBA, P is the scanline). Other PNGs (16-bit, under 8 bits, interlaced, with EXIF)
raise :class:`NotStreamable`, and the caller decodes them whole.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from fcnseg.host.images import png
from fcnseg.host.images.guard import check_pixels
from fcnseg.host.images.messages import image_error, reason
from fcnseg.host.images.modes import to_rgb

_READ_BYTES = 1 << 16  # compressed bytes read at a time
_IHDR_LENGTH = 13


class NotStreamable(Exception):
    """A PNG this reader does not stream (interlaced, not 8-bit, EXIF): Pillow decodes it."""


class PngRows:
    """Rows of an 8-bit non-interlaced PNG, decoded forwards band by band (module docstring)."""

    def __init__(self, path: Path, max_pixels: int | None = None) -> None:
        self.path = path
        self.file = open(path, "rb")  # noqa: SIM115 - closed by close()
        try:
            self._header(max_pixels)
        except BaseException:
            self.file.close()
            raise
        self.inflater = zlib.decompressobj()
        self.data = bytearray()  # inflated, not yet used scanlines
        self.prior = bytes(self.rowbytes)  # the row above row 0 is zeros (PNG spec)
        self.next_row = 0
        self.cache = np.zeros((0, self.width, 3), dtype=np.uint8)  # rows [next_row - len, next)

    def _chunk(self) -> tuple[bytes, int]:
        header = png.read_chunk_header(self.file)
        if header is None:
            raise image_error(self.path, "truncated", what="PNG chunk header")
        return header

    def _header(self, max_pixels: int | None) -> None:
        """Parse IHDR and the chunks up to the first IDAT (keeping PLTE and tRNS)."""
        if self.file.read(8) != png.SIGNATURE:
            raise NotStreamable
        kind, length = self._chunk()
        if kind != b"IHDR" or length != _IHDR_LENGTH:
            raise NotStreamable
        self.ihdr = self.file.read(_IHDR_LENGTH + 4)[:_IHDR_LENGTH]
        if len(self.ihdr) != _IHDR_LENGTH:
            raise image_error(self.path, "truncated", what="IHDR chunk")
        width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", self.ihdr)
        if depth != 8 or interlace or colour not in png.KINDS or not width or not height:
            raise NotStreamable
        check_pixels(self.path, width, height, max_pixels)
        self.width, self.height = width, height
        channels, self.mode = png.KINDS[colour]
        self.rowbytes = width * channels
        self.extra = b""  # PLTE and tRNS, copied into every band's PNG
        while True:
            kind, length = self._chunk()
            if kind == b"IDAT":
                self.idat_left = length
                return
            if kind in (b"eXIf", b"IEND"):
                raise NotStreamable
            body = self.file.read(length + 4)
            if len(body) != length + 4:
                raise image_error(self.path, "truncated", what=f"{kind.decode('latin-1')} chunk")
            if kind in (b"PLTE", b"tRNS"):
                self.extra += png.chunk(kind, body[:length])

    def _compressed(self) -> bytes:
        """The next compressed bytes of the image data, across IDAT chunks."""
        if self.idat_left == 0:
            self.file.read(4)  # CRC of the finished IDAT
            kind, length = self._chunk()
            if kind != b"IDAT":
                raise image_error(self.path, "truncated", what="image data ends early")
            self.idat_left = length
        data = self.file.read(min(self.idat_left, _READ_BYTES))
        if not data:
            raise image_error(self.path, "truncated", what="image data ends early")
        self.idat_left -= len(data)
        return data

    def _inflate(self, need: int) -> None:
        """Inflate until ``need`` scanline bytes are buffered (or raise: truncated/corrupt)."""
        while len(self.data) < need:
            tail = self.inflater.unconsumed_tail or self._compressed()
            try:
                self.data += self.inflater.decompress(tail, need - len(self.data))
            except zlib.error as error:
                raise image_error(self.path, "corrupt", reason=error) from None

    def _band(self, n: int) -> Image.Image:
        """The next ``n`` rows, unfiltered by Pillow, as an image of ``n`` rows."""
        size = n * (self.rowbytes + 1)
        self._inflate(size)
        filtered = bytes(self.data[:size])
        del self.data[:size]
        header = struct.pack(">II", self.width, n + 1) + self.ihdr[8:]
        band_png = (
            png.SIGNATURE
            + png.chunk(b"IHDR", header)
            + self.extra
            + png.chunk(b"IDAT", zlib.compress(b"\0" + self.prior + filtered, 0))
            + png.chunk(b"IEND", b"")
        )
        try:
            with Image.open(io.BytesIO(band_png)) as image:
                image.load()
                band = image.crop((0, 1, self.width, n + 1))
        except Exception as error:  # bad filter bytes, palette indices ...
            raise image_error(self.path, "undecodable", reason=reason(error)) from None
        if band.mode != self.mode:  # Pillow and this reader disagree: do not guess
            raise image_error(self.path, "undecodable", reason=f"band decoded as {band.mode}")
        self.prior = band.crop((0, n - 1, self.width, n)).tobytes()
        return band

    def read(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)``; rows are decoded forwards, so ``y0`` may go back only into
        rows not yet passed (the segmenter's bands overlap by less than a band)."""
        if y0 < self.next_row - len(self.cache):
            raise ValueError(f"PNG rows are read forwards: {y0} < {self.next_row}")
        if y1 > self.next_row:
            band = to_rgb(self._band(y1 - self.next_row))
            self.cache = np.concatenate([self.cache, band]) if len(self.cache) else band
            self.next_row = y1
        start = self.next_row - len(self.cache)
        out = self.cache[y0 - start : y1 - start]
        self.cache = self.cache[y0 - start :]  # rows before y0 are never asked again
        return out

    def close(self) -> None:
        self.file.close()
