"""Tiling: run a fixed-size accelerator over an image of any size and stitch the heatmaps.

The canvas
----------
For an image of ``H x W`` pixels and a net whose input must be a multiple of its *net stride*
``g`` (the product of all its poolings, 32 for our FCNs) with accelerator tile ``Th x Tw``, the
canvas is the image placed at the top-left of a zero (black) array of::

    Hc = max(Th, ceil(H / g) * g)        Wc = max(Tw, ceil(W / g) * g)

Pixel ``(y, x)`` of the image is pixel ``(y, x)`` of the canvas, so the coarse map of the canvas
(``Hc/s x Wc/s`` cells at output stride ``s``) covers the image from its top-left corner and the
upsampler just crops ``[:H, :W]`` (:mod:`fcnseg.host.upsample`). Why zeros: the net's first conv
zero-pads its input, and a 0 in the quantized input is pixel value 0, so the padded canvas is the
same kind of border the net already sees at every image edge; that makes "the net run once over
the whole canvas" (:meth:`Engine.run` on the canvas, the engine is size-agnostic) a well-defined
reference, which the stitched result equals exactly.

The plan
--------
Along each axis of length ``L`` (a multiple of ``g``, at least the tile ``T``), tiles start at
multiples of ``g`` (so every pooling grid inside a tile is aligned with the canvas's) and are
spread evenly: ``n = ceil((L - T) / stride) + 1`` tiles, ``start_k = floor(k (L - T) / (n - 1)
/ g) * g``, the last flush with the end, consecutive starts at most ``stride = T - overlap``
apart. Each tile hands its coarse cells to the output up to the middle of its overlap with the
next tile, rounded down to a multiple of ``g`` (a cut never splits a ``g``-cell); at the canvas
border a tile keeps everything (its edge is the canvas edge there, and the net's padding is the
one-pass padding).

A kept cell is exact when its receptive field does not reach past an *interior* tile edge. The
model card's receptive field ``R`` (px per axis, the widest dependency interval of any output
cell) is centred on the ``g``-cell ``[g k, g k + g)`` that holds the output cell: 3x3 "same"
convs and aligned 2x2 pools keep it symmetric, and after nearest upsampling (FCN-16s/8s) every
fine cell of a ``g``-cell reads that ``g``-cell's coarse field plus a smaller skip field inside
it. So everything a ``g``-cell's outputs depend on lies within ``margin = ceil((R - g) / 2)``
pixels of it, and because cuts fall on ``g``-cell boundaries the default overlap is
``2 * ceil(margin / g) * g``: each side of each cut then keeps at least ``margin`` pixels of
context. A smaller ``overlap`` is allowed (faster, not exact; :attr:`TilePlan.exact` says which).

Plans depend only on shapes, so they are cached (:func:`plan_tiles`), then executed for every
image of that canvas size, in the way einops caches recipes: :func:`run_rows` is the one execute
loop (a generator over rows of tiles, for strips of a large image), :func:`run_tiled` runs it
over a whole canvas.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

#: ``run(x uint8 (N, h, w, 3)) -> int64 (N, h/s, w/s, C)``: an engine's ``run``.
RunFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Geometry:
    """What tiling needs to know about the accelerator and its net."""

    tile: tuple[int, int]  #: accelerator input (H, W), multiples of net_stride
    output_stride: int  #: s: one output cell per s x s pixels
    net_stride: int  #: g: input sizes and tile origins must be multiples of it (>= s)
    receptive_field: int | None = None  #: R (px per axis), None if unknown

    def __post_init__(self) -> None:
        g, s = self.net_stride, self.output_stride
        if s < 1 or g % s:
            raise ValueError(f"net stride {g} must be a multiple of the output stride {s}")
        if any(t < g or t % g for t in self.tile):
            raise ValueError(f"tile {self.tile} must be a positive multiple of {g}")

    @property
    def margin(self) -> int:
        """Pixels of context a ``g``-cell needs on each side (module docstring); 0 if unknown."""
        if self.receptive_field is None:
            return 0
        return max(0, math.ceil((self.receptive_field - self.net_stride) / 2))

    @property
    def default_overlap(self) -> int:
        """The smallest overlap (multiple of ``g``) whose stitch is exact."""
        g = self.net_stride
        return 2 * math.ceil(self.margin / g) * g

    @property
    def max_overlap(self) -> int:
        """The largest overlap that still advances: tiles ``g`` pixels apart."""
        return min(self.tile) - self.net_stride

    @property
    def smallest_exact_side(self) -> int | None:
        """The shortest tile side whose stitch is exact: the exact overlap plus ``g`` (tiles
        must still advance by ``g``). :func:`plan_tiles` caps the overlap of *both* axes at
        :attr:`max_overlap`, so both sides need at least this. None if ``R`` is unknown."""
        if self.receptive_field is None:
            return None
        return self.default_overlap + self.net_stride

    @property
    def planned_overlap(self) -> int:
        """The overlap :func:`plan_tiles` uses by default: the exact one, capped at
        :attr:`max_overlap` (below :attr:`smallest_exact_side` the stitch is not exact)."""
        return min(self.default_overlap, self.max_overlap)

    def canvas_shape(self, height: int, width: int) -> tuple[int, int]:
        """``(Hc, Wc)``: the image rounded up to ``g`` and to at least one tile."""
        if height < 1 or width < 1:
            raise ValueError(f"empty image {height}x{width}")
        g = self.net_stride
        return (
            max(self.tile[0], -(-height // g) * g),
            max(self.tile[1], -(-width // g) * g),
        )


def make_canvas(image: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The canvas ``(Hc, Wc, 3) uint8``: ``image`` at the top-left, zeros elsewhere."""
    height, width = image.shape[:2]
    hc, wc = geometry.canvas_shape(height, width)
    if (hc, wc) == (height, width):
        return np.ascontiguousarray(image, dtype=np.uint8)
    canvas = np.zeros((hc, wc, 3), dtype=np.uint8)
    canvas[:height, :width] = image
    return canvas


