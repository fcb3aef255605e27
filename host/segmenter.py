"""The Python API: ``Segmenter.load(package, backend="sim")``, ``seg(image) -> labels``.

The pipeline for one image of ``H x W`` pixels::

    canvas (image at the top-left of zeros, tiling.Geometry.canvas_shape)
      -> f*f shifted copies (shift_stitch; one copy when f = 1)
      -> tiles of the accelerator's size (tiling.plan_tiles, cached per canvas shape)
      -> engine.run (a backend) -> stitched integer scores (Hc/d, Wc/d, C), d = s / f
      -> dequantize + bilinear upsample to H x W + argmax (upsample.upsample_argmax)

>>> seg = Segmenter.load("host/packages/fcn8s-pynq-z2")        # doctest: +SKIP
>>> labels = seg(image)            # (H, W) uint8 class indices  # doctest: +SKIP
>>> scores = seg.scores(image)     # (Hc/d, Wc/d, C) int64       # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fcnseg.host.images import as_rgb_array, voc_palette
from fcnseg.host.shift_stitch import ShiftPlan, plan_shifts, shift_stitch
from fcnseg.host.tiling import Geometry, TilePlan, make_canvas, plan_tiles, run_tiled
from fcnseg.host.upsample import upsample_argmax

from fcnseg.errors import UserError

if TYPE_CHECKING:
    from fcnseg.host.backends import Engine
    from fcnseg.host.package import Package

#: The package ``fcnseg segment`` uses without ``--package`` (package data of fcnseg.host).
DEFAULT_PACKAGE = Path(__file__).resolve().parent / "packages" / "fcn8s-pynq-z2"

#: Shift-and-stitch factors the CLI offers (1 = off).
SHIFT_FACTORS = (1, 2, 4)


@dataclass(frozen=True)
class Segmentation:
    """One image's result."""

    labels: np.ndarray  #: (H, W) class indices (uint8 for up to 256 classes)
    scores: np.ndarray  #: (Hc/d, Wc/d, C) integer scores over the canvas
    stride: int  #: d, pixels between score cells
    field: int  #: pixels one score cell sees (the net's output stride)


def resolve_package(package: Package | str | os.PathLike[str] | None) -> Package:
    """A loaded package: ``None`` is the shipped default, a path is loaded and verified."""
    from fcnseg.host.package import Package, load_package

    if isinstance(package, Package):
        return package
    if package is None:
        if not (DEFAULT_PACKAGE / "accelerator.json").is_file():
            raise UserError(
                f"the default package {DEFAULT_PACKAGE.name} is missing (expected in "
                f"{DEFAULT_PACKAGE}); build it with `make train export hw` and copy the build's "
                "package there, or pass --package DIR"
            )
        package = DEFAULT_PACKAGE
    return load_package(package)


def geometry_of(package: Package, engine: Any = None) -> Geometry:
    """The tiling geometry of a package (its net stride from the engine when it knows it)."""
    card = package.model_card
    net_stride = getattr(engine, "net_stride", None) or card.get("net_stride")
    if net_stride is None:
        depths = card.get("model_config", {}).get("depths")
        net_stride = 2 ** len(depths) if depths else max(32, package.output_stride)
    field = card.get("receptive_field")
    return Geometry(
        tile=package.tile,
        output_stride=package.output_stride,
        net_stride=int(net_stride),
        receptive_field=int(field) if field is not None else None,
    )


class Segmenter:
    """Segment images of any size with a fixed-tile accelerator (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        geometry: Geometry,
        output_scale: np.ndarray,
        output_bias: np.ndarray,
        *,
        classes: list[str] | None = None,
        palette: np.ndarray | None = None,
        shift_stitch: int = 1,
        overlap: int | None = None,
        batch: int = 4,
    ) -> None:
        if shift_stitch not in SHIFT_FACTORS or geometry.output_stride % shift_stitch:
            raise UserError(
                f"--shift-stitch {shift_stitch} must be one of {SHIFT_FACTORS} and divide the "
                f"output stride {geometry.output_stride}"
            )
        if overlap is not None and overlap < 0:
            raise UserError(f"--overlap must be >= 0, got {overlap}")
        self.engine = engine
        self.geometry = geometry
        self.output_scale = np.asarray(output_scale, dtype=np.float64)
        self.output_bias = np.asarray(output_bias, dtype=np.float64)
        self.classes = list(classes) if classes is not None else None
        n = len(self.output_scale)
        self.palette = np.asarray(palette if palette is not None else voc_palette(max(n, 256)))
        self.overlap = overlap
        self.batch = batch
        self.shifts: ShiftPlan = plan_shifts(geometry.output_stride, shift_stitch)
        self.package: Package | None = None  #: set by :meth:`load`

    @classmethod
    def load(
        cls,
        package: Package | str | os.PathLike[str] | None = None,
        backend: str = "sim",
        *,
        shift_stitch: int = 1,
        overlap: int | None = None,
        batch: int = 4,
    ) -> Segmenter:
        """Load a package (``None``: the shipped default) and open it on ``backend``."""
        from fcnseg.host.backends import open_engine

        pkg = resolve_package(package)
        engine = open_engine(backend, pkg)
        card = pkg.model_card
        palette = card.get("palette")
        if palette is not None:
            palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
        seg = cls(
            engine,
            geometry_of(pkg, engine),
            pkg.output_scale,
            pkg.output_bias,
            classes=card.get("classes"),
            palette=palette,
            shift_stitch=shift_stitch,
            overlap=overlap,
            batch=batch,
        )
        seg.package = pkg
        return seg

    @property
    def stride(self) -> int:
        """Pixels between score cells (the output stride divided by the shift-stitch factor)."""
        return self.shifts.stride

    def plan(self, height: int, width: int) -> TilePlan:
        """The (cached) tile plan for an image of ``height x width`` pixels."""
        canvas = self.geometry.canvas_shape(height, width)
        return plan_tiles(self.geometry, canvas, self.overlap)

    def scores(self, image: Any) -> np.ndarray:
        """Integer scores ``(Hc/d, Wc/d, C)`` over the canvas of ``image`` (module docstring)."""
        rgb = as_rgb_array(image)
        canvas = make_canvas(rgb, self.geometry)
        plan = self.plan(*rgb.shape[:2])

        def run(c: np.ndarray) -> np.ndarray:
            return run_tiled(plan, self.engine.run, c, self.batch)

        return shift_stitch(self.shifts, run, canvas)

    def segment(self, image: Any) -> Segmentation:
        """Labels and scores of one image (array, Pillow image or path)."""
        rgb = as_rgb_array(image)
        scores = self.scores(rgb)
        labels = upsample_argmax(
            scores,
            self.output_scale,
            self.output_bias,
            rgb.shape[:2],
            self.shifts.stride,
            self.shifts.field,
        )
        return Segmentation(labels, scores, self.shifts.stride, self.shifts.field)

    def __call__(self, image: Any) -> np.ndarray:
        """``(H, W)`` class indices of ``image``."""
        return self.segment(image).labels
