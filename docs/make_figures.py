"""Draw the README's picture: a sample scene, its mask and the overlay, from the default package.

Runs the shipped deployment package on the bit-accurate simulator (numpy only; matplotlib for
the figure), so the picture shows exactly what ``fcnseg segment`` computes::

    .venv/bin/python docs/make_figures.py            # -> docs/img/segmentation.png

``--package DIR`` draws another package's result; ``--image`` another picture.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # a file, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from PIL import Image  # noqa: E402

from fcnseg.host import Segmenter  # noqa: E402
from fcnseg.host.images import load_image, overlay  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT / "samples" / "scene-240x700.jpg"
DEFAULT_OUTPUT = ROOT / "docs" / "img" / "segmentation.png"


def _palette_image(picture: Image.Image, fixed: np.ndarray, colours: int) -> Image.Image:
    """A palette of ``colours``: ``fixed`` ones first, then an adaptive palette of ``picture``."""
    n = colours - len(fixed)
    adaptive = picture.quantize(colors=n).getpalette()[: 3 * n]
    values = [int(v) for v in np.asarray(fixed, dtype=np.uint8).ravel()] + adaptive
    holder = Image.new("P", (1, 1))
    holder.putpalette(values + [0] * (768 - len(values)))
    return holder


def draw(package: str | None, image_path: Path, output: Path) -> Path:
    """Segment ``image_path`` with ``package`` on the simulator and save image | mask | overlay."""
    seg = Segmenter.load(package, "sim")
    image = load_image(image_path)
    labels = seg(image)
    classes = seg.classes or [str(i) for i in range(len(seg.output_scale))]
    clear = tuple(i for i, name in enumerate(classes) if name == "background")
    panels = {
        "image": image,
        "mask (classes)": seg.palette[labels],
        "overlay": overlay(image, labels, seg.palette, 0.55, clear),
    }
    height, width = image.shape[:2]
    rows = 3 if width > 2 * height else 1  # wide pictures stack, others sit side by side
    cols = 3 // rows
    size = (width * cols / 80 + 0.4, height * rows / 80 * 1.12 + 0.5)
    fig, axes = plt.subplots(rows, cols, figsize=size, dpi=80, squeeze=False)
    axes = axes.ravel()
    for ax, (title, panel) in zip(axes, panels.items(), strict=True):
        ax.imshow(panel)
        ax.set_title(title)
        ax.axis("off")
    legend = [Patch(color=seg.palette[i] / 255, label=name) for i, name in enumerate(classes)]
    fig.legend(handles=legend, loc="lower center", ncol=len(legend), frameon=False)
    fig.tight_layout(rect=(0, 0.4 / size[1], 1, 1))
    output.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    # 64 colours keep the committed PNG small (the scene is noisy RGB); the class colours are
    # put in the palette first so the mask and the legend keep their exact colours.
    picture = Image.open(buffer).convert("RGB")
    fixed = _palette_image(picture, seg.palette[: len(classes)], 64)
    picture.quantize(palette=fixed, dither=Image.Dither.NONE).save(output, optimize=True)
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default=None, help="package folder [default: shipped]")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    path = draw(args.package, args.image, args.output)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
