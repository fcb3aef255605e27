"""Score outputs: ``.npy`` arrays, and the documented ``NAME_scores.npz`` of ``fcnseg segment``.

:func:`save_array` writes one array; :func:`npy_row_writer` writes a ``.npy`` block by block
along its first axis (the header first, from :mod:`numpy.lib.format`; rows as they come).

``NAME_scores.npz`` (:func:`scores_writer`, :func:`save_scores`) holds the accelerator's
**integer** scores of one image with everything needed to read them (``np.load(path,
allow_pickle=False)``; member ``meaning`` says the same in words):

- ``scores`` ``(h, w, C) int32``: score cell ``(r, q)`` covers the image pixels
  ``[r*stride, r*stride + field) x [q*stride, q*stride + field)``; logits (per class, last
  axis) are ``scores * scale + bias``. Cropped to the image: the cells the image's pixels are
  bilinearly interpolated from (:func:`cells_read`), not the padded canvas's cells beyond them,
  so ``upsample_argmax(scores, scale, bias, image_size, stride, field)`` gives the mask.
- ``scale``, ``bias`` ``(C,) float64``; ``classes`` ``(C,) str``; ``stride``, ``field``
  ``int``; ``image_size`` ``(2,) int`` = ``(H, W)``.

Integers, not floats: they are what the fabric computed, exactly, and half the size of float64
logits. The scores are streamed into the archive (a ``zipfile`` member written row block by
row block), so an image segmented in strips never holds its whole score map; every file is
written atomically (:mod:`fcnseg.atomic`). Not through ``np.lib.format.open_memmap``: a zip
member cannot be mapped, and a mapped ``.npy`` keeps the pages written so far resident in the
process (as a mapped input does, :mod:`fcnseg.host.images.netpbm`), where a file write does not.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence
from typing import IO

import numpy as np

from fcnseg.atomic import atomic_open

MEANING = (
    "integer scores of the accelerator, cropped to the image; logits = scores * scale + bias "
    "(per class, last axis); cell (r, q) covers image pixels [r*stride, r*stride + field) x "
    "[q*stride, q*stride + field); upsample bilinearly between cell centres and take the argmax "
    "over classes for the mask"
)
SCORES_DTYPE = np.dtype(np.int32)


def save_array(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` (no pickle) atomically."""
    with atomic_open(path) as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)


@contextlib.contextmanager
def _npy_stream(
    handle: IO[bytes], shape: tuple[int, ...], dtype: np.dtype
) -> Iterator[Callable[[np.ndarray], None]]:
    """Write a ``.npy`` of ``shape`` into ``handle``; yields ``write(block)`` along axis 0."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
    np.lib.format.write_array_header_1_0(handle, {**header, "shape": tuple(shape)})
    written = 0

    def write(block: np.ndarray) -> None:
        nonlocal written
        block = np.ascontiguousarray(block, dtype=dtype)
        if block.shape[1:] != tuple(shape[1:]):
            raise ValueError(f"rows of shape {block.shape[1:]}, expected {shape[1:]}")
        if written + block.shape[0] > shape[0]:
            raise ValueError(f"more than the {shape[0]} rows of {shape}")
        handle.write(block.tobytes())
        written += block.shape[0]

    yield write
    if written != shape[0]:
        raise ValueError(f"wrote {written} rows of {shape[0]}")


@contextlib.contextmanager
def npy_row_writer(
    path: str | os.PathLike[str], shape: tuple[int, ...], dtype: np.dtype | type
) -> Iterator[Callable[[np.ndarray], None]]:
    """Write a ``.npy`` of ``shape`` row block by row block (along axis 0), atomically."""
    with atomic_open(path) as handle, _npy_stream(handle, shape, np.dtype(dtype)) as write:
        yield write


def cells_read(pixels: int, stride: int, field: int, cells: int) -> int:
    """How many score cells (from the first) the bilinear upsampling of ``pixels`` pixels
    reads along one axis, at most ``cells``: pixel ``y`` reads cells ``i0`` and ``i0 + 1``
    with ``i0 = floor((2y + 1 - field) / (2 stride))`` (:mod:`fcnseg.host.upsample`)."""
    last = (2 * (pixels - 1) + 1 - field) // (2 * stride) + 1
    return max(1, min(cells, last + 1))


def _member(archive: zipfile.ZipFile, name: str, value: object) -> None:
    with archive.open(f"{name}.npy", "w") as handle:
        np.lib.format.write_array(handle, np.asarray(value), allow_pickle=False)


@contextlib.contextmanager
def scores_writer(
    path: str | os.PathLike[str],
    *,
    canvas_cells: tuple[int, int, int],
    image_size: tuple[int, int],
    stride: int,
    field: int,
    scale: np.ndarray,
    bias: np.ndarray,
    classes: Sequence[str],
) -> Iterator[Callable[[np.ndarray], None]]:
    """Write ``NAME_scores.npz`` (module docstring) from the canvas's score rows: yields
    ``write(block (n, Wc/stride, C))`` for consecutive blocks from the top; the rows and
    columns past the image are dropped here."""
    height, width = image_size
    rows = cells_read(height, stride, field, canvas_cells[0])
    cols = cells_read(width, stride, field, canvas_cells[1])
    shape = (rows, cols, canvas_cells[2])
    seen = 0
    with (
        atomic_open(path) as handle,
        zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True) as archive,
    ):
        with (
            archive.open("scores.npy", "w", force_zip64=True) as member,
            _npy_stream(member, shape, SCORES_DTYPE) as write_rows,
        ):

            def write(block: np.ndarray) -> None:
                nonlocal seen
                keep = max(0, min(len(block), rows - seen))
                if keep:
                    write_rows(block[:keep, :cols])
                seen += len(block)

            yield write
        for name, value in (
            ("scale", np.asarray(scale, dtype=np.float64)),
            ("bias", np.asarray(bias, dtype=np.float64)),
            ("classes", np.asarray(list(classes), dtype=str)),
            ("stride", stride),
            ("field", field),
            ("image_size", np.asarray(image_size, dtype=np.int64)),
            ("meaning", MEANING),
        ):
            _member(archive, name, value)


def save_scores(path: str | os.PathLike[str], scores: np.ndarray, **fields: object) -> None:
    """Write a whole canvas score map ``(Hc/stride, Wc/stride, C)`` as ``NAME_scores.npz``
    (the keyword fields of :func:`scores_writer` but ``canvas_cells``)."""
    with scores_writer(path, canvas_cells=scores.shape, **fields) as write:  # type: ignore[arg-type]
        write(scores)
