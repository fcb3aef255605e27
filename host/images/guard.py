"""The decompression bomb guard, per call: an image's size is checked from its header only.

A file of a few kilobytes can claim 100000 x 100000 pixels and take 40 GB to decode. Every
reader here checks the size the header claims against the caller's ``max_pixels`` before any
pixel is decoded (:func:`check_pixels`).

Pillow has a guard of its own, but it is one process-wide setting (``Image.MAX_IMAGE_PIXELS``,
checked in ``Image.open``): switching it per call would race between threads decoding with
different limits (``fcnseg segment --workers N``, a server), and it would also change it for
everything else in the process. So this module leaves it alone and identifies files itself
with :func:`open_unguarded`, through Pillow's plugin registry (the formats ``Image.open`` tries,
in the same order, each plugin parsing its header), skipping only the check ``Image.open``
adds. What Pillow checks inside its own operations (GIF frames, TIFF strips, ``crop``: the
bands cut from a decoded image) is still capped by Pillow's setting, whatever the application
set it to (default: refused above ~179 Mpx), far above any band of rows read here.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from PIL import Image

from fcnseg.host.images.messages import image_error

#: Largest image accepted by default (pixels): 2**28 = 268 Mpx, ~800 MB as RGB.
MAX_PIXELS = 2**28


def check_pixels(path: str | os.PathLike[str], width: int, height: int, limit: int | None) -> None:
    """Refuse ``width x height`` above ``limit`` pixels (None or 0: no limit); one line."""
    if limit and width * height > limit:
        raise image_error(path, "too_big", width=width, height=height, limit=limit)


def open_unguarded(path: Path) -> Image.Image:
    """Identify ``path`` and parse its header (nothing decoded), as ``Image.open`` would but
    without its process-wide size check; the caller checks the size (:func:`check_pixels`).

    Raises what ``Image.open`` raises: ``OSError`` for the file, ``UnidentifiedImageError``
    when no plugin accepts it.
    """
    with open(path, "rb") as handle:
        prefix = handle.read(16)
    tried: set[str] = set()
    for load_plugins in (Image.preinit, Image.init):
        load_plugins()
        for name in [n for n in Image.ID if n not in tried]:
            tried.add(name)
            factory, accept = Image.OPEN[name]
            try:
                accepted = accept is None or accept(prefix)
                if accepted and not isinstance(accepted, str):  # a str: "looks like it, but no"
                    return factory(str(path), str(path))  # the image owns (and closes) its file
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue  # not this format after all: the next plugin may take it
    raise Image.UnidentifiedImageError(f"cannot identify image file {str(path)!r}")
