"""What every dataset in :mod:`fcnseg.quantize.data` looks like, and the file readers they share.

A dataset is a sized, indexable collection of ``(image, label)`` pairs: ``image`` is
``(H, W, 3) uint8`` RGB, ``label`` is ``(H, W) uint8`` class indices with
:data:`~fcnseg.quantize.data.palette.IGNORE_INDEX` (255) for "no label". Plain numpy arrays, so the
same readers serve training (wrapped in a torch Dataset there) and ``fcnseg eval`` on a board
without torch. numpy + Pillow only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from fcnseg.errors import UserError


@runtime_checkable
class SegmentationDataset(Protocol):
    """The interface shared by the synthetic scenes, VOC and Cityscapes readers."""

    #: class names, index = label value
    classes: tuple[str, ...]
    #: ``(len(classes), 3) uint8`` colours to draw each class with
    palette: np.ndarray

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]: ...


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` RGB (grey and palette images are converted)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read image {path}: {error}") from error


def read_label(path: Path) -> np.ndarray:
    """Read a label PNG as ``(H, W) uint8`` indices, without any colour conversion.

    VOC's ``SegmentationClass`` files are palette ("P") images whose pixel values *are* the class
    indices; Cityscapes' ``*_labelIds.png`` are 8-bit greyscale ids. Converting either to RGB would
    lose the indices, so only the mode is checked.
    """
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise UserError(
                    f"label image {path} has mode {image.mode}; expected a palette (P) or 8-bit "
                    "greyscale (L) PNG of class indices"
                )
            return np.asarray(image, dtype=np.uint8).copy()
    except OSError as error:
        raise UserError(f"cannot read label image {path}: {error}") from error


def check_pair(image: np.ndarray, label: np.ndarray, what: str) -> None:
    """Raise :class:`UserError` if an image and its label map differ in size."""
    if image.shape[:2] != label.shape:
        raise UserError(
            f"{what}: image is {image.shape[1]}x{image.shape[0]} but its label map is "
            f"{label.shape[1]}x{label.shape[0]}"
        )
