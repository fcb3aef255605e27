"""Training augmentation: random scale, random crop to the tile, horizontal flip.

Each transform takes and returns an ``(image (H,W,3) uint8, label (H,W) uint8)`` pair and draws
its randomness from a caller's ``numpy.random.Generator``, so a seeded generator reproduces the
exact same crops. Image and label always get the same geometric transform: the image is resized
bilinearly, the label with nearest neighbour (interpolating class indices would invent classes).
numpy + Pillow only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from fcnseg.quantize.data.palette import IGNORE_INDEX


def random_scale(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = (0.75, 1.25),
) -> tuple[np.ndarray, np.ndarray]:
    """Resize both by one factor drawn uniformly from ``scale_range`` (at least 1 pixel)."""
    factor = rng.uniform(*scale_range)
    height, width = label.shape
    new_size = (max(1, round(width * factor)), max(1, round(height * factor)))
    if new_size == (width, height):
        return image, label
    image = Image.fromarray(image).resize(new_size, Image.Resampling.BILINEAR)
    label = Image.fromarray(label).resize(new_size, Image.Resampling.NEAREST)
    return np.asarray(image), np.asarray(label)


def random_crop(
    image: np.ndarray,
    label: np.ndarray,
    tile: tuple[int, int],
    rng: np.random.Generator,
    fill: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a random ``tile = (H, W)`` window; pad first where the pair is smaller than the tile.

    Padding goes to the bottom/right, image pixels set to ``fill`` and labels to
    :data:`IGNORE_INDEX`, so the padded area adds nothing to the loss or the metrics.
    """
    tile_h, tile_w = int(tile[0]), int(tile[1])
    height, width = label.shape
    if height < tile_h or width < tile_w:
        pad_h, pad_w = max(0, tile_h - height), max(0, tile_w - width)
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=fill)
        label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_INDEX)
        height, width = label.shape
    top = int(rng.integers(0, height - tile_h + 1))
    left = int(rng.integers(0, width - tile_w + 1))
    window = (slice(top, top + tile_h), slice(left, left + tile_w))
    return image[window], label[window]


def random_hflip(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator, probability: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Mirror both left-right with ``probability``."""
    if rng.random() < probability:
        return image[:, ::-1], label[:, ::-1]
    return image, label


@dataclass(frozen=True)
class Augment:
    """Scale, crop to ``tile``, flip: the training pipeline, configured once, applied per sample.

    ``scale_range=(1, 1)`` and ``flip=False`` leave only the crop (what validation needs when its
    images are larger than the tile).
    """

    tile: tuple[int, int]
    scale_range: tuple[float, float] = (0.75, 1.25)
    flip: bool = True

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        if tuple(self.scale_range) != (1.0, 1.0):
            image, label = random_scale(image, label, rng, self.scale_range)
        image, label = random_crop(image, label, self.tile, rng)
        if self.flip:
            image, label = random_hflip(image, label, rng)
        return np.ascontiguousarray(image), np.ascontiguousarray(label)
