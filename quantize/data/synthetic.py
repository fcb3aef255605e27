"""Synthetic scenes: textured shapes on textured backgrounds, labelled per pixel, any size.

Why synthetic: the shipped default model must train on this CPU machine in minutes and be
evaluated reproducibly with nothing downloaded. A shape's class is its outline (disc, square,
triangle, star, ring, bar); its surface is a patch of one of the real photos scikit-image bundles
(astronaut, chelsea, coffee, ...), so colour and texture carry no class information and the net must
learn shapes. Backgrounds are tinted natural textures (grass, gravel, brick, ...). Objects get a
random size, rotation and position (partly outside the frame too) and are painted in order, so
later ones occlude earlier ones; a ring's hole shows whatever lies beneath it.

Every scene is a pure function of ``(seed, size)``: ``numpy.random.default_rng(seed)`` drives all
choices and Pillow draws and resizes, so the same seed gives the same pixels on every machine.
Splits are disjoint seed ranges (:data:`SPLIT_SEEDS`): ``train`` from 0, ``val`` from 1,000,000,
``test`` (held out, used for the reported figures) from 2,000,000.

numpy + Pillow only; scikit-image is imported inside :func:`_photos` (its bundled photos are the
textures), so importing this module never needs it.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from fcnseg.errors import UserError
from fcnseg.quantize.data.palette import voc_palette

#: Class names; index = label value. Background is 0, as in VOC.
CLASSES: tuple[str, ...] = ("background", "disc", "square", "triangle", "star", "ring", "bar")

#: First seed of each split; scene ``i`` of a split is ``render_scene(SPLIT_SEEDS[split] + i)``.
SPLIT_SEEDS: dict[str, int] = {"train": 0, "val": 1_000_000, "test": 2_000_000}

#: Default number of scenes per split.
DEFAULT_LENGTHS: dict[str, int] = {"train": 2000, "val": 100, "test": 200}

#: Colour photos used as object surfaces (bundled with scikit-image; none downloads). Photos that
#: are themselves shapes of a class (``colorwheel`` is a ring, ``coins`` are discs,
#: ``retina`` a disc on black) stay out.
OBJECT_PHOTOS: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
)
#: Grey textures and photos used as backgrounds, tinted per scene.
BACKGROUND_TEXTURES: tuple[str, ...] = (
    "grass",
    "gravel",
    "brick",
    "moon",
    "camera",
    "clock",
)

#: Scenes are drawn at this scale: object radii in pixels are :data:`RADIUS_RANGE` times
#: ``object_scale``, and a ``REFERENCE_SIDE``-square scene holds :data:`OBJECTS_RANGE` objects
#: (proportionally more on larger canvases), so tiles of a big scene look like small scenes.
REFERENCE_SIDE = 256
RADIUS_RANGE = (16.0, 56.0)
OBJECTS_RANGE = (3, 7)


@lru_cache(maxsize=1)
def _photos() -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Load the bundled photos once: (colour object photos, grey background textures)."""
    try:
        from skimage import data
    except ImportError as error:  # pragma: no cover - skimage is in the training venv
        raise UserError(
            "synthetic scenes need scikit-image (its bundled photos are the textures); "
            "install the 'train' extra"
        ) from error
    objects = []
    for name in OBJECT_PHOTOS:
        photo = np.asarray(getattr(data, name)())
        if photo.ndim == 2:
            photo = np.repeat(photo[..., None], 3, axis=2)
        objects.append(np.ascontiguousarray(photo[..., :3], dtype=np.uint8))
    backgrounds = []
    for name in BACKGROUND_TEXTURES:
        texture = np.asarray(getattr(data, name)())
        if texture.ndim == 3:
            texture = texture[..., :3].mean(axis=2)
        backgrounds.append(np.ascontiguousarray(texture, dtype=np.uint8))
    return tuple(objects), tuple(backgrounds)


def _crop_resized(
    rng: np.random.Generator, photo: np.ndarray, width: int, height: int
) -> np.ndarray:
    """A random window of ``photo`` (random zoom, same aspect as the target) resized to size."""
    ph, pw = photo.shape[:2]
    aspect = width / height
    # The window's height: a random fraction of what fits, so the zoom varies per object.
    max_h = min(ph, pw / aspect)
    win_h = max(4.0, max_h * rng.uniform(0.25, 1.0))
    win_w = min(pw, win_h * aspect)
    top = rng.uniform(0, ph - win_h)
    left = rng.uniform(0, pw - win_w)
    box = (left, top, left + win_w, top + win_h)
    mode = "RGB" if photo.ndim == 3 else "L"
    image = Image.fromarray(photo, mode=mode)
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR, box=box))


def _background(
    rng: np.random.Generator, textures: tuple[np.ndarray, ...], height: int, width: int
) -> np.ndarray:
    """A grey texture mapped between two random colours, plus a soft colour gradient."""
    texture = textures[rng.integers(len(textures))]
    grey = _crop_resized(rng, texture, width, height).astype(np.float32) / 255.0
    dark = rng.uniform(0, 160, size=3).astype(np.float32)
    light = rng.uniform(90, 255, size=3).astype(np.float32)
    image = dark + grey[..., None] * (light - dark)
    # A linear gradient in a random direction, so the background is not stationary.
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (math.cos(angle) * xx + math.sin(angle) * yy) / max(height, width)
    image += ramp[..., None] * rng.uniform(-60, 60, size=3).astype(np.float32)
    return image


