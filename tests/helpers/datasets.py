"""Tiny labelled datasets in the real layouts, and a package with a dataset's class count, for
the ``fcnseg eval`` tests (local and on a cluster).

Images are random pixels and labels random classes (VOC with a void first row): what is checked
is the scoring path, integer for integer, not what a net learns. The realistic layouts the
real-data configs are measured on are in tests/quantize/test_real_data_configs.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fcnseg.host.package import write_package
from fcnseg.quantize.data.palette import voc_palette
from tests.helpers.packages import make_layers


def classes_package(folder: Path, classes: int, seed: int = 0) -> Path:
    """A real package for an 8x8 tile: 3x3 conv + thresholds, 2x2 max-pool, 1x1 score conv
    (tests/helpers/packages.py's layers with ``classes`` scores)."""
    io = {
        "input": {"name": "x", "dtype": "UINT8", "shape": [1, 8, 8, 3], "layout": "NHWC"},
        "output": {
            "name": "y",
            "dtype": "INT16",
            "shape": [1, 4, 4, classes],
            "layout": "NHWC",
            "scale": [0.5] * classes,
            "bias": np.linspace(-1, 1, classes).tolist(),
        },
    }
    card = {
        "name": f"toy{classes}",
        "arch": "toy",
        "classes": [f"class{i}" for i in range(classes)],
        "palette": [[i, i, i] for i in range(classes)],
        "tile": [8, 8],
        "output_stride": 2,
        "receptive_field": 4,
        "normalisation": "x/255",
    }
    layers = make_layers(classes=classes, rng=np.random.default_rng(seed))
    return write_package(folder, model_card=card, io=io, layers=layers, board="pynq-z2")


def _image_and_label(rng: np.random.Generator, classes: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = int(rng.integers(12, 30)), int(rng.integers(12, 30))
    label = rng.integers(0, classes, size=(h, w), dtype=np.uint8)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8), label


def write_voc(root: Path, splits: dict[str, int], seed: int = 1) -> Path:
    """``VOCdevkit/VOC2012`` with JPEGImages/, SegmentationClass/ (palette PNGs), ImageSets/:
    ``splits[split]`` images per split, 12..29 px a side."""
    rng = np.random.default_rng(seed)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for split, count in splits.items():
        names = [f"2008_{split}{i:04d}" for i in range(count)]
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for name in names:
            image, label = _image_and_label(rng, 21)
            label[0] = 255  # VOC's void border
            png = Image.fromarray(label, mode="P")
            png.putpalette(voc_palette().ravel().tolist())
            png.save(root / "SegmentationClass" / f"{name}.png")
            Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg")
    return root


def write_cityscapes(root: Path, splits: dict[str, int], seed: int = 2) -> Path:
    """leftImg8bit/<split>/<city>/ and gtFine/<split>/<city>/ with labelIds PNGs."""
    rng = np.random.default_rng(seed)
    for split, count in splits.items():
        images = root / "leftImg8bit" / split / "aachen"
        labels = root / "gtFine" / split / "aachen"
        images.mkdir(parents=True)
        labels.mkdir(parents=True)
        for i in range(count):
            image, _ = _image_and_label(rng, 19)
            ids = rng.integers(0, 34, size=image.shape[:2], dtype=np.uint8)  # 34 label ids
            stem = f"aachen_{i:06d}_000019"
            Image.fromarray(image).save(images / f"{stem}_leftImg8bit.png")
            Image.fromarray(ids).save(labels / f"{stem}_gtFine_labelIds.png")
    return root
