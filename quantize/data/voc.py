"""Pascal VOC segmentation, read from the dataset's own folder layout.

    ROOT/JPEGImages/<id>.jpg
    ROOT/SegmentationClass/<id>.png          palette PNG; pixel value = class, 255 = ignore
    ROOT/ImageSets/Segmentation/<split>.txt  one <id> per line (train, val, trainval)

``ROOT`` is the ``VOC2012`` folder; a folder holding ``VOC2012`` or ``VOCdevkit/VOC2012`` is
accepted too. numpy + Pillow only. 255 (object borders and "difficult" regions) is left as is:
the metrics and the loss ignore it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcnseg.errors import UserError
from fcnseg.quantize.data.base import check_pair, read_label, read_rgb
from fcnseg.quantize.data.palette import voc_palette

#: The 21 VOC classes (background + 20 objects), index = label value.
VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

_LAYOUT = ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")


def find_voc_root(root: str | Path) -> Path:
    """Return the folder holding the VOC layout, or raise :class:`UserError` saying what lacks."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"VOC root {root} is not a folder")
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if all((candidate / part).is_dir() for part in _LAYOUT):
            return candidate
    missing = [part for part in _LAYOUT if not (root / part).is_dir()]
    raise UserError(
        f"{root} is not a Pascal VOC folder: missing {', '.join(missing)} "
        "(expected JPEGImages/, SegmentationClass/, ImageSets/Segmentation/)"
    )


class VOCSegmentation:
    """One split of a VOC-layout dataset as ``(image (H,W,3) uint8, label (H,W) uint8)`` pairs."""

    classes: tuple[str, ...] = VOC_CLASSES

    def __init__(self, root: str | Path, split: str = "train") -> None:
        self.root = find_voc_root(root)
        split_file = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not split_file.is_file():
            available = sorted(p.stem for p in split_file.parent.glob("*.txt"))
            raise UserError(f"VOC split {split!r} not found ({split_file}); available: {available}")
        ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
        if not ids:
            raise UserError(f"VOC split file {split_file} lists no images")
        missing = [
            i
            for i in ids
            if not (self.root / "JPEGImages" / f"{i}.jpg").is_file()
            or not (self.root / "SegmentationClass" / f"{i}.png").is_file()
        ]
        if missing:
            raise UserError(
                f"VOC split {split!r}: {len(missing)} of {len(ids)} images lack a JPEG or label "
                f"PNG, e.g. {missing[0]}"
            )
        self.split = split
        self.ids = ids
        self.palette = voc_palette(len(VOC_CLASSES))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        name = self.ids[index]
        image = read_rgb(self.root / "JPEGImages" / f"{name}.jpg")
        label = read_label(self.root / "SegmentationClass" / f"{name}.png")
        check_pair(image, label, f"VOC image {name}")
        return image, label

    def __repr__(self) -> str:
        return f"VOCSegmentation(root={str(self.root)!r}, split={self.split!r}, n={len(self)})"
