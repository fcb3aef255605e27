"""The images the benchmarks feed: the sample photos when a folder of them is given, else stand-ins.

``fcnseg bench --samples DIR`` (``make bench`` passes the repository's ``samples/``) points the
suite at real photos; an installed fcnseg (a wheel on a board) has no ``samples/`` folder, so
the benchmarks that need a photo get a deterministic synthetic one instead: smooth colour
gradients with a few filled discs and bars, so the tiles are neither constant (which would make
the upsampling's uniform-cell shortcut unrealistically fast) nor white noise. Which of the two
was used is part of each benchmark's method text (:func:`describe`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: the photo the timing benchmarks crop from (in ``--samples DIR``).
PHOTO_NAME = "astronaut.jpg"


def synthetic_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic ``(height, width, 3)`` uint8 scene: gradients, discs and bars."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    y, x = rows / max(1, height - 1), cols / max(1, width - 1)
    image = np.stack([40 + 150 * y, 60 + 120 * x, 200 - 50 * (x + y)], axis=-1)
    for _ in range(6):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(0.05, 0.2) * min(height, width)
        image[(rows - cy) ** 2 + (cols - cx) ** 2 < radius**2] = rng.uniform(0, 255, 3)
    for _ in range(3):
        top = int(rng.integers(0, max(1, height - 8)))
        image[top : top + max(2, height // 16), :] = rng.uniform(0, 255, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def photo(samples_dir: Path | None, height: int = 512, width: int = 512) -> np.ndarray:
    """The sample photo resized to ``height x width`` (RGB uint8), or :func:`synthetic_photo`."""
    path = None if samples_dir is None else Path(samples_dir) / PHOTO_NAME
    if path is None or not path.is_file():
        return synthetic_photo(height, width)
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((width, height)))


def describe(samples_dir: Path | None) -> str:
    """Which photo :func:`photo` uses, for a benchmark's method text."""
    path = None if samples_dir is None else Path(samples_dir) / PHOTO_NAME
    if path is not None and path.is_file():
        return f"the sample photo {PHOTO_NAME}"
    return "a synthetic photo (gradients, discs, bars; no --samples folder with " + PHOTO_NAME + ")"


def sample_files(samples_dir: Path | None, out_dir: Path, count: int | None) -> list[Path]:
    """Image files in ``out_dir``: copies of the first ``count`` samples (all when None), else
    ``count`` (default 6) synthetic PNGs.

    Synthetic ones come in three sizes (480x640, 512x512, 800x480) so tiling sees more than one
    canvas shape, as it does with the real samples.
    """
    import shutil

    from PIL import Image

    from fcnseg.host.cli import IMAGE_SUFFIXES

    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    found = []
    if samples_dir is not None and Path(samples_dir).is_dir():
        found = sorted(p for p in Path(samples_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if found:
        copies = []
        for path in found[:count]:
            shutil.copy(path, out_dir / path.name)
            copies.append(out_dir / path.name)
        return copies
    shapes = ((480, 640), (512, 512), (800, 480))
    written = []
    for i in range(6 if count is None else count):
        height, width = shapes[i % len(shapes)]
        path = out_dir / f"synthetic-{i}.png"
        Image.fromarray(synthetic_photo(height, width, seed=i)).save(path)
        written.append(path)
    return written
