"""Decoding a whole image file to upright RGB: open, guard, decode, apply EXIF orientation.

:func:`load_image` is the entry point; :func:`decode` gives the upright Pillow image (the row
reader of formats that cannot be streamed uses it); :func:`image_size` reads the upright size
from the header alone (to route huge images to the strip path without decoding them).

- EXIF orientation is applied first (a phone photo is segmented the way it is displayed).
- A multi-frame file (animated GIF/WebP/PNG, multi-page TIFF) gives its first frame unless a
  ``frame`` is asked for; each frame is guarded and converted like a single image.
  :mod:`fcnseg.host.images.frames` counts frames and decodes every one of them in order
  (:func:`frame_rgb`), which is how ``fcnseg segment --frames all`` reads them.
- The size is checked against ``max_pixels`` (:mod:`fcnseg.host.images.guard`) before anything
  is decoded; each call has its own limit.
- Pixel modes become RGB by the rules of :mod:`fcnseg.host.images.modes`.
- JPEG is decoded at full resolution. Pillow's ``Image.draft`` (libjpeg's DCT-domain scaling
  by 1/2, 1/4, 1/8) is not used: it yields a smaller image whose pixels are not a resize of the
  full one, and the labels are defined on the full-resolution frame the net sees; it would only
  be exact for a user who asks for a downscaled input, which ``fcnseg segment`` does not offer.
  Measured at 512x1024 (``benchmarks/arm_budget.py``): a quality-90 JPEG decodes ~3x faster
  than the same photo as PNG, so JPEG input is the cheap choice where the camera allows.
- Any failure is one line (:mod:`fcnseg.host.images.messages`). Pillow's warnings about odd
  files (TIFF tags past the end, ...) are left to the application's warning filters: silencing
  them here (``warnings.catch_warnings``) would swap the process-wide filter list on every call
  and race between decoding threads, like the umask did (:mod:`fcnseg.atomic`). ``fcnseg
  segment`` filters them once, at start (:func:`quiet_pillow`).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fcnseg.errors import UserError
from fcnseg.host.images.guard import MAX_PIXELS, check_pixels, open_unguarded
from fcnseg.host.images.messages import frame_label, image_error, os_error, reason
from fcnseg.host.images.modes import to_rgb

_ORIENTATION = 0x0112  # EXIF tag
_TRANSPOSED = (5, 6, 7, 8)  # orientations that swap width and height


@contextlib.contextmanager
def one_line(label: str) -> Iterator[None]:
    """Turn what opening and decoding raise into the one-line :class:`UserError` of
    :mod:`~fcnseg.host.images.messages`, naming ``label`` (the path, or a frame of it)."""
    try:
        yield
    except UserError:
        raise
    except Image.UnidentifiedImageError:
        raise image_error(label, "unidentified") from None
    except (FileNotFoundError, IsADirectoryError, PermissionError) as error:
        raise os_error(label, error) from None
    except Image.DecompressionBombError as error:  # Pillow's own guard, while decoding frames
        raise image_error(label, "pillow_bomb", reason=error) from None
    except MemoryError:
        raise image_error(label, "memory") from None
    except Exception as error:  # Pillow's plugins raise many kinds on malformed data
        raise image_error(label, "undecodable", reason=reason(error)) from None


def _seek(image: Image.Image, label: str, frame: int, max_pixels: int) -> None:
    """Move ``image`` to ``frame`` and guard that frame's size: TIFF pages have sizes of their
    own, and a GIF frame may extend the canvas. Pillow's seek is cheap for TIFF (it follows the
    IFD chain); for GIF, WebP and APNG it decodes every frame between, each a delta on the one
    before (:mod:`fcnseg.host.images.frames` walks them in order)."""
    if image.tell() != frame:
        image.seek(frame)
    check_pixels(label, *image.size, max_pixels)


def _stored_size(image: Image.Image) -> tuple[int, int]:
    """A TIFF page's size as stored (Pillow 11+ reports it turned by the orientation tag)."""
    return (image.tag_v2.get(256), image.tag_v2.get(257))


