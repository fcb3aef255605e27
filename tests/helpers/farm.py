"""Test aids for the farm (:mod:`fcnseg.host.farm`): a worker plugin that slows every image down,
so a test can kill a worker while it is in the middle of one; a package of any class count and a
VOC folder to evaluate on a cluster. (The plugin that gives each worker its own emulated board is
:mod:`fcnseg.testing.farm`: the benchmark uses it too.)

It lives in an importable module (not a test file) because Dask workers import it by reference.
The slowdown is a sleep at the start of :meth:`~fcnseg.host.segmenter.Segmenter.segment`, after
the image was claimed and decoded and before anything is written; while a worker sleeps, its
marker file ``<folder>/<pid>.busy`` holds the wall-clock time the sleep ends, so a test can kill
it inside the sleep (a kill there always leaves a claim to break, never a committed mask).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from distributed import WorkerPlugin


class SlowImages(WorkerPlugin):
    """Every ``Segmenter.segment`` on the worker first sleeps ``seconds`` (restored on
    teardown); registered before a batch, it is set up again on a restarted worker."""

    name = "fcnseg-test-slow"

    def __init__(self, seconds: float, folder: str) -> None:
        self.seconds, self.folder = seconds, folder
        self.original: Any = None

    def setup(self, worker: Any) -> None:
        from fcnseg.host.segmenter import Segmenter

        self.original = original = Segmenter.segment
        seconds, marker = self.seconds, Path(self.folder) / f"{os.getpid()}.busy"

        def slowed(seg: Segmenter, image: Any) -> Any:
            marker.write_text(repr(time.time() + seconds))
            try:
                time.sleep(seconds)
            finally:
                with contextlib.suppress(OSError):
                    marker.unlink()
            return original(seg, image)

        Segmenter.segment = slowed

    def teardown(self, worker: Any) -> None:
        from fcnseg.host.segmenter import Segmenter

        if self.original is not None:
            Segmenter.segment = self.original


def busy_until(folder: Path, pid: int) -> float | None:
    """When worker ``pid``'s current sleep ends (wall clock), or None if it is not sleeping."""
    try:
        return float((folder / f"{pid}.busy").read_text())
    except (OSError, ValueError):
        return None


def classes_package(folder: Path, classes: int, seed: int = 0) -> Path:
    """A real package for an 8x8 tile with ``classes`` scores (the layers of
    :func:`tests.helpers.packages.make_layers`): one a dataset of that many classes can be
    scored with."""
    import numpy as np

    from fcnseg.host.package import write_package
    from tests.helpers.packages import make_layers

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


def voc_folder(root: Path, split: str, count: int, seed: int = 1) -> Path:
    """A VOC2012 folder (JPEGImages/, SegmentationClass/ palette PNGs, ImageSets/) of ``count``
    small images of sizes 12..40 px, labels of the 21 classes with a void (255) first row."""
    import numpy as np
    from PIL import Image

    from fcnseg.quantize.data.palette import voc_palette

    rng = np.random.default_rng(seed)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names = [f"2008_{split}{i:04d}" for i in range(count)]
    (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    for name in names:
        h, w = int(rng.integers(12, 40)), int(rng.integers(12, 40))
        label = rng.integers(0, 21, size=(h, w), dtype=np.uint8)
        label[0] = 255
        png = Image.fromarray(label, mode="P")
        png.putpalette(voc_palette().ravel().tolist())
        png.save(root / "SegmentationClass" / f"{name}.png")
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / "JPEGImages" / f"{name}.jpg")
    return root
