"""The Python API: ``Segmenter.load(package, backend="sim")``, ``seg(image) -> labels``.

The pipeline for one image of ``H x W`` pixels::

    canvas (image at the top-left of zeros, tiling.Geometry.canvas_shape)
      -> f*f shifted copies (shift_stitch; one copy when f = 1)
      -> tiles of the accelerator's size (tiling.plan_tiles, cached per canvas shape)
      -> engine.run (a backend), a row of tiles at a time (tiling.run_rows, the one loop;
         an engine with calls in flight, ``concurrent``, gets a whole pass per run)
      -> stitched integer scores (Hc/d, Wc/d, C), d = s / f
      -> dequantize + bilinear upsample to H x W + argmax (Segmenter.labels, the one finish)

>>> seg = Segmenter.load("host/packages/fcn8s-pynq-z2")        # doctest: +SKIP
>>> labels = seg(image)            # (H, W) uint8 class indices  # doctest: +SKIP
>>> scores = seg.scores(image)     # (Hc/d, Wc/d, C) int64       # doctest: +SKIP

Large images go through :meth:`Segmenter.stream` instead: the same tile plan executed one row
of tiles at a time, scores upsampled and handed out in bands of rows as soon as they are final,
so the working memory is a band of ``tile height x canvas width`` pixels (and fewer than a batch
of tiles waiting for the next band), not the image. The labels equal :meth:`Segmenter.segment`'s
exactly (same tiles, same cells, same upsampling weights: a band reads one score row of halo
above and below, and bilinear weights do not depend on where the band starts).

Boards: a package records the board it was built for. :meth:`Segmenter.load` refuses it,
before opening any backend, when ``board=`` names another board, or when the ``pynq`` backend
runs on a PYNQ image whose ``BOARD`` (set by the image, e.g. ``Pynq-Z2``) differs: a bitstream
for another part would not load, or worse, load into the wrong fabric. The simulator runs any
package anywhere, so without ``board=`` it checks nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcnseg.errors import ParameterError, UserError
from fcnseg.host.images import as_rgb_array, voc_palette
from fcnseg.host.shift_stitch import ShiftPlan, plan_shifts, shift_stitch
from fcnseg.host.tiling import (
    Geometry,
    RunFn,
    TilePlan,
    make_canvas,
    plan_tiles,
    run_rows,
    run_tiled,
)
from fcnseg.host.upsample import upsample_argmax

if TYPE_CHECKING:
    from fcnseg.host.backends import Engine
    from fcnseg.host.images import RowReader
    from fcnseg.host.package import Package

#: The package ``fcnseg segment`` uses without ``--package`` (package data of fcnseg.host).
DEFAULT_PACKAGE = Path(__file__).resolve().parent / "packages" / "fcn8s-pynq-z2"

#: Shift-and-stitch factors the CLI offers (1 = off).
SHIFT_FACTORS = (1, 2, 4)


def board_key(name: str) -> str:
    """A board name compared loosely: ``Pynq-Z2``, ``pynq_z2`` and ``PYNQ-Z2`` are one board."""
    return name.strip().lower().replace("_", "-")


def running_board(backend: str) -> str | None:
    """The board this process runs on, for backends that drive one: PYNQ images set ``BOARD``."""
    if backend != "pynq":
        return None
    return os.environ.get("BOARD") or None


def check_board(package: Package, backend: str, board: str | None = None) -> None:
    """Refuse ``package`` if it was built for a board other than ``board`` (or the running one)."""
    built_for = package.board
    expected = board or running_board(backend)
    if not built_for or not expected or board_key(built_for) == board_key(expected):
        return
    if board:
        raise ParameterError(
            f"package {package.path} is built for {built_for}, not {expected} ({{board}}); "
            f"use a package compiled for {expected}",
            board=board,
        )
    raise UserError(
        f"package {package.path} is built for {built_for}, not {expected} (this board: BOARD "
        f"environment variable of the PYNQ image); use a package compiled for {expected}"
    )


def open_checked(
    pkg: Package,
    backend: str,
    board: str | None,
    batch: int | None,
    backend_options: dict[str, Any],
) -> tuple[Any, int]:
    """Check ``pkg``'s board (:func:`check_board`), open it on ``backend`` and return
    ``(engine, tiles per run)``: ``batch`` if given (also passed to the backend), else the
    engine's own ``batch``, else 4; an engine that keeps several calls in flight
    (``in_flight`` tiles) is handed that many per ``run``, so one image's calls overlap."""
    from fcnseg.host.backends import open_engine

    check_board(pkg, backend, board)
    if batch is not None:
        backend_options.setdefault("batch", batch)
    engine = open_engine(backend, pkg, **backend_options)
    tiles = getattr(engine, "in_flight", None) or batch or getattr(engine, "batch", None) or 4
    return engine, int(tiles)


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
                "package there, or name another package folder"
            )
        package = DEFAULT_PACKAGE
    return load_package(package)


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
            raise ParameterError(
                f"{{shift_stitch}} must be one of {SHIFT_FACTORS} and divide the output stride "
                f"{geometry.output_stride}",
                shift_stitch=shift_stitch,
            )
        if overlap is not None and overlap < 0:
            raise ParameterError("{overlap} must be >= 0", overlap=overlap)
        if batch < 1:
            raise ParameterError("{batch} must be >= 1 (tiles per engine call)", batch=batch)
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
        batch: int | None = None,
        board: str | None = None,
        **backend_options: Any,
    ) -> Segmenter:
        """Load a package (``None``: the shipped default) and open it on ``backend``.

        The package is verified (:func:`~fcnseg.host.package.load_package`) and its board
        checked (:func:`check_board`) before the backend is opened. ``backend_options`` go to
        the backend's ``open_engine`` (e.g. ``timeout_s=``, ``transport=``, ``calls=`` for
        ``pynq``). Tiles per engine call: ``batch`` if given (also passed to the backend), else
        the engine's own ``batch`` (the pynq engine sizes it to its DMA buffers), else 4; an
        engine that keeps several calls in flight (``in_flight`` tiles: the pynq engine's
        ``calls`` DMA calls of ``batch``) is handed that many tiles per ``run``, so one frame's
        calls overlap in the fabric.
        """
        pkg = resolve_package(package)
        pkg.card.require_task("segmentation", f"package {pkg.path}")
        engine, batch = open_checked(pkg, backend, board, batch, backend_options)
        card = pkg.card
        palette = None if card.palette is None else np.asarray(card.palette, dtype=np.uint8)
        seg = cls(
            engine,
            pkg.geometry,
            pkg.output_scale,
            pkg.output_bias,
            classes=list(card.classes),
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

    def scores(self, image: Any, run: RunFn | None = None) -> np.ndarray:
        """Integer scores ``(Hc/d, Wc/d, C)`` over the canvas of ``image`` (module docstring).

        ``run`` replaces the engine's ``run`` for this call (the pipeline passes one that times
        it), so callers never swap :attr:`engine` under another thread's feet.
        """
        rgb = as_rgb_array(image)
        canvas = make_canvas(rgb, self.geometry)
        plan = self.plan(*rgb.shape[:2])
        engine_run = run or self.engine.run
        group = self.batch
        if getattr(self.engine, "concurrent", False):
            # a whole pass per run: its calls queue in the engine behind another thread's, so
            # the fabric is not left to drain while this thread cuts its next group of tiles
            group = max(group, len(plan.rows.starts) * len(plan.cols.starts))

        def tiled(c: np.ndarray) -> np.ndarray:
            return run_tiled(plan, engine_run, c, group)

        return shift_stitch(self.shifts, tiled, canvas)

    def labels(self, scores: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """``(H, W)`` class indices of integer ``scores`` whose cell 0 is at pixel 0.

        Dequantize, bilinear upsample, argmax, crop to ``shape``
        (:func:`~fcnseg.host.upsample.upsample_argmax`): the one place where scores become
        labels, for :meth:`finish` (whole images, the pipeline) and :meth:`stream` (strips).
        """
        return upsample_argmax(
            scores,
            self.output_scale,
            self.output_bias,
            shape,
            self.shifts.stride,
            self.shifts.field,
        )

    def finish(self, scores: np.ndarray, shape: tuple[int, int]) -> Segmentation:
        """The :class:`Segmentation` of an image of ``shape`` from its canvas ``scores``."""
        return Segmentation(self.labels(scores, shape), scores, self.stride, self.shifts.field)

    def segment(self, image: Any) -> Segmentation:
        """Labels and scores of one image (array, Pillow image or path)."""
        rgb = as_rgb_array(image)
        return self.finish(self.scores(rgb), rgb.shape[:2])

    def stream(
        self,
        rows: RowReader,
        on_labels: Callable[[int, np.ndarray], None],
        on_scores: Callable[[np.ndarray], None] | None = None,
    ) -> tuple[int, int]:
        """Segment a large image band by band (module docstring); return the canvas ``(Hc, Wc)``.

        ``rows.read(y0, y1)`` gives image rows (forwards, overlapping by less than a tile);
        ``on_labels(y0, labels)`` receives consecutive label bands ``(n, W)`` from the top;
        ``on_scores(block)`` consecutive score rows ``(n, Wc/s, C)`` of the canvas.
        Shift-and-stitch (``f > 1``) is not streamed.
        """
        if self.shifts.factor != 1:
            raise ParameterError(
                "{shift_stitch} is not available for images segmented in strips (only 1 is)",
                shift_stitch=self.shifts.factor,
            )
        plan = self.plan(rows.height, rows.width)
        bands = _LabelBands(self.labels, plan, rows.height, rows.width)
        for block in run_rows(plan, self.engine.run, _tile_rows(rows, plan), self.batch):
            if on_scores is not None:
                on_scores(block)
            for y0, labels in bands.push(block):
                on_labels(y0, labels)
        return plan.canvas

    def __call__(self, image: Any) -> np.ndarray:
        """``(H, W)`` class indices of ``image``."""
        return self.segment(image).labels


def _tile_rows(rows: RowReader, plan: TilePlan) -> Iterator[np.ndarray]:
    """The canvas band of each tile row of ``plan`` (image rows, zeros below and right), read
    from ``rows`` into one reused ``(Th, Wc, 3)`` buffer."""
    th = plan.geometry.tile[0]
    height, width = rows.height, rows.width
    band = np.zeros((th, plan.canvas[1], 3), dtype=np.uint8)
    for y in plan.rows.starts:
        band[:] = 0
        if y < height:
            band[: min(th, height - y), :width] = rows.read(y, min(y + th, height))
        yield band


class _LabelBands:
    """Labels of a streamed image, handed out as soon as the score rows they need are in.

    Score rows arrive top down (:func:`~fcnseg.host.tiling.run_rows`). Pixel row ``y`` reads the
    bilinear corners ``floor(y / s)`` and the row below, so with rows ``[0, hi)`` in, the labels
    of pixel rows ``y <= (hi - 1) s - 1`` are final (all of them after the last row). Each push
    upsamples those in chunks of rows (the upsampler's working memory is ~30 bytes a pixel) and
    keeps one score row of halo above the next band; bilinear weights do not depend on where a
    chunk starts, so the bands equal the whole image's labels.
    """

    def __init__(
        self,
        labels: Callable[[np.ndarray, tuple[int, int]], np.ndarray],
        plan: TilePlan,
        height: int,
        width: int,
    ) -> None:
        self.labels = labels
        self.s = plan.geometry.output_stride
        self.height, self.width = height, width
        self.n_cells = plan.canvas[0] // self.s
        self.pending: list[np.ndarray] = []  # score rows [lo, hi) later labels still need
        self.lo = self.hi = 0
        self.next_row = 0  # the first image row whose labels are not out yet

    def push(self, block: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Take the next score rows; yield ``(y0, labels)`` for the image rows now final."""
        s, lo = self.s, self.lo
        self.pending.append(block)
        self.hi = hi = self.hi + len(block)
        end = self.height if hi == self.n_cells else min(self.height, (hi - 1) * s)
        if end <= self.next_row:
            return
        scores = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        first, self.next_row = self.next_row, end
        keep_from = max(lo, end // s - 1)
        self.pending, self.lo = [scores[keep_from - lo :]], keep_from
        step = max(64, 16 * s)
        for a in range(first, end, step):
            b = min(end, a + step)
            c0 = max(lo, a // s - 1)  # the corner rows pixels [a, b) read
            c1 = min(hi, (b - 1) // s + 2)
            labels = self.labels(scores[c0 - lo : c1 - lo], (b - c0 * s, self.width))
            yield a, labels[a - c0 * s :]
