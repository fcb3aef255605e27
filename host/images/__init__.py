"""Images in and out: decode anything Pillow reads to RGB uint8, write masks, overlays, scores.

One job per module; every public name is importable from here:

- :mod:`~fcnseg.host.images.decode`: a file to upright RGB (:func:`load_image`), EXIF, the size
  from the header alone (:func:`image_size`); :mod:`~fcnseg.host.images.modes`: the rule for each
  pixel mode (gray, palette, alpha on black, 16-bit, CMYK, ...); :mod:`~fcnseg.host.images.guard`:
  the decompression bomb guard, per call (Pillow's process-wide one is left alone).
- :mod:`~fcnseg.host.images.rows`: row readers for images too large to hold
  (:func:`open_rows`): PPM/PGM (:mod:`~fcnseg.host.images.netpbm`) and 8-bit PNG
  (:mod:`~fcnseg.host.images.png_rows`, band by band) in bounded memory, the rest decoded whole.
- Writers: :mod:`~fcnseg.host.images.masks` (palette PNG, pixel value = class index, whole or row
  by row), :mod:`~fcnseg.host.images.overlays` (blended colours, optional legend),
  :mod:`~fcnseg.host.images.scores` (``.npy``; the documented ``NAME_scores.npz``),
  :mod:`~fcnseg.host.images.classes` (names, colours and indices: ``classes.json``, the masks'
  text chunk).
- :mod:`~fcnseg.host.images.png` (PNG chunks) and :mod:`~fcnseg.host.images.messages` (every
  one-line error about an input file, written once).

Every output is written to a temporary file in the target folder and renamed with
:func:`os.replace` (:mod:`fcnseg.atomic`), so a reader never sees a half-written file and an
interrupted run leaves no truncated output. A process killed outright (SIGKILL, power loss) can
leave a hidden temporary ``.NAME.<host>-<pid>-<start>.<random>.tmp`` next to an output, never
the output itself; :func:`remove_stale_temps` clears those whose writer is gone (or untouched for
a day), never a running writer's, so concurrent runs on one folder do not break each other
(:mod:`fcnseg.atomic`).
"""

from __future__ import annotations

from fcnseg.atomic import atomic_open, remove_stale_temps
from fcnseg.host.images.classes import (
    CLASSES_JSON,
    TEXT_KEY,
    ClassTable,
    read_mask_classes,
    voc_palette,
    write_classes_json,
)
from fcnseg.host.images.decode import as_rgb_array, image_size, load_image
from fcnseg.host.images.guard import MAX_PIXELS, check_pixels
from fcnseg.host.images.masks import png_mask_writer, save_mask
from fcnseg.host.images.modes import to_rgb
from fcnseg.host.images.netpbm import NetpbmRows, is_netpbm
from fcnseg.host.images.overlays import legend_strip, overlay, save_overlay
from fcnseg.host.images.png import SIGNATURE as PNG_SIGNATURE
from fcnseg.host.images.png_rows import PngRows
from fcnseg.host.images.rows import DecodedRows, RowReader, open_rows
from fcnseg.host.images.scores import (
    cells_read,
    npy_row_writer,
    save_array,
    save_scores,
    scores_writer,
)

__all__ = [
    "CLASSES_JSON",
    "MAX_PIXELS",
    "PNG_SIGNATURE",
    "TEXT_KEY",
    "ClassTable",
    "DecodedRows",
    "NetpbmRows",
    "PngRows",
    "RowReader",
    "as_rgb_array",
    "atomic_open",
    "cells_read",
    "check_pixels",
    "image_size",
    "is_netpbm",
    "legend_strip",
    "load_image",
    "npy_row_writer",
    "open_rows",
    "overlay",
    "png_mask_writer",
    "read_mask_classes",
    "remove_stale_temps",
    "save_array",
    "save_mask",
    "save_overlay",
    "save_scores",
    "scores_writer",
    "to_rgb",
    "voc_palette",
    "write_classes_json",
]
