"""Open a dataset from a one-word spec, as the CLI and the training config name them.

synthetic              the synthetic scenes (tile-sized; needs scikit-image)
voc:PATH               a Pascal VOC folder
cityscapes:PATH        a Cityscapes folder
"""

from __future__ import annotations

from fcnseg.errors import UserError
from fcnseg.quantize.data.base import SegmentationDataset

KINDS = ("synthetic", "voc", "cityscapes")


def open_dataset(
    spec: str,
    split: str,
    size: tuple[int, int] = (256, 256),
    length: int | None = None,
) -> SegmentationDataset:
    """Return the dataset ``spec`` names, split ``split``.

    ``size`` and ``length`` apply to the synthetic scenes only (real datasets have their own
    image sizes and counts).
    """
    kind, _, path = spec.partition(":")
    if kind == "synthetic":
        from fcnseg.quantize.data.synthetic import SyntheticScenes

        return SyntheticScenes(split, size=size, length=length)
    if kind in ("voc", "cityscapes"):
        if not path:
            raise UserError(f"dataset {spec!r} needs a folder: write {kind}:PATH")
        if kind == "voc":
            from fcnseg.quantize.data.voc import VOCSegmentation

            return VOCSegmentation(path, split)
        from fcnseg.quantize.data.cityscapes import CityscapesSegmentation

        return CityscapesSegmentation(path, split)
    raise UserError(f"unknown dataset {spec!r}; use synthetic, voc:PATH or cityscapes:PATH")
