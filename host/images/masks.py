"""Masks as palette PNGs: pixel value = class index, the class colours in the palette and the
class names in an ``iTXt`` chunk (:mod:`fcnseg.host.images.classes`).

:func:`png_mask_writer` encodes the PNG itself, row by row (for images segmented in strips):
every row with filter type None, deflated incrementally, so memory is bounded by the rows handed
to it; :func:`save_mask` writes a whole label image through it. Both write atomically
(:mod:`fcnseg.atomic`): a reader never sees half a mask.

Why not Pillow's PNG writer: it deflates through its encoder's ``encode()`` method, which keeps
the GIL for the whole compression (Pillow's ``src/encode.c``: only ``encode_to_file``, which the
PNG plugin cannot use, releases it), so two finish workers writing masks take turns; Python's
``zlib`` releases the GIL while it deflates. Measured at 512x1024 (in turns, 21 repetitions):
1.6 -> 1.3 ms CPU with 7 classes, 1.8 -> 1.5 ms with 21, the same pixels, files within 12 bytes.

Masks are deflated at zlib level 1 with the run-length strategy (:data:`ZLIB_LEVEL`,
:data:`ZLIB_STRATEGY`): masks stay lossless, label maps are runs of one value, and ``Z_RLE``
measured as fast as level 1 with files smaller than level 6's (512x1024, 21 classes, with
Pillow's writer on this x86 core: 1.2 ms CPU and 11.9 KB, against 5.2 ms and 14.1 KB for Pillow's
default level 6, 1.5 ms and 20.9 KB for level 1 alone; 7 classes: 8.6 KB vs 10.5 KB) -- the
encode is on an ARM core's path per frame (``benchmarks/arm_budget.py``, docs/arm_budget.md).
"""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import Callable, Iterator

import numpy as np

from fcnseg.atomic import atomic_open
from fcnseg.host.images import png
from fcnseg.host.images.classes import TEXT_KEY, ClassTable

#: zlib level and strategy of mask PNGs (module docstring: measured).
ZLIB_LEVEL = 1
ZLIB_STRATEGY = zlib.Z_RLE


def _check_labels(labels: np.ndarray, width: int | None = None) -> None:
    if labels.ndim != 2 or (width is not None and labels.shape[1] != width):
        raise ValueError(f"masks are (H, W) labels, got rows of shape {labels.shape}")
    if labels.max(initial=0) > 255:
        raise ValueError(f"mask labels must be < 256, got {labels.max()}")


def save_mask(
    path: str | os.PathLike[str],
    labels: np.ndarray,
    palette: np.ndarray,
    classes: ClassTable | None = None,
    compress_level: int = ZLIB_LEVEL,
    strategy: int = ZLIB_STRATEGY,
) -> None:
    """Write ``labels (H, W)`` (< 256 classes) as a palette PNG: pixel value = class index;
    with ``classes``, their names go into the text chunk :data:`TEXT_KEY`; deflated at
    ``compress_level`` (0-9) with the zlib ``strategy``."""
    _check_labels(labels)
    height, width = labels.shape
    with png_mask_writer(
        path, height, width, palette, classes, compress_level, strategy
    ) as write:  # fmt: skip
        write(labels)


@contextlib.contextmanager
def png_mask_writer(
    path: str | os.PathLike[str],
    height: int,
    width: int,
    palette: np.ndarray,
    classes: ClassTable | None = None,
    compress_level: int = ZLIB_LEVEL,
    strategy: int = ZLIB_STRATEGY,
) -> Iterator[Callable[[np.ndarray], None]]:
    """Write a palette PNG row by row: yields ``write(rows (n, W))``.

    Atomic like every output; exactly ``height`` rows must be written, or nothing is.
    """
    written = 0
    with atomic_open(path) as handle:
        handle.write(png.SIGNATURE)
        handle.write(png.chunk(b"IHDR", png.ihdr(width, height, png.PALETTE_COLOUR_TYPE)))
        handle.write(png.chunk(b"PLTE", png.palette_bytes(palette)))
        if classes is not None:
            handle.write(png.itxt(TEXT_KEY, classes.names_text()))
        packer = zlib.compressobj(compress_level, zlib.DEFLATED, 15, 8, strategy)

        def write(rows: np.ndarray) -> None:
            nonlocal written
            rows = np.asarray(rows)
            _check_labels(rows, width)
            lines = np.zeros((rows.shape[0], width + 1), dtype=np.uint8)  # filter byte 0: None
            lines[:, 1:] = rows
            data = packer.compress(lines)  # the buffer itself: no copy
            if data:
                handle.write(png.chunk(b"IDAT", data))
            written += rows.shape[0]

        yield write
        if written != height:
            raise ValueError(f"{path}: wrote {written} mask rows of {height}")
        handle.write(png.chunk(b"IDAT", packer.flush()))
        handle.write(png.chunk(b"IEND", b""))
