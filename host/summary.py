"""What a ``fcnseg segment`` batch did, per image: the last line, and ``--json FILE``.

Every input gets an :class:`ImageRecord` (input, outputs, size, seconds, pixels per class, a
status and, unless it is ``done``, the one-line reason), also the inputs that never became an
image (no such file, an unreadable entry: :func:`fcnseg.host.inputs.collect_inputs`). The
statuses (:data:`STATUSES`):

- ``done``: segmented and written by this run;
- ``skipped``: its mask existed when the run started (``--overwrite`` redoes it);
- ``another-run``: a concurrent run on the same folder did it, or is doing it (its claim,
  :mod:`fcnseg.host.claims`; the message says which);
- ``failed``: a bad input (or a bug), with its one line;
- ``not-attempted``: the batch stopped before it (Ctrl-C, a full disk: the message says why).

:class:`BatchSummary` counts them for the closing line (each failed input listed above it, with
its reason) and writes them as one JSON document, atomically, when the batch ends, also when it
is interrupted (``"interrupted": true``) or stopped (``"stopped"``: the reason, e.g. ``"disk
full"``). Its top-level fields (:meth:`BatchSummary.to_json`)::

    {"format": "fcnseg-segment-summary/2", "package": ..., "backend": ..., "output": ...,
     "classes": [names], "interrupted": false, "stopped": null, "seconds": wall time,
     "counts": {"done": n, "skipped": n, "another-run": n, "failed": n, "not-attempted": n},
     "images": [record, ...]}

and a record::

    {"input": "in/a.jpg", "status": "done", "message": null, "size": [H, W],
     "seconds": 0.41, "pixels_per_class": {"background": 9000, "disc": 240, ...},
     "outputs": {"mask": "out/a.png", "overlay": ..., "scores": ...}}

In a farm run (``--local-workers``, ``--scheduler``: :mod:`fcnseg.host.farm`) each record also
has ``"worker"``: the address of the Dask worker that did it.

(Format 1 called ``done`` ``ok``, ``failed`` ``error`` and ``not-attempted`` ``pending``, and
had no ``another-run``.)

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

FORMAT = "fcnseg-segment-summary/2"
STATUSES = ("done", "skipped", "another-run", "failed", "not-attempted")
#: How the closing line names the statuses it counts only when there are any.
_NAMED = {"another-run": "done by another run", "not-attempted": "not attempted"}


@dataclass
class ImageRecord:
    """One input's outcome (module docstring)."""

    input: str
    status: str = "not-attempted"  #: one of :data:`STATUSES` (not-attempted until it is done)
    message: str | None = None
    size: tuple[int, int] | None = None  #: (H, W)
    seconds: float = 0.0
    histogram: np.ndarray | None = None  #: pixels per class index
    outputs: dict[str, str] = field(default_factory=dict)
    #: the frames of a multi-frame file this record is about: ``{"used": [k], "of": n}``
    #: (:meth:`fcnseg.host.inputs.Job.frames_record`); None for inputs that are no image
    frames: dict[str, object] | None = None
    #: the Dask worker that did it, in a farm run (:mod:`fcnseg.host.farm`); None in a local run
    worker: str | None = None

    def count(self, labels: np.ndarray, classes: int) -> None:
        """Add the pixels of ``labels`` (a whole mask or one band of it) to the histogram."""
        counts = np.bincount(np.asarray(labels).ravel(), minlength=classes)[:classes]
        self.histogram = counts if self.histogram is None else self.histogram + counts

    def to_json(self, names: Sequence[str]) -> dict[str, object]:
        per_class = None
        if self.histogram is not None:
            per_class = {name: int(n) for name, n in zip(names, self.histogram, strict=False)}
        farm = {} if self.worker is None else {"worker": self.worker}
        return {
            "input": self.input,
            "status": self.status,
            "message": self.message,
            "size": list(self.size) if self.size is not None else None,
            "seconds": round(self.seconds, 4),
            "pixels_per_class": per_class,
            "outputs": dict(self.outputs),
            "frames": self.frames,
            **farm,
        }


@dataclass
class BatchSummary:
    """The records of one batch, in input order, and the totals of its last line."""

    classes: Sequence[str] = ()
    records: list[ImageRecord] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    stopped: str | None = None  #: why the batch stopped early (``"disk full"``), if it did
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, record: ImageRecord) -> ImageRecord:
        with self._lock:
            self.records.append(record)
        return record

    def of_status(self, status: str) -> list[ImageRecord]:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
        return [r for r in self.records if r.status == status]

    def not_attempted(self, reason: str) -> None:
        """Give every record the batch did not reach ``reason`` as its message."""
        for record in self.of_status("not-attempted"):
            if record.message is None:
                record.message = f"not attempted: {reason}"

    @property
    def pixels(self) -> int:
        return sum(r.size[0] * r.size[1] for r in self.of_status("done") if r.size is not None)

    def line(self, out_dir: object) -> str:
        """The closing line on stdout."""
        mpx = self.pixels / 1e6
        rate = mpx / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"segmented {len(self.of_status('done'))} image(s), {mpx:.2f} Mpx in "
            f"{self.seconds:.1f} s ({rate:.2f} Mpx/s) -> {out_dir}; skipped "
            f"{len(self.of_status('skipped'))}; failed {len(self.of_status('failed'))}"
        )
        for status, name in _NAMED.items():
            if n := len(self.of_status(status)):
                text += f"; {name} {n}"
        return text

    def failure_lines(self) -> list[str]:
        """One line per failed input, with its reason (printed above the closing line)."""
        return [f"failed: {r.message or r.input}" for r in self.of_status("failed")]

    def to_json(self, **context: object) -> dict[str, object]:
        """The ``--json`` document; ``context`` (package, backend, output) goes on top."""
        return {
            "format": FORMAT,
            **context,
            "classes": list(self.classes),
            "interrupted": self.interrupted,
            "stopped": self.stopped,
            "seconds": round(self.seconds, 4),
            "counts": {s: len(self.of_status(s)) for s in STATUSES},
            "images": [r.to_json(self.classes) for r in self.records],
        }

    def write(self, path: str | os.PathLike[str], **context: object) -> None:
        """Write :meth:`to_json` to ``path`` atomically."""
        text = json.dumps(self.to_json(**context), indent=2, ensure_ascii=False)
        atomic_write_text(path, text + "\n")