@dataclass(frozen=True)
class AxisPlan:
    """Tiles along one axis: origins (px) and the coarse cells each keeps."""

    starts: tuple[int, ...]  #: tile origins in pixels
    keep: tuple[tuple[int, int], ...]  #: kept cells [lo, hi) in canvas cell coordinates
    guard: int  #: fewest pixels of context between a kept cell and an interior tile edge


@functools.lru_cache(maxsize=256)
def plan_axis(
    length: int, tile: int, net_stride: int, output_stride: int, overlap: int
) -> AxisPlan:
    """Place tiles along an axis of ``length`` px (see the module docstring)."""
    g, s = net_stride, output_stride
    if length < tile or length % g or tile % g:
        raise ValueError(f"axis {length} must be >= the tile {tile}, both multiples of {g}")
    if not 0 <= overlap <= tile - g or overlap % g:
        raise ValueError(f"overlap={overlap} must be a multiple of {g} in [0, {tile - g}]")
    stride = tile - overlap
    n = -(-(length - tile) // stride) + 1
    span = (length - tile) // g  # in units of g
    starts = tuple((k * span // (n - 1)) * g if n > 1 else 0 for k in range(n))
    cuts = [0]
    for a, b in zip(starts, starts[1:], strict=False):
        # The middle of the overlap [b, a + T), rounded down to a g-cell boundary, in cells.
        cuts.append((b + a + tile) // (2 * g) * g // s)
    cuts.append(length // s)
    keep = tuple(zip(cuts[:-1], cuts[1:], strict=False))
    guard = min(
        [(a + tile) // s - hi for a, (lo, hi) in zip(starts[:-1], keep[:-1], strict=False)]
        + [lo - b // s for b, (lo, hi) in zip(starts[1:], keep[1:], strict=False)]
        + [length // s]
    )
    return AxisPlan(starts=starts, keep=keep, guard=guard * s)


@dataclass(frozen=True)
class TilePlan:
    """A cached tiling of one canvas shape: tile origins and what each contributes."""

    geometry: Geometry
    canvas: tuple[int, int]
    overlap: int
    rows: AxisPlan
    cols: AxisPlan

    @property
    def tiles(self) -> list[tuple[int, int]]:
        """``(row, column)`` index pairs of every tile, row-major."""
        return [(i, j) for i in range(len(self.rows.starts)) for j in range(len(self.cols.starts))]

    @property
    def guard(self) -> int:
        """Fewest pixels of context any kept cell has towards an interior tile edge."""
        return min(self.rows.guard, self.cols.guard)

    @property
    def exact(self) -> bool:
        """True when the stitched map equals the one-pass map over the canvas (receptive field)."""
        return self.geometry.receptive_field is not None and self.guard >= self.geometry.margin


@functools.lru_cache(maxsize=256)
def plan_tiles(geometry: Geometry, canvas: tuple[int, int], overlap: int | None = None) -> TilePlan:
    """Plan the tiles of a ``canvas`` ``(Hc, Wc)``; ``overlap=None`` takes the exact default.

    ``overlap`` is rounded up to a multiple of the net stride ``g`` and capped at ``T - g``.
    """
    g = geometry.net_stride
    wanted = geometry.default_overlap if overlap is None else int(overlap)
    if wanted < 0:
        raise ValueError(f"overlap={wanted} must be >= 0")
    ov = min(-(-wanted // g) * g, geometry.max_overlap)
    th, tw = geometry.tile
    s = geometry.output_stride
    rows = plan_axis(canvas[0], th, g, s, min(ov, th - g))
    cols = plan_axis(canvas[1], tw, g, s, min(ov, tw - g))
    return TilePlan(geometry=geometry, canvas=tuple(canvas), overlap=ov, rows=rows, cols=cols)


class _RowAssembler:
    """The stitched score rows of a plan, filled tile by tile and handed out top to bottom."""

    def __init__(self, plan: TilePlan) -> None:
        self.plan = plan
        self.blocks: dict[int, np.ndarray] = {}  # tile row -> its kept cells, being filled
        self.missing = [len(plan.cols.starts)] * len(plan.rows.starts)  # tiles not yet in
        self.next = 0  # the next tile row to hand out

    def put(self, i: int, j: int, scores: np.ndarray) -> None:
        """Keep tile ``(i, j)``'s cells (``scores``: the engine's ``(Th/s, Tw/s, C)``)."""
        plan, s = self.plan, self.plan.geometry.output_stride
        (r0, r1), (c0, c1) = plan.rows.keep[i], plan.cols.keep[j]
        block = self.blocks.get(i)
        if block is None:
            shape = (r1 - r0, plan.canvas[1] // s, scores.shape[2])
            block = self.blocks[i] = np.empty(shape, dtype=scores.dtype)
        oy, ox = plan.rows.starts[i] // s, plan.cols.starts[j] // s
        block[:, c0:c1] = scores[r0 - oy : r1 - oy, c0 - ox : c1 - ox]
        self.missing[i] -= 1

    def ready(self) -> Iterator[np.ndarray]:
        """The tile rows completed since the last call, in order."""
        while self.next < len(self.missing) and self.missing[self.next] == 0:
            yield self.blocks.pop(self.next)
            self.next += 1


def run_rows(
    plan: TilePlan, run: RunFn, bands: Iterable[np.ndarray], batch: int = 4
) -> Iterator[np.ndarray]:
    """Execute ``plan`` a row of tiles at a time: yield each tile row's kept score rows.

    ``bands`` gives, for each tile row ``i`` in order, the canvas rows ``[y_i, y_i + Th)`` as
    ``(Th, Wc, 3)`` uint8 (views of a whole canvas, or one buffer that a reader refills: a band
    is done with before the next is drawn). Block ``i`` is ``(r1 - r0, Wc/s, C)``, the stitched
    cells ``[r0, r1) = plan.rows.keep[i]``, so the blocks stacked are :func:`run_tiled`'s map.

    Tiles go to ``run`` row-major in groups of ``batch`` that may span two tile rows (an engine
    sized for ``batch`` tiles a call stays full): the few tiles left at the end of a row are
    copied out of its band and wait for the next row's, so a block comes out once its last tile
    has run, at most one band later. This is the one execute loop of the host: whole images
    (:func:`run_tiled`) and strips (:meth:`fcnseg.host.segmenter.Segmenter.stream`) run it.
    """
    th, tw = plan.geometry.tile
    step = max(1, int(batch))
    rows = _RowAssembler(plan)
    waiting: list[tuple[int, int, np.ndarray]] = []  # (i, j, pixels) not yet run
    for i, band in zip(range(len(plan.rows.starts)), bands, strict=True):
        if band.shape[:2] != (th, plan.canvas[1]):
            raise ValueError(f"band {band.shape[:2]} of tile row {i} is not {(th, plan.canvas[1])}")
        waiting += [(i, j, band[:, x : x + tw]) for j, x in enumerate(plan.cols.starts)]
        while len(waiting) >= step:
            _run_group(plan, run, waiting[:step], rows)
            del waiting[:step]
        # the band may be refilled next: copy what of it still waits
        waiting = [(a, b, np.array(p) if a == i else p) for a, b, p in waiting]
        yield from rows.ready()
    if waiting:
        _run_group(plan, run, waiting, rows)
    yield from rows.ready()


def _run_group(
    plan: TilePlan, run: RunFn, group: list[tuple[int, int, np.ndarray]], rows: _RowAssembler
) -> None:
    """One engine call on ``group``'s tiles, its output checked and kept."""
    s = plan.geometry.output_stride
    th, tw = plan.geometry.tile
    x = np.stack([pixels for _, _, pixels in group])
    y = np.asarray(run(x))
    if y.shape[:3] != (len(group), th // s, tw // s) or y.ndim != 4:
        raise ValueError(f"engine returned {y.shape} for tiles {x.shape}, stride {s}")
    for (i, j, _), scores in zip(group, y, strict=True):
        rows.put(i, j, scores)


def run_tiled(plan: TilePlan, run: RunFn, canvas: np.ndarray, batch: int = 4) -> np.ndarray:
    """Execute ``plan`` on ``canvas`` ``(Hc, Wc, 3)``: the stitched ``(Hc/s, Wc/s, C)`` scores."""
    if canvas.shape[:2] != plan.canvas:
        raise ValueError(f"canvas {canvas.shape[:2]} does not match the plan's {plan.canvas}")
    th = plan.geometry.tile[0]
    blocks = list(run_rows(plan, run, (canvas[y : y + th] for y in plan.rows.starts), batch))
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