def _polygon(
    kind: str, cx: float, cy: float, radius: float, angle: float, rng: np.random.Generator
) -> list[tuple[float, float]]:
    """Vertices of a rotated regular shape (square, triangle, star) or bar, centred on (cx, cy)."""
    if kind == "square":
        radii, count = [radius], 4
    elif kind == "triangle":
        radii, count = [radius * 1.15], 3
    elif kind == "star":
        radii, count = [radius * 1.1, radius * rng.uniform(0.4, 0.5)], 10
    elif kind == "bar":
        half_length = radius * rng.uniform(1.2, 1.6)
        half_width = radius * rng.uniform(0.2, 0.32)
        corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        cos, sin = math.cos(angle), math.sin(angle)
        return [
            (
                cx + sx * half_length * cos - sy * half_width * sin,
                cy + sx * half_length * sin + sy * half_width * cos,
            )
            for sx, sy in corners
        ]
    else:
        raise ValueError(f"not a polygon shape: {kind}")
    step = 2 * math.pi / count
    return [
        (
            cx + radii[k % len(radii)] * math.cos(angle + k * step),
            cy + radii[k % len(radii)] * math.sin(angle + k * step),
        )
        for k in range(count)
    ]


def _shape_mask(
    rng: np.random.Generator, kind: str, height: int, width: int, scale: float
) -> np.ndarray:
    """A boolean mask of one randomly placed, sized and rotated shape of class ``kind``."""
    radius = rng.uniform(*RADIUS_RANGE) * scale
    # Centres may lie a little outside the frame, so shapes are cut by the border too.
    cx = rng.uniform(-0.1 * width, 1.1 * width)
    cy = rng.uniform(-0.1 * height, 1.1 * height)
    angle = rng.uniform(0, 2 * math.pi)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if kind in ("disc", "ring"):
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
        if kind == "ring":
            inner = radius * rng.uniform(0.45, 0.62)
            draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    else:
        draw.polygon(_polygon(kind, cx, cy, radius, angle, rng), fill=255)
    return np.asarray(canvas) > 0


def render_scene(
    seed: int,
    size: tuple[int, int] = (256, 256),
    object_scale: float = 1.0,
    object_count: tuple[int, int] = OBJECTS_RANGE,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene: ``(image (H, W, 3) uint8, label (H, W) uint8)`` for ``size = (H, W)``.

    A pure function of its arguments. Labels index :data:`CLASSES`; every pixel is labelled (no
    ignore value), the visible top-most object wins. ``object_count`` is the range of the object
    count per ``REFERENCE_SIDE``-square (the image-level classifier's scenes hold fewer).
    """
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"scene size must be positive, got {size}")
    objects, textures = _photos()
    rng = np.random.default_rng(int(seed))
    image = _background(rng, textures, height, width)
    label = np.zeros((height, width), dtype=np.uint8)
    area_ratio = height * width / REFERENCE_SIDE**2
    low, high = object_count
    count = max(1, int(round(rng.uniform(low, high + 1) * area_ratio)))
    for _ in range(count):
        cls = int(rng.integers(1, len(CLASSES)))
        mask = _shape_mask(rng, CLASSES[cls], height, width, object_scale)
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        photo = objects[rng.integers(len(objects))]
        gain = rng.uniform(0.7, 1.3, size=3).astype(np.float32)
        if rows.size == 0:
            continue  # entirely outside the frame: nothing to paint
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        patch = _crop_resized(rng, photo, right - left, bottom - top).astype(np.float32) * gain
        window = mask[top:bottom, left:right]
        image[top:bottom, left:right][window] = patch[window]
        label[top:bottom, left:right][window] = cls
    image += rng.normal(0.0, 4.0, size=image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


class SyntheticScenes:
    """The synthetic scenes of one split as a dataset of ``(image, label)`` numpy pairs.

    ``SyntheticScenes("test")[i]`` is ``render_scene(SPLIT_SEEDS["test"] + i, size)``; ``length``
    defaults to :data:`DEFAULT_LENGTHS`, and must stay below the gap between split seeds so splits
    never share a scene.
    """

    classes: tuple[str, ...] = CLASSES

    def __init__(
        self,
        split: str = "train",
        size: tuple[int, int] = (256, 256),
        length: int | None = None,
        object_scale: float = 1.0,
    ) -> None:
        if split not in SPLIT_SEEDS:
            raise UserError(
                f"unknown synthetic split {split!r}; choose one of {sorted(SPLIT_SEEDS)}"
            )
        length = DEFAULT_LENGTHS[split] if length is None else int(length)
        if not 0 < length <= 1_000_000:
            raise UserError(f"synthetic split length must be in 1..1000000, got {length}")
        self.split = split
        self.size = (int(size[0]), int(size[1]))
        self.length = length
        self.object_scale = float(object_scale)
        self.palette = voc_palette(len(CLASSES))

    def __len__(self) -> int:
        return self.length

    def seed(self, index: int) -> int:
        """The scene seed behind item ``index``."""
        if not -self.length <= index < self.length:
            raise IndexError(f"scene {index} out of range for {self.length} scenes")
        return SPLIT_SEEDS[self.split] + index % self.length

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return render_scene(self.seed(index), self.size, self.object_scale)

    def __repr__(self) -> str:
        return (
            f"SyntheticScenes(split={self.split!r}, size={self.size}, length={self.length}, "
            f"object_scale={self.object_scale})"
        )
