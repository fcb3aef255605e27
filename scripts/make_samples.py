"""Write the sample images ``make demo`` segments: ``samples/*.jpg`` (JPEG quality 90).

Sources, nothing downloaded:

- four photos scikit-image bundles with its package (``skimage.data``): astronaut, chelsea,
  coffee, rocket; each resized so its longer side is at most ``MAX_SIDE`` pixels;
- two synthetic scenes from the held-out ``test`` split of ``fcnseg.quantize.data.synthetic``
  (the kind of scene the default model is trained on) at odd sizes, so the demo also exercises
  the tiling: 333x517 and a wide 240x700.

Run from the repository root in ``.venv`` (scikit-image is a training extra):
``.venv/bin/python scripts/make_samples.py [--out samples]``. The output is deterministic.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

MAX_SIDE = 480
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
#: (name, test-split index, (height, width))
SCENES = (("scene-333x517", 0, (333, 517)), ("scene-240x700", 1, (240, 700)))


def photo(name: str) -> Image.Image:
    import skimage.data

    image = Image.fromarray(np.asarray(getattr(skimage.data, name)())[..., :3])
    scale = MAX_SIDE / max(image.size)
    if scale < 1:
        size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def scene(index: int, size: tuple[int, int]) -> Image.Image:
    from fcnseg.quantize.data.synthetic import SPLIT_SEEDS, render_scene

    rgb, _ = render_scene(SPLIT_SEEDS["test"] + index, size)
    return Image.fromarray(rgb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("samples"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    images = [(name, photo(name)) for name in PHOTOS]
    images += [(name, scene(index, size)) for name, index, size in SCENES]
    for name, image in images:
        path = args.out / f"{name}.jpg"
        image.save(path, quality=90)
        print(f"{path}: {image.width}x{image.height}, {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
