"""Exact, fast bilinear upsampling of coarse integer scores followed by per-pixel argmax.

What is computed
----------------
A coarse map ``scores[r, q, c]`` (integers, shape ``(h, w, C)``) has cells laid out every
``stride`` pixels; cell ``r`` covers the pixels ``[r*stride, r*stride + field)`` of the canvas, so
its centre is at ``r*stride + field/2``. For a plain network output ``field == stride`` (the
default); a shift-and-stitch map of stride ``s/f`` keeps the footprint ``field = s`` of the net
(see :mod:`fcnseg.host.shift_stitch`). The label of image pixel ``(y, x)`` is::

    argmax_c  scale[c] * B(scores[..., c])(y, x) + bias[c]          (ties -> lowest c)

where ``B`` is bilinear interpolation between cell centres with edge clamping, i.e. for
``field == stride`` exactly ``torch.nn.functional.interpolate(mode="bilinear",
align_corners=False)`` from ``(h, w)`` to ``(h*stride, w*stride)``, cropped to the image's top-left
``(H, W)`` (the canvas is the image padded at the bottom/right, :mod:`fcnseg.host.tiling`). Along
one axis torch's source coordinate is ``src = max(0, (y + 0.5)/stride - 0.5)``; with the footprint
it is ``(y + 0.5 - field/2)/stride`` which, times ``2*stride``, is the integer ``2y + 1 - field``.
So every weight is an integer over the denominator ``2*stride``: ``i0 = floor(src)``,
``w1 = (2y + 1 - field) - 2*stride*i0``, ``w0 = 2*stride - w1``, clamped at both ends as torch does.

Why it is exact
---------------
The interpolated numerator ``N = sum w_y * w_x * scores`` is an integer below 2**53 (scores are
checked to be below 2**31, the weights sum to ``(2*stride)**2``), so it is formed exactly in
float64 in any order and grouping (separable or as a matrix product); the logit is then
``scale[c] * (N / D) + bias[c]`` with ``D = (2*stride)**2``, in that order, in float64. The naive
reference (:func:`upsample_argmax_naive`) evaluates the same expression at every pixel, so both
produce bit-identical logits wherever both evaluate them.

The fast path evaluates them only in some cells. A *cell* is the set of pixels sharing the same
four coarse corners. The true (real-number) logit vector of each of its pixels is a convex
combination of the four corner logit vectors; if class ``k`` beats every other class by more than
``4E`` at all four corners (computed values, ``E`` a bound on float64 rounding of one logit), then
the true gap exceeds ``2E`` at every pixel of the cell and the computed gap exceeds 0: the naive
argmax is ``k`` with no tie. Such cells are filled with ``k`` without touching their pixels;
every other cell (class boundaries, ties) is computed pixel by pixel with the shared formula.

Busy cells in float32, with a tie check (the default)
-----------------------------------------------------
An A9's NEON unit does float32 only (float64 is scalar VFP), and float32 halves the memory
traffic, so busy cells are first evaluated in float32 and only the pixels the arithmetic cannot
decide are redone with the float64 formula above. Per pixel and candidate class the float32 path
interpolates the corner logits directly: ``C = fl32(sum_k w'_k * l_k)`` over the four corners,
``l_k = fl32(L_k)`` with ``L_k = fl64(scale * s_k + bias)`` (the corner logits of
:func:`analyse_cells`) and ``w'_k = fl32(w_k / D)`` (exact when ``D`` is a power of two). With
``A = max|scale| * max|s| + max|bias|`` and ``u = 2**-24``, the real logit being
``T = sum_k (w_k / D) * (scale * s_k + bias)`` (weights >= 0 summing to 1):

- ``|L_k - (scale s_k + bias)| <= 3 u64 A`` (two float64 roundings);
- ``|l_k - L_k| <= u |L_k|`` (plus 2**-150 if it underflows);
- ``|w'_k - w_k/D| <= u w_k/D`` (0 for a power of two);
- the 4-term dot product, in any order, errs by at most ``gamma_4 * sum |w'_k| |l_k|``,
  ``gamma_4 = 4u / (1 - 4u)`` (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd
  ed., section 3.1; an FMA only removes roundings),

so ``|C - T| <= B = (gamma_4 (1+u)**2 + (u_w + u)(1+u) + 3 u64) A + 16 * 2**-150``
(:func:`float32_bound`). The float64 reference value ``R`` of the same pixel is within ``E`` of
``T`` (above), so ``|C - R| <= B + E`` for every class. If the float32 best class ``b`` beats
every other candidate by more than ``2 (B + E)``, then ``R_b - R_j > 0`` for all ``j``: the
reference picks ``b`` with no tie. Every other pixel (a float32 runner-up within ``2 (B + E)``
of the best; ties included) is recomputed exactly with the float64 formula on its integer
numerators, so the labels equal the reference's always. The check itself is done in float32
(``C_j >= fl32(C_b - t)``) with ``t`` widened by the rounding of that subtraction, so it flags
at least those pixels. ``B`` is about ``5u A = 3e-7 A``: on real score maps a handful of pixels
per frame is recomputed. When logits could come near float32's range (``A >= 2**100``), the
float64 path is used instead. With one positive scale for every class and no bias (the shipped
packages) the comparison is done on the integer numerators instead, exactly in float32, and
nothing is redone (:func:`_integer_order` says when that is exact).

Why it is fast and bounded in memory
------------------------------------
Uniform cells are filled by repeating the coarse label map (``np.repeat``, one byte a pixel).
In a busy cell only *candidate* classes are evaluated (:func:`analyse_cells`: a class whose best
corner is below another class's worst corner can neither win nor tie), typically 2-6 of 21.
Interior cells all share one weight pattern (``(2 stride)**2`` integer corner weights), so busy
cells with the same pattern and candidate count are computed together as one small matrix
product (float64: ``(pixels, 4) @ (cells, 4, k)``; float32: one ``(cells * k, 4) @ (4, pixels)``
GEMM), ``chunk_cells`` cells at a time in row-major order (a
strip of the image): the working memory is ``chunk_cells * stride**2 * k`` floats, independent
of the image size. Measured at 1024x2048, 21 classes, stride 8, ~9% busy cells: ~25x faster than
the naive path computed in 64-row strips, ~100x faster than the naive path in one piece.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

_U = 2.0**-53  # unit roundoff of float64


@dataclass(frozen=True)
class AxisWeights:
    """Bilinear source indices and integer weights for one axis (denominator ``den``)."""

    i0: np.ndarray  #: (n_out,) int64, first source cell
    i1: np.ndarray  #: (n_out,) int64, second source cell (== i0 at the edges)
    w0: np.ndarray  #: (n_out,) int64, weight of i0 (times den)
    w1: np.ndarray  #: (n_out,) int64, weight of i1 (times den)
    den: int  #: 2 * stride


def axis_weights(n_out: int, n_in: int, stride: int, field: int | None = None) -> AxisWeights:
    """Return the bilinear weights mapping ``n_in`` coarse cells to ``n_out`` pixels.

    >>> w = axis_weights(8, 2, 4)
    >>> w.i0.tolist(), w.w1.tolist(), w.den
    ([0, 0, 0, 0, 0, 0, 1, 1], [0, 0, 1, 3, 5, 7, 0, 0], 8)
    """
    if stride < 1 or n_in < 1 or n_out < 0:
        raise ValueError(f"bad axis: n_out={n_out}, n_in={n_in}, stride={stride}")
    field = stride if field is None else field
    den = 2 * stride
    num = 2 * np.arange(n_out, dtype=np.int64) + 1 - field
    num = np.maximum(num, 0)  # torch clamps a negative source coordinate to 0
    i0 = num // den
    w1 = num - i0 * den
    last = i0 >= n_in - 1
    i0 = np.where(last, n_in - 1, i0)
    w1 = np.where(last, 0, w1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return AxisWeights(i0=i0, i1=i1, w0=den - w1, w1=w1, den=den)


def _check(scores: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, ...]:
    if scores.ndim != 3:
        raise ValueError(f"scores must be (h, w, C), got shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.integer):
        raise ValueError(f"scores must be integers, got {scores.dtype}")
    n_classes = scores.shape[2]
    scale = np.asarray(scale, dtype=np.float64).reshape(-1)
    bias = np.asarray(bias, dtype=np.float64).reshape(-1)
    if scale.shape != (n_classes,) or bias.shape != (n_classes,):
        raise ValueError(
            f"scale {scale.shape} and bias {bias.shape} must have one entry per class ({n_classes})"
        )
    if np.abs(scores).max(initial=0) >= 2**31:
        raise ValueError("scores beyond int32 cannot be interpolated exactly in float64")
    return scores.astype(np.float64), scale, bias


def _label_dtype(n_classes: int) -> type:
    return np.uint8 if n_classes <= 256 else np.uint16


def _logits(numerators: np.ndarray, den2: float, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The one shared formula: ``scale * (N / D) + bias`` in float64, in this order.

    Overwrites ``numerators``. When ``D`` is a power of two (every stride that is one) ``N / D``
    is exact and ``scale * (N / D) == (scale / D) * N`` bit for bit, which saves a pass.
    """
    if den2 == 2.0 ** round(np.log2(den2)):
        numerators *= scale / den2
    else:
        numerators /= den2
        numerators *= scale
    numerators += bias
    return numerators


