"""Images in and out: decode anything Pillow reads to RGB uint8, write masks/overlays atomically.

Decoding (:func:`load_image`) follows the model card's input convention (RGB, 8 bits per channel,
raw 0..255 values; the net does its own ``/255``):

- EXIF orientation is applied first (a phone photo is segmented the way it is displayed).
- Gray ``L``/``1``, palette ``P``, ``LA``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: Pillow's own
  conversion to RGB (a palette with transparency goes through RGBA, below).
- 16-bit and 32-bit gray (``I;16``, ``I``) and float (``F``): scaled to 0..255 by the type's full
  range (``I;16``: ``v >> 8``; ``I``: 0..65535 clipped, the range PNG 16-bit uses; ``F``: 0..1
  clipped), then replicated to three channels.
- Alpha (``RGBA``, ``LA``, ``PA``, transparent palettes): composited on **black**, i.e. each
  channel times alpha/255. Black is pixel value 0, the same value the canvas is padded with
  (:mod:`fcnseg.host.tiling`) and the value the net's zero padding stands for, so a transparent
  region looks to the net like the outside of the image.
- Decompression bombs: images above ``max_pixels`` (default 2**28 = 268 Mpx, ~800 MB as RGB) are
  refused before decoding, with a :class:`~fcnseg.errors.UserError` naming the file.

Writing: masks are palette PNGs (``P`` mode) with the model's palette (VOC's by default) so the
label value *is* the pixel value; overlays blend the mask colours over the image; raw scores go to
``.npy``. Every write goes to a temporary file in the target folder and is then renamed with
:func:`os.replace`, so a reader never sees a half-written file and an interrupted run leaves no
truncated output.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps

from fcnseg.errors import UserError

#: Largest image accepted (pixels); Pillow's own guard is raised to this, not disabled.
MAX_PIXELS = 2**28


def voc_palette(n: int = 256) -> np.ndarray:
    """Pascal VOC's palette ``(n, 3) uint8``: bit ``3k + c`` of a class sets bit ``7 - k`` of ``c``.

    >>> voc_palette(3).tolist()
    [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    """
    index = np.arange(n)
    palette = np.zeros((n, 3), dtype=np.uint8)
    for k in range(8):
        for c in range(3):
            palette[:, c] |= (((index >> (3 * k + c)) & 1) << (7 - k)).astype(np.uint8)
    return palette


def to_rgb(image: Image.Image) -> np.ndarray:
    """Convert a decoded Pillow image to ``(H, W, 3) uint8`` RGB (rules in the module docstring)."""
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint16)
        rgb = rgba[..., :3] * rgba[..., 3:4]
        return ((rgb + 127) // 255).astype(np.uint8)  # rounded, black background
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        gray = (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "I":
        gray = (np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        value = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
        gray = np.round(value * 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def load_image(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``path`` to ``(H, W, 3) uint8`` RGB, upright; a bad file raises :class:`UserError`."""
    path = Path(path)
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow warns above it and refuses above twice it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise UserError(
                        f"{path}: {width}x{height} pixels is above the limit of {max_pixels} "
                        "(decompression bomb guard)"
                    )
                image.load()
                upright = ImageOps.exif_transpose(image)
                return to_rgb(upright if upright is not None else image)
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory") from None
    except Image.UnidentifiedImageError:
        raise UserError(f"{path}: not an image Pillow can read") from None
    except Image.DecompressionBombError as error:
        raise UserError(f"{path}: {error} (decompression bomb guard)") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise UserError(f"{path}: cannot decode ({error})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit


def as_rgb_array(image: np.ndarray | Image.Image | str | os.PathLike[str]) -> np.ndarray:
    """Accept a uint8 array ``(H, W, 3)`` or ``(H, W)``, a Pillow image or a path; return RGB."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return to_rgb(ImageOps.exif_transpose(image) or image)
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image arrays must be (H, W, 3) or (H, W), got {array.shape}")
    return array


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path`` for writing; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _palette_bytes(palette: np.ndarray) -> bytes:
    full = np.zeros((256, 3), dtype=np.uint8)
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
    full[: len(palette)] = palette
    return full.tobytes()


def save_mask(path: str | os.PathLike[str], labels: np.ndarray, palette: np.ndarray) -> None:
    """Write ``labels (H, W)`` (< 256 classes) as a palette PNG: pixel value = class index."""
    if labels.ndim != 2 or labels.max(initial=0) > 255:
        raise ValueError(f"masks are (H, W) with labels < 256, got {labels.shape}")
    image = Image.fromarray(labels.astype(np.uint8))  # mode L; putpalette makes it P
    image.putpalette(_palette_bytes(palette))
    with atomic_open(path) as handle:
        image.save(handle, format="PNG")


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    palette: np.ndarray,
    alpha: float = 0.5,
    clear: tuple[int, ...] = (),
) -> np.ndarray:
    """Blend the label colours over ``image``: ``(1 - alpha) * image + alpha * colour``, uint8.

    Pixels labelled with a class in ``clear`` (e.g. VOC's black "background") keep the image.
    """
    colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[labels]
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    out = np.clip(np.round(blend), 0, 255).astype(np.uint8)
    if clear:
        keep = np.isin(labels, clear)
        out[keep] = image[keep]
    return out


def save_overlay(
    path: str | os.PathLike[str],
    image: np.ndarray,
    labels: np.ndarray,
    palette: np.ndarray,
    alpha: float = 0.5,
    clear: tuple[int, ...] = (),
) -> None:
    """Write :func:`overlay` of ``labels`` on ``image``; JPEG (quality 90) if the suffix says so."""
    path = Path(path)
    blended = Image.fromarray(overlay(image, labels, palette, alpha, clear))
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    with atomic_open(path) as handle:
        blended.save(handle, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))


def save_array(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` (no pickle) atomically."""
    with atomic_open(path) as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
