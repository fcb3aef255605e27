"""Pixel modes to RGB: every mode Pillow decodes becomes ``(H, W, 3) uint8`` by one rule each.

The model card's input convention is RGB, 8 bits per channel, raw 0..255 values (the net does
its own ``/255``):

- Gray ``L``/``1``, palette ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: Pillow's own conversion
  to RGB (a palette with transparency goes through RGBA, below).
- 16-bit and 32-bit gray (``I;16``, ``I``) and float (``F``): scaled to 0..255 by the type's full
  range (``I;16``: ``v >> 8``; ``I``: 0..65535 clipped, the range PNG 16-bit uses; ``F``: 0..1
  clipped), then replicated to three channels.
- Alpha (``RGBA``, ``LA``, ``PA``, transparent palettes): composited on **black**, i.e. each
  channel times alpha/255, rounded. Black is pixel value 0, the same value the canvas is padded
  with (:mod:`fcnseg.host.tiling`) and the value the net's zero padding stands for, so a
  transparent region looks to the net like the outside of the image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_GRAY16_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def to_rgb(image: Image.Image) -> np.ndarray:
    """Convert a decoded Pillow image to ``(H, W, 3) uint8`` RGB (rules in the module docstring)."""
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint16)
        rgb = rgba[..., :3] * rgba[..., 3:4]
        return ((rgb + 127) // 255).astype(np.uint8)  # rounded, black background
    if mode in _GRAY16_MODES:
        return _gray_to_rgb((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8))
    if mode == "I":
        gray = np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8
        return _gray_to_rgb(gray.astype(np.uint8))
    if mode == "F":
        value = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
        return _gray_to_rgb(np.round(value * 255).astype(np.uint8))
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()