def upsample_argmax_naive(
    scores: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    out_shape: tuple[int, int],
    stride: int,
    field: int | None = None,
    rows_per_chunk: int | None = None,
) -> np.ndarray:
    """Reference: interpolate every class at every pixel, then argmax (same arithmetic).

    ``rows_per_chunk`` only bounds memory (the default does the whole image at once); the values
    are identical either way.
    """
    s, scale, bias = _check(scores, scale, bias)
    height, width = out_shape
    wy = axis_weights(height, s.shape[0], stride, field)
    wx = axis_weights(width, s.shape[1], stride, field)
    den2 = float(wy.den * wx.den)
    labels = np.empty((height, width), dtype=_label_dtype(s.shape[2]))
    step = height if rows_per_chunk is None else max(1, rows_per_chunk)
    for top in range(0, height, step):
        rows = slice(top, min(top + step, height))
        v = wy.w0[rows, None, None] * s[wy.i0[rows]] + wy.w1[rows, None, None] * s[wy.i1[rows]]
        n = wx.w0[None, :, None] * v[:, wx.i0] + wx.w1[None, :, None] * v[:, wx.i1]
        labels[rows] = np.argmax(_logits(n.astype(np.float64), den2, scale, bias), axis=2)
    return labels


def _rounding_bound(s: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> float:
    """``E``: a bound on the float64 rounding of one computed logit (three roundings, doubled)."""
    bound = np.abs(scale).max() * np.abs(s).max(initial=0) + np.abs(bias).max()
    return float(6.0 * _U * bound + np.finfo(np.float64).tiny)


def _next(n: int) -> np.ndarray:
    """Index of the second corner along an axis of ``n`` cells (edge-clamped)."""
    return np.minimum(np.arange(n) + 1, n - 1)


@dataclass(frozen=True)
class CellAnalysis:
    """Which cells can be filled without touching their pixels, and what can win elsewhere."""

    label: np.ndarray  #: (h, w) the safe common argmax of a uniform cell (else undefined)
    uniform: np.ndarray  #: (h, w) bool
    busy_r: np.ndarray  #: (n,) row of each non-uniform cell, row-major order
    busy_q: np.ndarray  #: (n,) column of each non-uniform cell
    candidates: np.ndarray  #: (n, C) bool, classes that can win (or tie) in each busy cell
    #: (h, w, C) float64 ``scale * s + bias`` at each cell (the corners); None when the cells
    #: were told apart on the integer scores (:func:`_monotone`)
    logits: np.ndarray | None


def analyse_cells(
    s: np.ndarray, scale: np.ndarray, bias: np.ndarray, den2: float | None = None
) -> CellAnalysis:
    """Classify the cells of float64 integer scores ``s`` (see the module docstring).

    Cell ``(r, q)`` has the corners ``(r|r+1, q|q+1)`` clamped to the map. It is *uniform* when
    one class beats all others by more than ``4E`` at all four corners. In a busy cell, class
    ``j`` is no *candidate* if its largest corner logit is more than ``4E`` below the smallest
    corner logit of some class ``k``: at every pixel the true logit of ``j`` is at most its corner
    maximum and that of ``k`` at least its corner minimum (convexity), so the computed ``j`` stays
    strictly below the computed ``k``. Dropping such classes (keeping the others in index order)
    leaves every argmax, ties included, unchanged.

    Given ``den2`` (``D``) and :func:`_monotone` scale and bias, the same tests run on the
    integer scores themselves with no margin (``E = 0``): the reference's order at a pixel is
    the order of the integer numerators, convex combinations of the corners' ``D * s``, so
    strict inequalities at the corners hold at every pixel. ``logits`` is then None.
    """
    if den2 is not None and _monotone(s, scale, bias, den2):
        values, logits, err = s, None, 0.0
    else:
        logits = scale * s + bias  # == _logits(s * D, D, ...) exactly, since N / D == s
        values, err = logits, _rounding_bound(s, scale, bias)
    h, w, n_classes = values.shape
    # Class by class over contiguous (h, w) planes: numpy's reductions along a short last axis
    # cost several times more. ``top`` is the first maximum (strict >), as np.argmax; a cell is
    # safe when no other class is within 4E of the best (best - runner-up > 4E: rounding is
    # monotone, so the same test).
    planes = np.ascontiguousarray(values.transpose(2, 0, 1))
    best = planes[0].copy()
    top = np.zeros((h, w), dtype=np.intp)
    for c in range(1, n_classes):
        np.copyto(top, c, where=planes[c] > best)
        np.maximum(best, planes[c], out=best)
    near = np.zeros((h, w), dtype=np.int32)
    for c in range(n_classes):
        near += (best - planes[c]) <= 4.0 * err
    safe = near == 1
    # Corners by padding one edge row/column: cell (r, q) reads [r:r+2, q:q+2].
    tp = np.pad(np.where(safe, top, -1), ((0, 1), (0, 1)), mode="edge")
    uniform = (tp[:-1, :-1] >= 0) & (tp[:-1, :-1] == tp[:-1, 1:])
    uniform &= (tp[:-1, :-1] == tp[1:, :-1]) & (tp[:-1, :-1] == tp[1:, 1:])
    busy_r, busy_q = np.nonzero(~uniform)
    r1, q1 = _next(h)[busy_r], _next(w)[busy_q]
    corners = np.stack(
        [values[busy_r, busy_q], values[busy_r, q1], values[r1, busy_q], values[r1, q1]]
    )
    low = corners.min(axis=0).max(axis=1, keepdims=True)
    candidates = corners.max(axis=0) >= low - 4.0 * err
    return CellAnalysis(top, uniform, busy_r, busy_q, candidates, logits)


@dataclass(frozen=True)
class _Runs:
    """The output pixels of each coarse index along one axis: a contiguous run per index."""

    start: np.ndarray  #: (n_in,) first pixel of each run
    count: np.ndarray  #: (n_in,) pixels in each run (0 if cropped away)
    kind: np.ndarray  #: (n_in,) id of the run's weight pattern (same id, same weights)
    patterns: list[np.ndarray]  #: kind -> (count, 2) integer weights (w0, w1)


@functools.lru_cache(maxsize=64)
def _runs(n_out: int, n_in: int, stride: int, field: int | None) -> _Runs:
    """The runs of one axis (cached: a batch of same-sized frames asks for the same ones, and
    the loop over coarse indices is Python, ~1 ms a frame on x86, 10-20x that on an A9).

    Callers only read the arrays (they are shared between calls).
    """
    weights = axis_weights(n_out, n_in, stride, field)
    # intp: on a 32-bit ARM (Pynq-Z2) bincount refuses int64 input (found under qemu-arm)
    count = np.bincount(weights.i0.astype(np.intp), minlength=n_in)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    pairs = np.stack([weights.w0, weights.w1], axis=1)
    ids: dict[bytes, int] = {}
    patterns: list[np.ndarray] = []
    kind = np.empty(n_in, dtype=np.int64)
    for i in range(n_in):
        pattern = pairs[start[i] : start[i] + count[i]]
        key = pattern.tobytes()
        if key not in ids:
            ids[key] = len(patterns)
            patterns.append(pattern)
        kind[i] = ids[key]
    for array in (count, start, kind, *patterns):
        array.flags.writeable = False
    return _Runs(start, count, kind, patterns)


PRECISIONS = ("float32", "float64")


def upsample_argmax(
    scores: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    out_shape: tuple[int, int],
    stride: int,
    field: int | None = None,
    chunk_cells: int = 2048,
    precision: str = "float32",
) -> np.ndarray:
    """Labels ``(H, W)`` of the bilinearly upsampled, dequantized ``scores`` (exact, fast).

    Equal, label for label, to :func:`upsample_argmax_naive` (see the module docstring for the
    proof); ``uint8`` labels for up to 256 classes. Busy cells are computed ``chunk_cells`` at a
    time in row-major order (a strip of the image), which bounds the working memory to
    ``chunk_cells * stride**2 * candidates`` floats. ``precision`` is how busy cells are
    evaluated: ``"float64"`` with the reference's formula at every pixel, ``"float32"``
    (default) in float32 with the tie check of the module docstring (float64 at the pixels it
    flags); the labels are the same either way.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    s, scale, bias = _check(scores, scale, bias)
    height, width = out_shape
    h, w, n_classes = s.shape
    dtype = _label_dtype(n_classes)
    den2 = float(4 * stride * stride)
    if height == 0 or width == 0:
        return np.empty((height, width), dtype=dtype)
    cells = analyse_cells(s, scale, bias, den2)
    # Fill every pixel with its cell's label; busy cells are overwritten below.
    ry, rx = _runs(height, h, stride, field), _runs(width, w, stride, field)
    labels = cells.label.astype(dtype).repeat(ry.count, axis=0).repeat(rx.count, axis=1)
    keep = (ry.count[cells.busy_r] > 0) & (rx.count[cells.busy_q] > 0)
    busy_r, busy_q, cand = cells.busy_r[keep], cells.busy_q[keep], cells.candidates[keep]
    if busy_r.size == 0:
        return labels
    flat = labels.reshape(-1)  # a view: labels come out of repeat C-contiguous
    fast = None
    if precision == "float32":
        fast = _Float32.of(cells.logits, s, scale, bias, den2)
    # Cells with the same row and column weight patterns and as many candidates go together;
    # each cell's candidates in ascending order (ties go to the lowest) are the first k of
    # ``order``.
    n_cand = cand.sum(axis=1)
    order = np.argsort(~cand, axis=1, kind="stable")
    n_kinds = len(ry.patterns) * len(rx.patterns)
    group = (n_cand * len(ry.patterns) + ry.kind[busy_r]) * len(rx.patterns) + rx.kind[busy_q]
    for g in np.unique(group).tolist():
        ky, kx = divmod(g % n_kinds, len(rx.patterns))
        py, px = ry.patterns[ky], rx.patterns[kx]
        # Weight of each corner (r|r1, q|q1) at each pixel (a, b) of the cell: (ny*nx, 4).
        corner_w = (py[:, None, :, None] * px[None, :, None, :]).reshape(len(py) * len(px), 4)
        corner_w = corner_w.astype(np.float64)
        where = np.flatnonzero(group == g)
        for part in range(0, where.size, chunk_cells):
            idx = where[part : part + chunk_cells]
            classes = order[idx, : g // n_kinds]
            cell = _Cells(busy_r[idx], busy_q[idx], classes, corner_w, (len(py), len(px)))
            if fast is None:
                value = _exact_cells(s, scale, bias, den2, cell)
            else:
                value = fast.cells(s, scale, bias, den2, cell)
            flat[cell.flat(ry, rx, width)] = value
    return labels


@dataclass(frozen=True)
class _Cells:
    """A chunk of busy cells sharing one weight pattern and one candidate count ``k``."""

    r: np.ndarray  #: (n,) row of each cell
    q: np.ndarray  #: (n,) column of each cell
    classes: np.ndarray  #: (n, k) each cell's k candidate classes, ascending
    corner_w: np.ndarray  #: (ny*nx, 4) float64 integer weights of the corners at each pixel
    shape: tuple[int, int]  #: (ny, nx) pixels of each cell

    def corners(self, values: np.ndarray, classes: np.ndarray, axis: int) -> np.ndarray:
        """``values[corner, class]`` of each cell's four corners, stacked on ``axis``."""
        return _corner_values(values, self.r, self.q, classes, axis)

    def flat(self, ry: _Runs, rx: _Runs, width: int) -> np.ndarray:
        """``(n, ny*nx)`` flat indices (row * width + column) of the cells' pixels, row-major
        in a cell."""
        ny, nx = self.shape
        offsets = (np.arange(ny)[:, None] * width + np.arange(nx)[None, :]).reshape(-1)
        return (ry.start[self.r] * width + rx.start[self.q])[:, None] + offsets[None, :]


def _corner_values(
    values: np.ndarray, r: np.ndarray, q: np.ndarray, classes: np.ndarray, axis: int
) -> np.ndarray:
    """``values`` at the four corners (r|r+1, q|q+1, edge-clamped) of cells ``(r, q)`` for the
    classes ``(n, k)`` of each, stacked on ``axis`` (1: ``(n, 4, k)``, 2: ``(n, k, 4)``)."""
    h, w = values.shape[:2]
    r1, q1 = _next(h)[r][:, None], _next(w)[q][:, None]
    r, q = r[:, None], q[:, None]
    return np.stack(
        [values[r, q, classes], values[r, q1, classes], values[r1, q, classes],
         values[r1, q1, classes]],
        axis=axis,
    )  # fmt: skip


def _exact_cells(
    s: np.ndarray, scale: np.ndarray, bias: np.ndarray, den2: float, cell: _Cells
) -> np.ndarray:
    """``(n, ny*nx)`` labels of the cells' pixels with the reference's float64 formula."""
    classes = cell.classes
    corners = cell.corners(s, classes, axis=1)  # (n, 4, k)
    n = np.matmul(cell.corner_w, corners)  # (n, ny*nx, k), exact integers
    logits = _logits(n, den2, scale[classes][:, None, :], bias[classes][:, None, :])
    best = np.argmax(logits, axis=2)  # (n, ny*nx)
    return np.take_along_axis(classes, best, axis=1)


def _exact_pixels(
    scale: np.ndarray,
    bias: np.ndarray,
    den2: float,
    corners: np.ndarray,
    weights: np.ndarray,
    classes: np.ndarray,
) -> np.ndarray:
    """Labels of single pixels with the reference's float64 formula: ``corners (m, k, 4)``
    integer scores, ``weights (m, 4)`` their integer weights, ``classes (m, k)``."""
    n = np.einsum("mkf,mf->mk", corners, weights)  # exact integers in any order
    logits = _logits(n, den2, scale[classes], bias[classes])
    best = np.argmax(logits, axis=1)
    return classes[np.arange(len(classes)), best]


_U32 = 2.0**-24  # unit roundoff of float32
#: Above this a float32 logit (or the padding below it) could overflow: float64 instead.
_F32_LIMIT = 2.0**100
#: Absolute error a float32 underflow can add to one logit: 16 operations of 2**-150 each.
_F32_FLOOR = 16 * 2.0**-150


def float32_bound(s: np.ndarray, scale: np.ndarray, bias: np.ndarray, den2: float) -> float:
    """``B``: a bound on ``|float32 logit - real logit|`` of one pixel (module docstring)."""
    a = float(np.abs(scale).max(initial=0) * np.abs(s).max(initial=0) + np.abs(bias).max(initial=0))
    weight_err = 0.0 if den2 == 2.0 ** round(np.log2(den2)) else _U32
    gamma4 = 4 * _U32 / (1 - 4 * _U32)
    per_a = gamma4 * (1 + _U32) ** 2 + (weight_err + _U32) * (1 + _U32) + 3 * _U
    return per_a * a * (1 + 1e-6) + _F32_FLOOR


def _monotone(s: np.ndarray, scale: np.ndarray, bias: np.ndarray, den2: float) -> bool:
    """True when the reference's logit is strictly increasing in the integer numerator ``N``
    and the same function for every class, so its argmax, ties included, is the argmax of ``N``.

    That holds with one scale in ``[2**-900, 2**900]`` for all classes and no bias: the logit
    is ``fl(fl(scale / D * N))`` (or ``fl(fl(N / D) * scale)``); numerators below ``2**51``
    (``max|s| * D``) that differ by one differ relatively by more than ``2**-51``, far above
    float64's rounding, and the scale keeps every product normal.
    """
    one_scale = bool(np.all(scale == scale[0])) and 2.0**-900 <= scale[0] <= 2.0**900
    return one_scale and not np.any(bias) and np.abs(s).max(initial=0) * den2 < 2**51


def _integer_order(s: np.ndarray, scale: np.ndarray, bias: np.ndarray, den2: float) -> bool:
    """True when comparing the numerators ``N / D`` exactly in float32 decides every label:
    :func:`_monotone`, and ``N / D`` exact in float32, which it is when ``D`` is a power of two
    and ``max|s| * D < 2**24`` (every product ``(w / D) * s`` and partial sum is a multiple of
    ``1 / D`` below ``2**24 / D`` in magnitude). The shipped packages (one scale, no bias, INT9
    scores, stride 8) are such; then no pixel needs float64.
    """
    power_of_two = den2 == 2.0 ** round(np.log2(den2))
    small = np.abs(s).max(initial=0) * den2 < 2**24
    return power_of_two and small and _monotone(s, scale, bias, den2)


@dataclass(frozen=True)
class _Float32:
    """The float32 busy-cell path: corner values in float32 and the tie-check threshold."""

    logits: np.ndarray  #: (h, w, C) float32 corner values: ``fl32(scale * s + bias)``, or ``s``
    threshold: np.float32 | None  #: redo a pixel whose runner-up is this close (None: exact)

    @classmethod
    def of(
        cls,
        logits: np.ndarray | None,
        s: np.ndarray,
        scale: np.ndarray,
        bias: np.ndarray,
        den2: float,
    ) -> _Float32 | None:
        """The float32 path for these scores, or None where float32 could overflow."""
        if _integer_order(s, scale, bias, den2):
            return cls(s.astype(np.float32), None)
        if logits is None:  # the cells were analysed on the integers
            logits = scale * s + bias
        a = float(np.abs(scale).max() * np.abs(s).max(initial=0) + np.abs(bias).max())
        if not a < _F32_LIMIT:
            return None
        gap = 2.0 * (float32_bound(s, scale, bias, den2) + _rounding_bound(s, scale, bias))
        # ``best - threshold`` is rounded to float32 (error <= u32 * (|best| + threshold)):
        # widen the threshold by that, so the rounded comparison flags at least every pixel
        # whose float32 gap is within ``gap``.
        wide = (gap + 2 * _U32 * (2 * a + gap)) * (1 + 1e-6)
        threshold = np.nextafter(np.float32(wide), np.float32(np.inf))
        return cls(logits.astype(np.float32), threshold)

    def cells(
        self, s: np.ndarray, scale: np.ndarray, bias: np.ndarray, den2: float, cell: _Cells
    ) -> np.ndarray:
        """``(n, ny*nx)`` labels of the cells' pixels: float32, redone exactly where close."""
        classes = cell.classes
        n, k = classes.shape
        corners = cell.corners(self.logits, classes, axis=2)  # (n, k, 4)
        weights = (cell.corner_w / den2).astype(np.float32)  # (P, 4), exact for 2**j
        values = np.dot(corners.reshape(n * k, 4), weights.T).reshape(n, k, -1)  # (n, k, P)
        # argmax over the few candidates as k - 1 comparisons (strict: the first maximum
        # wins, as np.argmax), cheaper than a reduction along a short middle axis
        top = values[:, 0].copy()
        best = np.zeros(top.shape, dtype=np.intp)
        for j in range(1, k):
            np.copyto(best, j, where=values[:, j] > top)
            np.maximum(top, values[:, j], out=top)
        labels = np.take_along_axis(classes, best, axis=1)
        if k == 1 or self.threshold is None:
            return labels
        top -= self.threshold
        near = np.zeros(top.shape, dtype=np.uint8)
        for j in range(k):
            near += values[:, j] >= top
        close = near > 1
        cell_i, pixel = np.nonzero(close)
        if cell_i.size:
            chosen = classes[cell_i]
            exact = _corner_values(s, cell.r[cell_i], cell.q[cell_i], chosen, axis=2)
            labels[cell_i, pixel] = _exact_pixels(
                scale, bias, den2, exact, cell.corner_w[pixel], chosen
            )
        return labels
