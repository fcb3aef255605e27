"""Class palettes: the colours label maps are drawn with.

The Pascal VOC palette is the dataset's own convention (its ``SegmentationClass`` PNGs are
palette images using it), so a synthetic-scene label PNG opens in any VOC tool with sensible
colours. Cityscapes colours follow the dataset's ``labels.py`` for its 19 training classes.
numpy only. The VOC rule itself lives in the host runtime (it colours masks on a board, and the
host may not import this stage), so this module reuses it rather than repeating it.
"""

from __future__ import annotations

import numpy as np

from fcnseg.host.images import voc_palette as host_voc_palette

#: The label value every loader and metric treats as "no label" (VOC's object borders, unmapped
#: Cityscapes classes, the padding of a crop).
IGNORE_INDEX = 255


def voc_palette(n: int = 256) -> np.ndarray:
    """Return the Pascal VOC palette, ``(n, 3) uint8`` (the host's
    :func:`fcnseg.host.images.voc_palette`, the one implementation, with ``n`` checked).

    VOC's rule: bit ``3k + c`` of the class index sets bit ``7 - k`` of channel ``c``.
    Entry 255 (``IGNORE_INDEX``) is ``(224, 224, 192)``, the cream of VOC's object borders.
    """
    if not 0 < n <= 256:
        raise ValueError(f"palette size must be in 1..256, got {n}")
    return host_voc_palette(n)


#: Cityscapes' 19 training classes, in train-id order.
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

#: Their colours, from Cityscapes' ``labels.py``.
CITYSCAPES_COLORS: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)


def cityscapes_palette() -> np.ndarray:
    """Return the 19 Cityscapes training-class colours as ``(19, 3) uint8``."""
    return np.array(CITYSCAPES_COLORS, dtype=np.uint8)