def _load(image: Image.Image) -> None:
    """Decode ``image``. Works around Pillow 11-13 (seen in 12.3 and 13.0): an uncompressed
    single-strip TIFF page in a mode Pillow memory-maps (L, P, RGBA, 16-bit gray) whose
    orientation swaps width and height is mapped with the turned size, so its rows come out
    scrambled; without a file name Pillow decodes it through the ordinary path, which is right."""
    if image.format == "TIFF" and image.size != _stored_size(image):
        image.filename = ""  # ImageFile.load memory-maps only images that have one
    image.load()


def _upright(image: Image.Image) -> Image.Image:
    """The decoded ``image`` turned by its EXIF orientation: ``image`` itself when upright
    (``exif_transpose`` would copy even an upright image), else a turned copy.

    Pillow turns TIFF pages itself while loading them, each by its own tag, which it then drops,
    so a loaded TIFF page reads upright here; a GIF, WebP or APNG has one EXIF block for the
    file, applied to every frame."""
    if image.getexif().get(_ORIENTATION, 1) in (None, 1):
        return image
    return ImageOps.exif_transpose(image) or image


def _rgb(image: Image.Image, label: str) -> np.ndarray:
    try:
        return to_rgb(image)
    except Exception as error:  # a mode to_rgb cannot convert
        raise image_error(label, "unconvertible", reason=reason(error)) from None


def _load_upright(path: Path, label: str, max_pixels: int, frame: int) -> Image.Image:
    """Open, guard and decode frame ``frame`` of ``path``; the upright image. Pillow's
    exceptions pass through."""
    image = open_unguarded(path)
    try:
        check_pixels(label, *image.size, max_pixels)
        if frame:
            _seek(image, label, frame, max_pixels)
        _load(image)
        upright = _upright(image)
    except BaseException:
        image.close()
        raise
    if upright is not image:
        image.close()
    return upright


def decode(
    path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS, frame: int | None = None
) -> Image.Image:
    """The upright, fully decoded Pillow image of ``path`` (of its frame ``frame``, named so in
    messages; None: the first or only image, named as the file); any failure is a
    :class:`UserError`."""
    path = Path(path)
    label = frame_label(path, frame)
    with one_line(label):
        return _load_upright(path, label, max_pixels, frame or 0)


def frame_rgb(image: Image.Image, label: str, frame: int, max_pixels: int) -> np.ndarray:
    """Frame ``frame`` of the open ``image`` as upright ``(H, W, 3) uint8`` RGB, converted like a
    whole file (:func:`load_image`). ``image`` stays open at that frame, so the next frame of a
    GIF, WebP or APNG is decoded from it, not from the start; any failure is a
    :class:`UserError` naming ``label``."""
    with one_line(label):
        _seek(image, label, frame, max_pixels)
        _load(image)
        upright = _upright(image)
    try:
        return _rgb(upright, label)
    finally:
        if upright is not image:
            upright.close()


def load_image(
    path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS, frame: int | None = None
) -> np.ndarray:
    """Decode ``path`` (its frame ``frame``: :func:`decode`) to ``(H, W, 3) uint8`` RGB, upright;
    a bad file raises :class:`UserError`."""
    image = decode(path, max_pixels, frame)
    try:
        return _rgb(image, frame_label(path, frame))
    finally:
        image.close()


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


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation from the header. PNG keeps EXIF in an ``eXIf`` chunk that Pillow
    finds only by decoding, so for PNG only an ``eXIf`` before the pixels is seen (where the
    PNG spec wants it)."""
    if image.format == "TIFF" and image.size != _stored_size(image):
        return 1  # Pillow has turned the size already (it turns TIFF pages while loading them)
    if image.format != "PNG":
        return image.getexif().get(_ORIENTATION, 1)
    raw = image.info.get("exif")
    if not raw:
        return 1
    exif = Image.Exif()
    exif.load(raw)
    return exif.get(_ORIENTATION, 1)


def image_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """``(height, width)`` of the upright image from its header only (nothing decoded), or
    None if unreadable (the decoding path then reports why)."""
    try:
        with open_unguarded(Path(path)) as image:
            width, height = image.size
            orientation = _orientation(image)
    except Exception:
        return None
    return (width, height) if orientation in _TRANSPOSED else (height, width)


def quiet_pillow() -> None:
    """Ignore the warnings Pillow's modules issue (odd files, its own bomb warning), from now on
    and process-wide: for a command line, whose outcome per file is an output or one line. Call
    it once, before threads start; the library itself never changes warning filters."""
    warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
