"""What each label value means: class names, their colours and palette indices, written down.

A mask PNG is a palette image whose pixel value is the class index; on its own it says nothing
about which class is which. :class:`ClassTable` pairs every index with its name and its RGB
colour (the mask's palette entry), and travels with the outputs twice: as ``classes.json``
beside the masks (:func:`write_classes_json`) and, as a JSON list of names, in each mask's
``iTXt`` text chunk under the key :data:`TEXT_KEY` (Pillow shows it in ``Image.text``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fcnseg.atomic import atomic_write_text

#: Name of the class table written beside the masks.
CLASSES_JSON = "classes.json"
#: PNG text chunk key holding the class names (a JSON list; index = pixel value).
TEXT_KEY = "fcnseg:classes"
#: ``format`` field of ``classes.json`` (bumped if its fields change meaning).
FORMAT = "fcnseg-classes/1"


def voc_palette(n: int = 256) -> np.ndarray:
    """Pascal VOC's palette ``(n, 3) uint8``: bit ``3k + c`` of a class sets bit ``7 - k`` of ``c``.

    >>> voc_palette(3).tolist()
    [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    """
    index = np.arange(n)
    palette = np.zeros((n, 3), dtype=np.uint8)
    for k in range(8):
        for c in range(3):
            palette[:, c] |= (((index >> (3 * k + c)) & 1) << (7 - k)).astype(np.uint8)
    return palette


@dataclass(frozen=True)
class ClassTable:
    """Class ``i`` is ``names[i]``, drawn in ``colours[i]`` (RGB), stored as pixel value ``i``."""

    names: tuple[str, ...]
    colours: np.ndarray  #: (n, 3) uint8

    @classmethod
    def of(cls, count: int, names: Sequence[str] | None, palette: np.ndarray) -> ClassTable:
        """The table of ``count`` classes: their ``names`` (``class i`` where a package has
        none) and the first ``count`` colours of ``palette``."""
        if names is not None and len(names) != count:
            raise ValueError(f"{len(names)} class names for {count} classes")
        if count > 256:
            raise ValueError(f"palette masks hold at most 256 classes, not {count}")
        colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
        if len(colours) < count:
            raise ValueError(f"a palette of {len(colours)} colours for {count} classes")
        shown = tuple(names) if names is not None else tuple(f"class {i}" for i in range(count))
        if len(set(shown)) != len(shown):  # names key the per-class figures of a summary
            twice = sorted({n for n in shown if shown.count(n) > 1})
            raise ValueError(f"class names must differ, {', '.join(twice)} appear twice")
        return cls(shown, colours[:count].copy())

    def names_text(self) -> str:
        """The names as the compact JSON list stored in each mask's text chunk."""
        return json.dumps(list(self.names), ensure_ascii=False, separators=(",", ":"))

    def to_json(self) -> dict[str, object]:
        """The content of ``classes.json``."""
        return {
            "format": FORMAT,
            "masks": "palette PNG: pixel value = class index; the palette holds the colours",
            "classes": [
                {"index": i, "name": name, "rgb": [int(v) for v in self.colours[i]]}
                for i, name in enumerate(self.names)
            ],
        }


def write_classes_json(folder: str | os.PathLike[str], table: ClassTable, **extra: object) -> Path:
    """Write ``folder/classes.json`` (atomically) for ``table``; ``extra`` fields are added
    (e.g. ``package=``). Returns its path."""
    path = Path(folder) / CLASSES_JSON
    document = {**table.to_json(), **extra}
    atomic_write_text(path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return path


def read_mask_classes(text: dict[str, str]) -> list[str] | None:
    """The class names stored in a mask's text chunks (``Image.text``), or None."""
    raw = text.get(TEXT_KEY)
    return list(json.loads(raw)) if raw is not None else None
