"""Cityscapes fine annotations, read from the dataset's own folder layout.

    ROOT/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    ROOT/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

The ``labelIds`` PNGs hold Cityscapes' 34 label ids; training uses 19 classes, so ids map to
train ids through :data:`LABEL_TO_TRAIN` (Cityscapes' ``labels.py``) and every other id (void,
ego vehicle, rectification border, parking, rail track, ...) to 255 = ignore. numpy + Pillow only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcnseg.errors import UserError
from fcnseg.quantize.data.base import check_pair, read_label, read_rgb
from fcnseg.quantize.data.palette import CITYSCAPES_CLASSES, IGNORE_INDEX, cityscapes_palette

#: Cityscapes label id -> train id for the 19 evaluated classes (``labels.py``).
LABEL_TO_TRAIN: dict[int, int] = {
    7: 0,  # road
    8: 1,  # sidewalk
    11: 2,  # building
    12: 3,  # wall
    13: 4,  # fence
    17: 5,  # pole
    19: 6,  # traffic light
    20: 7,  # traffic sign
    21: 8,  # vegetation
    22: 9,  # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


def label_lookup() -> np.ndarray:
    """A 256-entry table: ``table[label_id]`` is the train id, 255 for every unevaluated id."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in LABEL_TO_TRAIN.items():
        table[label_id] = train_id
    return table


class CityscapesSegmentation:
    """One split of a Cityscapes-layout dataset as ``(image, train-id label)`` numpy pairs."""

    classes: tuple[str, ...] = CITYSCAPES_CLASSES

    def __init__(self, root: str | Path, split: str = "train") -> None:
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"Cityscapes root {root} is not a folder")
        for part in ("leftImg8bit", "gtFine"):
            if not (root / part).is_dir():
                raise UserError(
                    f"{root} is not a Cityscapes folder: missing {part}/ (expected "
                    "leftImg8bit/<split>/<city>/ and gtFine/<split>/<city>/)"
                )
        image_dir = root / "leftImg8bit" / split
        if not image_dir.is_dir():
            available = sorted(p.name for p in (root / "leftImg8bit").iterdir() if p.is_dir())
            raise UserError(
                f"Cityscapes split {split!r} not found ({image_dir}); available: {available}"
            )
        images = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
        if not images:
            raise UserError(f"no *{IMAGE_SUFFIX} files under {image_dir}/<city>/")
        pairs = []
        for image in images:
            stem = image.name[: -len(IMAGE_SUFFIX)]
            label = root / "gtFine" / split / image.parent.name / f"{stem}{LABEL_SUFFIX}"
            if not label.is_file():
                raise UserError(f"Cityscapes image {image.name} has no label file {label}")
            pairs.append((image, label))
        self.root = root
        self.split = split
        self.pairs = pairs
        self.palette = cityscapes_palette()
        self._lookup = label_lookup()

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.pairs[index]
        image = read_rgb(image_path)
        label = self._lookup[read_label(label_path)]
        check_pair(image, label, f"Cityscapes image {image_path.name}")
        return image, label

    def __repr__(self) -> str:
        return (
            f"CityscapesSegmentation(root={str(self.root)!r}, split={self.split!r}, n={len(self)})"
        )
