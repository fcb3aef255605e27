"""The classifier API: ``Classifier.load(package)``, ``clf(image) -> Classification``.

A classification package (model card ``task: "classification"``, :mod:`fcnseg.host.card`)
holds a classifier whose FC layers became convolutions (``fcnseg.quantize`` ``fc_to_conv``):
its convolutions do not pad, so on an input of ``L`` pixels per axis it gives
``n(L) = (L - w) // s + 1`` score cells, and cell ``k`` *is* the classifier on the ``w x w``
crop at pixel ``k s`` (``w``: the card's ``window``, the classifier's input side; ``s``: the
output stride, 32 for five 2x2 pools). A 224-input net on 384x384 gives 6x6 cells, the 36 crops
at stride 32, in one pass. The pipeline for one image at one scale::

    resize (Pillow, RESAMPLE)                      -> H x W
      -> f*f passes on the image cropped by (i d, j d), d = s / f (stride 32: one pass)
         -> each pass tiled over the fixed-tile accelerator (plan_axis, below)
      -> interleaved (shift_stitch.interleave)     -> (ny, nx, C) integer scores, stride d
      -> logits = q * output_scale + output_bias, pooled over positions (mean or max)
    scales: the mean of the per-scale pooled logits; softmax -> probabilities; top-k

Why tiling is exact here. Cell ``k`` of any input depends only on its crop ``[k s, k s + w)``
(no padding, and crops start on multiples of ``s``, so every pooling grid of a crop is the
grid of the whole input). A tile at pixel ``o`` (a multiple of ``s``) of the canvas therefore
gives the canvas's cells ``o/s .. o/s + m - 1`` exactly, ``m = n(T)`` for a tile of ``T``. Tiles
advance by ``m s`` pixels — they overlap by ``T - m s``, which is ``w - s`` when ``s`` divides
``T - w`` — the last one flush with the canvas end, so every cell comes from some tile whole
and the stitched map is the one-pass map, cell for cell, with no guard band to discard.

The canvas. The image has ``n = n(H)`` cells along y; they see the first ``w + (n - 1) s``
rows, the rest (fewer than ``s``) no cell sees. The canvas is the image at the top-left of
zeros, ``max(T, ceil((w + (n - 1) s) / s) * s)`` rows (a multiple of ``s``, which the simulator
and the fabric need, and at least one tile); the zero rows only reach cells past ``n``, which
are dropped (when ``s`` is the net stride, as for a classifier without upsampling, the rounding
up adds no cell; a small image padded up to one tile adds cells that see zeros, also dropped).

Finer strides (the seed's last paragraph): ``stride=16`` on an ``s = 32`` net runs the
stride-32 map on the image and on the image cropped by 16 px along y, x and both, and
interleaves the four maps (:func:`fcnseg.host.shift_stitch.interleave`): fine cell ``r`` is
the classifier on the crop at ``r d``. Cropping (instead of moving the image over zeros, as
segmentation does) keeps every pass's cells inside the image, so the fine map is exactly the
classifier slid at stride ``d`` over crops. ``stride=8``: 16 passes.

Resizing: :data:`RESAMPLE` (Pillow's bilinear, which widens its filter when it shrinks, so it
antialiases) everywhere, for ``size=(H, W)`` and for ``scale=S`` (``round(S H) x round(S W)``);
an image already at the size is not resampled. No scale given: the package's tile, one
accelerator pass per stride phase.

>>> clf = Classifier.load("host/packages/classifier-pynq-z2")     # doctest: +SKIP
>>> result = clf(image, scales=[(384, 384), 1.5], stride=16)      # doctest: +SKIP
>>> result.top(3)    # [(class index, name, probability), ...]   # doctest: +SKIP

numpy and Pillow only (the host's import path).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcnseg.errors import ParameterError, UserError
from fcnseg.host.images import as_rgb_array
from fcnseg.host.shift_stitch import interleave, plan_shifts

if TYPE_CHECKING:
    from fcnseg.host.backends import Engine
    from fcnseg.host.package import Package

#: The package ``fcnseg classify`` uses without ``--package`` (package data of fcnseg.host).
DEFAULT_PACKAGE = Path(__file__).resolve().parent / "packages" / "classifier-pynq-z2"

#: Pooling of the dequantized scores over positions.
POOLS = ("mean", "max")

#: Shift factors offered: stride s / f with f * f passes (32, 16, 8 for s = 32).
SHIFT_FACTORS = (1, 2, 4)

#: Pillow's resampling filter for every resize (module docstring): ``Image.BILINEAR``.
RESAMPLE = "BILINEAR"

#: One scale: ``(height, width)`` in pixels, or a factor applied to the image's size.
ScaleSpec = tuple[int, int] | float


@dataclass(frozen=True)
class WindowGeometry:
    """What tiling a classifier needs: the accelerator's tile, the output stride, the window."""

    tile: tuple[int, int]  #: accelerator input (H, W), multiples of stride
    stride: int  #: s: pixels between score cells (the output stride, = the net stride)
    window: int  #: w: the crop side one cell is

    def cells(self, length: int) -> int:
        """Score cells along an axis of ``length`` pixels (0 if the window does not fit)."""
        return max(0, (length - self.window) // self.stride + 1)

    @property
    def tile_cells(self) -> tuple[int, int]:
        """Cells of one accelerator tile."""
        return self.cells(self.tile[0]), self.cells(self.tile[1])


@dataclass(frozen=True)
class AxisTiles:
    """Tiles along one axis: canvas length, tile origins (px) and the cells kept."""

    length: int  #: canvas pixels
    starts: tuple[int, ...]  #: tile origins, multiples of the stride
    cells: int  #: cells of the image along this axis (the first ``cells`` of the canvas)


def plan_axis(image: int, tile: int, stride: int, window: int) -> AxisTiles:
    """Tile one axis of an ``image``-px side (module docstring); ``image >= window``."""
    geo = WindowGeometry((tile, tile), stride, window)
    n, m = geo.cells(image), geo.cells(tile)
    if n < 1 or m < 1:
        raise ValueError(f"window {window} does not fit {image} px (tile {tile})")
    used = window + (n - 1) * stride
    length = max(tile, -(-used // stride) * stride)
    step = m * stride
    starts = (*range(0, length - tile, step), length - tile)
    return AxisTiles(length, starts, n)


def resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``rgb`` resized to ``size = (H, W)`` with :data:`RESAMPLE`; unchanged at its own size."""
    if tuple(rgb.shape[:2]) == tuple(size):
        return rgb
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    return np.asarray(image.resize((size[1], size[0]), getattr(Image.Resampling, RESAMPLE)))


def scale_size(spec: ScaleSpec, height: int, width: int) -> tuple[int, int]:
    """The ``(H, W)`` of one scale for an image of ``height x width``."""
    if isinstance(spec, tuple | list):
        h, w = (int(v) for v in spec)
        if h < 1 or w < 1:
            raise ParameterError("{size} must be positive (height, width)", size=spec)
        return h, w
    factor = float(spec)
    if not factor > 0 or not np.isfinite(factor):
        raise ParameterError("{scale} must be a positive number", scale=spec)
    return max(1, round(factor * height)), max(1, round(factor * width))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities of ``logits`` (float64, shifted by the maximum so nothing overflows)."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


@dataclass(frozen=True)
class ScaleResult:
    """One scale of one image."""

    size: tuple[int, int]  #: the resized image (H, W)
    scores: np.ndarray  #: (ny, nx, C) integer scores; cell (i, j) = the crop at (i d, j d)
    stride: int  #: d, pixels between cells
    logits: np.ndarray  #: (C,) the dequantized scores pooled over the cells


@dataclass(frozen=True)
class Classification:
    """One image's result: logits averaged over scales, their softmax, every scale's map."""

    classes: tuple[str, ...]
    logits: np.ndarray  #: (C,) mean over scales of the pooled logits
    probabilities: np.ndarray  #: (C,) softmax of :attr:`logits`
    scales: tuple[ScaleResult, ...]
    pool: str  #: "mean" or "max"

    def top(self, k: int = 5) -> list[tuple[int, str, float]]:
        """The ``k`` most probable classes (all of them if there are fewer), as ``(index,
        name, probability)``, most probable first, ties by index."""
        if k < 1:
            raise ParameterError("{top} must be >= 1", top=k)
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(int(c), self.classes[c], float(self.probabilities[c])) for c in order]


def pool_logits(
    scores: np.ndarray, scale: np.ndarray, bias: np.ndarray, pool: str = "mean"
) -> np.ndarray:
    """``(C,)``: ``scores * scale + bias`` (float64) pooled over every cell of ``scores``."""
    if pool not in POOLS:
        raise ParameterError(f"{{pool}} must be one of {', '.join(POOLS)}", pool=pool)
    logits = scores.reshape(-1, scores.shape[-1]).astype(np.float64) * scale + bias
    return logits.mean(axis=0) if pool == "mean" else logits.max(axis=0)


class Classifier:
    """Classify images of any size with a fixed-tile accelerator (module docstring)."""

    def __init__(
        self,
        engine: Engine,
        geometry: WindowGeometry,
        output_scale: np.ndarray,
        output_bias: np.ndarray,
        *,
        classes: Sequence[str],
        batch: int = 4,
    ) -> None:
        if batch < 1:
            raise ParameterError("{batch} must be >= 1 (tiles per engine call)", batch=batch)
        if min(geometry.tile_cells) < 1:
            raise ParameterError(
                f"{{window}} {geometry.window} does not fit the tile {geometry.tile}",
                window=geometry.window,
            )
        self.engine = engine
        self.geometry = geometry
        self.output_scale = np.asarray(output_scale, dtype=np.float64)
        self.output_bias = np.asarray(output_bias, dtype=np.float64)
        self.classes = tuple(classes)
        self.batch = batch
        self.package: Package | None = None  #: set by :meth:`load`

    @classmethod
    def load(
        cls,
        package: Package | str | os.PathLike[str] | None = None,
        backend: str = "sim",
        *,
        batch: int | None = None,
        board: str | None = None,
        **backend_options: Any,
    ) -> Classifier:
        """Load a classification package (``None``: the shipped default) on ``backend``.

        Verified like a segmentation package (:meth:`fcnseg.host.segmenter.Segmenter.load`:
        hashes, layers, board) and refused in one line if it is not a classifier, or if its
        window disagrees with its layers (the tile's cells must be ``n(T)``); then opened.
        """
        from fcnseg.host.segmenter import open_checked, resolve_package

        if package is None:
            if not (DEFAULT_PACKAGE / "accelerator.json").is_file():
                raise UserError(
                    f"the default classifier package {DEFAULT_PACKAGE.name} is missing "
                    f"(expected in {DEFAULT_PACKAGE}); name a classification package folder"
                )
            package = DEFAULT_PACKAGE
        pkg = resolve_package(package)
        geometry = package_geometry(pkg)
        engine, batch = open_checked(pkg, backend, board, batch, backend_options)
        clf = cls(
            engine,
            geometry,
            pkg.output_scale,
            pkg.output_bias,
            classes=pkg.card.classes,
            batch=batch,
        )
        clf.package = pkg
        return clf

    def strides(self) -> tuple[int, ...]:
        """The strides offered: ``s / f`` for the shift factors that divide ``s``."""
        s = self.geometry.stride
        return tuple(s // f for f in SHIFT_FACTORS if s % f == 0)

    def canvas_map(self, rgb: np.ndarray) -> np.ndarray:
        """``(ny, nx, C)`` integer scores of ``rgb`` at the output stride, tiled (module
        docstring); ``rgb`` must hold at least one window."""
        geo = self.geometry
        h, w = rgb.shape[:2]
        if geo.cells(h) < 1 or geo.cells(w) < 1:
            raise UserError(
                f"image {h}x{w} is smaller than the classifier's {geo.window}x{geo.window} window"
            )
        rows = plan_axis(h, geo.tile[0], geo.stride, geo.window)
        cols = plan_axis(w, geo.tile[1], geo.stride, geo.window)
        canvas = np.zeros((rows.length, cols.length, 3), dtype=np.uint8)
        canvas[: min(h, rows.length), : min(w, cols.length)] = rgb[: rows.length, : cols.length]
        origins = [(y, x) for y in rows.starts for x in cols.starts]
        return self._run_tiles(canvas, origins, (rows.cells, cols.cells))

    def _run_tiles(
        self, canvas: np.ndarray, origins: list[tuple[int, int]], cells: tuple[int, int]
    ) -> np.ndarray:
        """Run the tiles at ``origins`` in groups of :attr:`batch`; the first ``cells``."""
        (th, tw), s = self.geometry.tile, self.geometry.stride
        my, mx = self.geometry.tile_cells
        out: np.ndarray | None = None
        for k in range(0, len(origins), self.batch):
            group = origins[k : k + self.batch]
            x = np.stack([canvas[y : y + th, x0 : x0 + tw] for y, x0 in group])
            y = np.asarray(self.engine.run(x))
            if y.ndim != 4 or y.shape[:3] != (len(group), my, mx):
                raise ValueError(f"engine returned {y.shape} for tiles {x.shape}: not {my}x{mx}")
            if out is None:
                out = np.empty((canvas.shape[0] // s, canvas.shape[1] // s, y.shape[3]), y.dtype)
            for (y0, x0), scores in zip(group, y, strict=True):
                out[y0 // s : y0 // s + my, x0 // s : x0 // s + mx] = scores
        assert out is not None  # at least one tile
        return out[: cells[0], : cells[1]]

    def score_map(
        self, image: Any, size: tuple[int, int] | None = None, stride: int | None = None
    ) -> np.ndarray:
        """``(ny, nx, C)`` integer scores of ``image`` resized to ``size`` (None: as it is) at
        ``stride`` px (None: the output stride; finer: shifted passes, module docstring)."""
        rgb = as_rgb_array(image)
        if size is not None:
            rgb = resize(rgb, size)
        geo = self.geometry
        stride = geo.stride if stride is None else int(stride)
        if stride not in self.strides():
            raise ParameterError(
                f"{{stride}} must be one of {', '.join(map(str, self.strides()))}", stride=stride
            )
        h, w = rgb.shape[:2]
        if geo.cells(h) < 1 or geo.cells(w) < 1:
            raise UserError(
                f"image {h}x{w} is smaller than the classifier's {geo.window}x{geo.window} window"
            )
        plan = plan_shifts(geo.stride, geo.stride // stride)
        fine = ((h - geo.window) // stride + 1, (w - geo.window) // stride + 1)
        maps = [self._pass(rgb, dy, dx) for dy, dx in plan.shifts]
        return interleave(plan, maps, fine)

    def _pass(self, rgb: np.ndarray, dy: int, dx: int) -> np.ndarray:
        """One shifted pass: the map of ``rgb`` cropped by ``(dy, dx)``; no cells if the
        window no longer fits."""
        sub = rgb[dy:, dx:]
        geo = self.geometry
        if geo.cells(sub.shape[0]) < 1 or geo.cells(sub.shape[1]) < 1:
            shape = (geo.cells(sub.shape[0]), geo.cells(sub.shape[1]), len(self.classes))
            return np.zeros(shape, dtype=np.int64)
        return self.canvas_map(sub)

    def classify(
        self,
        image: Any,
        scales: Sequence[ScaleSpec] | None = None,
        pool: str = "mean",
        stride: int | None = None,
    ) -> Classification:
        """Classify ``image`` (array, Pillow image or path) at every scale of ``scales``
        (``(H, W)`` sizes or factors; None: the tile), pooled by ``pool`` (module docstring)."""
        if pool not in POOLS:
            raise ParameterError(f"{{pool}} must be one of {', '.join(POOLS)}", pool=pool)
        rgb = as_rgb_array(image)
        specs = list(scales) if scales is not None else [self.geometry.tile]
        if not specs:
            raise ParameterError("{scales} must hold at least one scale", scales=scales)
        d = self.geometry.stride if stride is None else int(stride)
        results = []
        geo = self.geometry
        for spec in specs:
            size = scale_size(spec, *rgb.shape[:2])
            if min(size) < geo.window:
                h, w = rgb.shape[:2]
                at = "" if size == (h, w) else f" at {size[0]}x{size[1]}"
                raise UserError(
                    f"image {h}x{w}{at} is smaller than the classifier's "
                    f"{geo.window}x{geo.window} window"
                )
            scores = self.score_map(rgb, size, d)
            logits = pool_logits(scores, self.output_scale, self.output_bias, pool)
            results.append(ScaleResult(size, scores, d, logits))
        logits = np.mean([r.logits for r in results], axis=0)
        return Classification(self.classes, logits, softmax(logits), tuple(results), pool)

    def __call__(self, image: Any, **options: Any) -> Classification:
        """:meth:`classify`."""
        return self.classify(image, **options)


def package_geometry(pkg: Package) -> WindowGeometry:
    """The :class:`WindowGeometry` of a classification package, refused in one line if the
    package is not one or its window disagrees with its layers."""
    card, where = pkg.card, f"package {pkg.path}"
    card.require_task("classification", where)
    assert card.window is not None  # the card requires it for classification
    s, g = card.output_stride, pkg.net_stride
    if g != s:
        raise UserError(
            f"{where}: net stride {g} is not the output stride {s}: a classifier's cells are "
            "its crops only when no layer upsamples"
        )
    geo = WindowGeometry(pkg.tile, s, card.window)
    got = tuple(int(v) for v in pkg.output["shape"][1:3])
    if got != geo.tile_cells:
        raise UserError(
            f"{where}: model card window {card.window} gives {geo.tile_cells} cells on the "
            f"{pkg.tile} tile, its layers give {got}"
        )
    return geo
