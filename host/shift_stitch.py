"""Shift-and-stitch (FCN §3.2): a finer output stride from the same accelerator.

With output stride ``s`` and factor ``f`` (``s`` divisible by ``f``, ``d = s / f``), the net runs
on ``f * f`` copies of the canvas shifted up/left by ``(i * d, j * d)`` pixels, ``i, j < f``
(``shifted[y, x] = canvas[y + i d, x + j d]``, zeros where that leaves the canvas), and the
``f * f`` coarse maps are interleaved::

    fine[p * f + i, q * f + j] = pass_ij[p, q]

Cell ``r`` of the fine map therefore sees the pixels ``[r d, r d + s)``: it has stride ``d`` but
keeps the net's footprint ``s`` (the upsampler is told both, :mod:`fcnseg.host.upsample`).
``f = 2`` on an FCN-32s gives stride 16 with 4 passes; ``f = 4`` gives stride 8 with 16.

Away from the borders this is the net with its last ``log2 f`` poolings made stride 1 and every
layer after each of them dilated by the stride removed so far (the "à trous" net): pass ``(i, j)``
differs from the unshifted input only by the shift, the layers before the stride-1 poolings are
shift-equivariant by ``d``, and sub-sampling a dilated conv's output is the undilated conv on the
sub-sampled map. Near the borders the two differ, because a shifted copy's own zero padding
(and its zero fill) sits ``i d`` pixels away from the canvas's; the tests bound that zone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

#: ``run(canvas uint8 (Hc, Wc, 3)) -> (Hc/s, Wc/s, C)``, e.g. a tiled engine.
CanvasFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ShiftPlan:
    """The passes of one shift-and-stitch: pixel shifts and where each map goes."""

    output_stride: int  #: s
    factor: int  #: f
    shifts: tuple[tuple[int, int], ...]  #: (dy, dx) in pixels, pass order
    phases: tuple[tuple[int, int], ...]  #: (i, j): pass lands on fine[i::f, j::f]

    @property
    def stride(self) -> int:
        """The fine map's stride ``d = s / f``."""
        return self.output_stride // self.factor

    @property
    def field(self) -> int:
        """Pixels one fine cell sees along an axis (the net's output stride)."""
        return self.output_stride


@functools.lru_cache(maxsize=32)
def plan_shifts(output_stride: int, factor: int) -> ShiftPlan:
    """Plan ``factor**2`` passes; ``factor`` must divide ``output_stride``."""
    if factor < 1 or output_stride % factor:
        raise ValueError(f"factor={factor} must divide the output stride {output_stride}")
    d = output_stride // factor
    phases = tuple((i, j) for i in range(factor) for j in range(factor))
    shifts = tuple((i * d, j * d) for i, j in phases)
    return ShiftPlan(output_stride, factor, shifts, phases)


def shifted(canvas: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``canvas`` moved up by ``dy`` and left by ``dx`` pixels, zero-filled at the bottom/right."""
    if dy == 0 and dx == 0:
        return canvas
    out = np.zeros_like(canvas)
    h, w = canvas.shape[:2]
    out[: h - dy, : w - dx] = canvas[dy:, dx:]
    return out


def shift_stitch(plan: ShiftPlan, run: CanvasFn, canvas: np.ndarray) -> np.ndarray:
    """Run every pass of ``plan`` on ``canvas`` and interleave: ``(Hc/d, Wc/d, C)`` scores."""
    f = plan.factor
    fine: np.ndarray | None = None
    for (dy, dx), (i, j) in zip(plan.shifts, plan.phases, strict=False):
        coarse = np.asarray(run(shifted(canvas, dy, dx)))
        if fine is None:
            h, w, c = coarse.shape
            fine = np.empty((h * f, w * f, c), dtype=coarse.dtype)
        fine[i::f, j::f] = coarse
    assert fine is not None  # f >= 1: at least one pass
    return fine


def interleave(plan: ShiftPlan, maps: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """The fine ``(rows, cols, C)`` map of ``plan``'s passes, ``maps`` in pass order, whose
    sizes may differ: ``fine[p f + i, q f + j] = maps[k][p, q]`` for pass ``k`` at phase
    ``(i, j)``.

    For nets without padding (a classifier slid over an image, :mod:`fcnseg.host.classify`) a
    pass runs on the image cropped by its shift instead of moved over zeros, so it has only the
    cells whose window lies inside the image: pass ``(i, j)`` has ``len(range(i, rows, f)) x
    len(range(j, cols, f))`` cells, possibly none. Each map must have exactly the size of its
    phase's sub-grid (else ``ValueError``): a cell never lands where another pass's belongs.
    """
    f = plan.factor
    if len(maps) != len(plan.phases) or not maps:
        raise ValueError(f"{len(maps)} maps for the {len(plan.phases)} passes of factor {f}")
    rows, cols = shape
    channels = {m.shape[2] for m in maps if m.ndim == 3}
    if len(channels) != 1 or any(m.ndim != 3 for m in maps):
        raise ValueError(f"maps {[m.shape for m in maps]} are not (h, w, C) with one C")
    fine = np.empty((rows, cols, channels.pop()), dtype=np.result_type(*maps))
    for m, (i, j) in zip(maps, plan.phases, strict=True):
        want = (len(range(i, rows, f)), len(range(j, cols, f)))
        if m.shape[:2] != want:
            raise ValueError(f"pass {(i, j)} gave {m.shape[:2]} cells, its phase has {want}")
        fine[i::f, j::f] = m
    return fine
