"""Test images: real photos where scikit-image is installed (``.venv``), synthetic scenes where it
is not (``.venv-board``); scikit-image photo tiles for the hw tests; a decompression-bomb PNG."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A real photo (scikit-image's bundled files, read with Pillow) cropped/tiled to a size."""
    import skimage

    data = Path(skimage.__file__).parent / "data"
    from PIL import Image

    name = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"][seed % 4]
    img = np.asarray(Image.open(data / name).convert("RGB"))
    reps = (math.ceil(height / img.shape[0]), math.ceil(width / img.shape[1]), 1)
    return np.ascontiguousarray(np.tile(img, reps)[:height, :width])


def has_skimage() -> bool:
    try:
        import skimage  # noqa: F401
    except ImportError:
        return False
    return True


def image(height: int, width: int, seed: int = 0) -> np.ndarray:
    if has_skimage():
        return photo(height, width, seed)
    # .venv-board has no scikit-image: a scene of coloured regions with texture instead.
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, size=(12, 2)) * (height, width)
    colours = rng.integers(0, 256, size=(12, 3))
    yy, xx = np.mgrid[0:height, 0:width]
    owner = np.argmin(
        (yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2, 2
    )
    noise = rng.integers(-20, 21, size=(height, width, 3))
    return np.clip(colours[owner] + noise, 0, 255).astype(np.uint8)


PHOTOS = ("astronaut", "chelsea", "coffee")


def photo_tile(name: str, tile: tuple[int, int] = (64, 64)):
    """A real scikit-image photo resized to ``tile``: float32 NCHW holding integers 0..255."""
    import numpy as np
    import skimage.data
    from skimage.transform import resize

    img = getattr(skimage.data, name)()[..., :3]
    img = resize(img, tile, preserve_range=True, anti_aliasing=True)
    return np.round(img).astype(np.float32).transpose(2, 0, 1)[None]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A 100-byte PNG whose header claims ``width x height`` RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )
