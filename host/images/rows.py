"""Row readers: an image read in bands of rows, so large images never need to be held whole.

:func:`open_rows` picks the reader by what the file is, and how much of the *input* is held
depends on the format, honestly:

- Binary PPM/PGM (``P6``/``P5``, 8-bit): read row by row from the file
  (:class:`~fcnseg.host.images.netpbm.NetpbmRows`).
- PNG, 8 bits per sample, not interlaced (gray, gray+alpha, RGB, RGBA, palette; what cameras,
  GIS tools and Pillow write): inflated incrementally and unfiltered band by band
  (:class:`~fcnseg.host.images.png_rows.PngRows`). Nothing is held beyond a band of rows.
- Everything else (JPEG, TIFF, 16-bit or interlaced PNG, PNG with EXIF, ...): Pillow decodes
  the whole image (its raster is 4 bytes a pixel for RGB: 1.6 GB at 20000x20000); bands are
  then cut from it without another full copy (:class:`DecodedRows`). Pillow has no public API
  to decode those incrementally, so there the bound is the decoded raster, and ``max_pixels``
  (the bomb guard) caps it.

Measured (``fcnseg segment --max-pixels 1000000000`` of one generated image, a 256x256-tile
package of stride 2, peak RSS = ``VmHWM`` of the process; the interpreter and imports are
~50 MB of it): 20000x20000 PPM 193 MB, 8-bit PNG 259 MB, JPEG 1724 MB (decoded whole);
6000x6000 PPM 98 MB, PNG 114 MB, JPEG 236 MB; the same 6000x6000 PNG through the whole-image
path (``--overlay``) 1768 MB. Memory grows with the image *width* (a band is a row of tiles
across it), not with its height.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from fcnseg.host.images.decode import decode
from fcnseg.host.images.guard import MAX_PIXELS
from fcnseg.host.images.messages import os_error
from fcnseg.host.images.modes import to_rgb
from fcnseg.host.images.netpbm import NetpbmRows, is_netpbm
from fcnseg.host.images.png_rows import NotStreamable, PngRows


class RowReader(Protocol):
    """Rows of an upright RGB image: ``read(y0, y1) -> (y1 - y0, W, 3) uint8``."""

    height: int
    width: int

    def read(self, y0: int, y1: int) -> np.ndarray:  # pragma: no cover - interface
        ...

    def close(self) -> None:  # pragma: no cover - interface
        ...


class DecodedRows:
    """Any format Pillow reads: decoded whole (upright), bands converted to RGB on demand."""

    def __init__(self, image: Image.Image) -> None:
        self.image = image
        self.width, self.height = image.size

    def read(self, y0: int, y1: int) -> np.ndarray:
        return to_rgb(self.image.crop((0, y0, self.width, y1)))

    def close(self) -> None:
        self.image.close()


def open_rows(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS) -> RowReader:
    """A :class:`RowReader` over ``path``: binary PPM/PGM and 8-bit non-interlaced PNG decoded
    band by band, others decoded whole by Pillow (module docstring)."""
    path = Path(path)
    try:
        if path.is_file() and is_netpbm(path):
            return NetpbmRows(path, max_pixels)
        return PngRows(path, max_pixels)
    except NotStreamable:
        return DecodedRows(decode(path, max_pixels))
    except OSError as error:
        raise os_error(path, error) from None
