"""``--hud``: the frames/s (and frames dropped) drawn in the corner of the overlay.

Measured over a sliding window of recent frames (:class:`Rate`), not since the start, so what
is shown follows the current load (a camera pointed at a busier scene is not faster in tiles,
but the encoder or a neighbour process may be). White text on a black box, Pillow's built-in
font at a size that follows the frame height, so it is readable on 160x120 and on 1080p.
"""

from __future__ import annotations

import functools
import time
from collections import deque

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Frames the displayed rate is measured over.
WINDOW = 30


class Rate:
    """Frames per second over the last :data:`WINDOW` frames (wall clock)."""

    def __init__(self, window: int = WINDOW) -> None:
        self.times: deque[float] = deque(maxlen=window + 1)

    def tick(self, now: float | None = None) -> float:
        """Count one frame now; the rate so far (0 until two frames)."""
        self.times.append(time.perf_counter() if now is None else now)
        span = self.times[-1] - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else 0.0


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1, or no FreeType: the bitmap font
        return ImageFont.load_default()


def draw_hud(picture: np.ndarray, text: str) -> np.ndarray:
    """``picture`` with ``text`` in its top-left corner (a new array; the input is kept)."""
    height = picture.shape[0]
    size = max(10, min(48, height // 20))
    image = Image.fromarray(picture)
    draw = ImageDraw.Draw(image)
    font = _font(size)
    left, top, right, bottom = draw.textbbox((size // 2, size // 2), text, font=font)
    pad = max(2, size // 5)
    draw.rectangle((left - pad, top - pad, right + pad, bottom + pad), fill=(0, 0, 0))
    draw.text((size // 2, size // 2), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def hud_text(fps: float, dropped: int, live: bool) -> str:
    """What the HUD says: the rate, and for a live source the frames dropped so far."""
    return f"{fps:5.1f} fps" + (f"  {dropped} dropped" if live else "")
