"""What a ``fcnseg segment`` batch did, per image: the last line, and ``--json FILE``.

Every input gets an :class:`ImageRecord` (input, outputs, size, seconds, pixels per class,
status ``ok`` / ``error`` / ``skipped`` with the one-line message, or ``pending`` for the
images an interrupted batch did not reach). :class:`BatchSummary` counts them for the closing
line and writes them as one JSON document, atomically, when the batch ends, also when it is
interrupted (``"interrupted": true``). Its top-level fields (:meth:`BatchSummary.to_json`)::

    {"format": "fcnseg-segment-summary/1", "package": ..., "backend": ..., "output": ...,
     "classes": [names], "interrupted": false, "seconds": wall time of the batch,
     "counts": {"ok": n, "error": n, "skipped": n, "pending": n}, "images": [record, ...]}

and a record::

    {"input": "in/a.jpg", "status": "ok", "message": null, "size": [H, W],
     "seconds": 0.41, "pixels_per_class": {"background": 9000, "disc": 240, ...},
     "outputs": {"mask": "out/a.png", "overlay": ..., "scores": ...}}

``seconds`` of an image is the time spent on it: summed over the pipeline's stages (decode,
accelerate, finish + write) for images segmented whole, or the wall time of its strips.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fcnseg.atomic import atomic_write_text

FORMAT = "fcnseg-segment-summary/1"
STATUSES = ("ok", "error", "skipped", "pending")


@dataclass
class ImageRecord:
    """One input's outcome (module docstring)."""

    input: str
    status: str = "pending"  #: pending (not done yet) | ok | error | skipped
    message: str | None = None
    size: tuple[int, int] | None = None  #: (H, W)
    seconds: float = 0.0
    histogram: np.ndarray | None = None  #: pixels per class index
    outputs: dict[str, str] = field(default_factory=dict)

    def count(self, labels: np.ndarray, classes: int) -> None:
        """Add the pixels of ``labels`` (a whole mask or one band of it) to the histogram."""
        counts = np.bincount(np.asarray(labels).ravel(), minlength=classes)[:classes]
        self.histogram = counts if self.histogram is None else self.histogram + counts

    def to_json(self, names: Sequence[str]) -> dict[str, object]:
        per_class = None
        if self.histogram is not None:
            per_class = {name: int(n) for name, n in zip(names, self.histogram, strict=False)}
        return {
            "input": self.input,
            "status": self.status,
            "message": self.message,
            "size": list(self.size) if self.size is not None else None,
            "seconds": round(self.seconds, 4),
            "pixels_per_class": per_class,
            "outputs": dict(self.outputs),
        }


@dataclass
class BatchSummary:
    """The records of one batch, in input order, and the totals of its last line."""

    classes: Sequence[str] = ()
    records: list[ImageRecord] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, record: ImageRecord) -> ImageRecord:
        with self._lock:
            self.records.append(record)
        return record

    def of_status(self, status: str) -> list[ImageRecord]:
        return [r for r in self.records if r.status == status]

    @property
    def pixels(self) -> int:
        return sum(r.size[0] * r.size[1] for r in self.of_status("ok") if r.size is not None)

    def line(self, out_dir: object) -> str:
        """The closing line on stdout."""
        mpx = self.pixels / 1e6
        rate = mpx / self.seconds if self.seconds > 0 else 0.0
        return (
            f"segmented {len(self.of_status('ok'))} image(s), {mpx:.2f} Mpx in "
            f"{self.seconds:.1f} s ({rate:.2f} Mpx/s) -> {out_dir}; skipped "
            f"{len(self.of_status('skipped'))}; failed {len(self.of_status('error'))}"
        )

    def to_json(self, **context: object) -> dict[str, object]:
        """The ``--json`` document; ``context`` (package, backend, output) goes on top."""
        return {
            "format": FORMAT,
            **context,
            "classes": list(self.classes),
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 4),
            "counts": {s: len(self.of_status(s)) for s in STATUSES},
            "images": [r.to_json(self.classes) for r in self.records],
        }

    def write(self, path: str | os.PathLike[str], **context: object) -> None:
        """Write :meth:`to_json` to ``path`` atomically."""
        text = json.dumps(self.to_json(**context), indent=2, ensure_ascii=False)
        atomic_write_text(path, text + "\n")
