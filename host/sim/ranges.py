"""Integer value ranges: the proofs behind the simulator's choice of dtypes.

Every tensor in the simulator carries a closed integer range ``(lo, hi)`` that is *derived*, not
trusted: it starts at the input datatype and is propagated through each layer (thresholds give
``[ActVal, ActVal + steps]``, a matrix product gives the per-column extremes of ``x @ W``, a sum
adds ranges ...). From a range follows the smallest numpy integer dtype for storage, and whether a
float GEMM is exact.

:func:`layer_ranges` holds the per-kind rules and is the one source of truth: the simulator's ops
(:mod:`.layers`) call it when they are planned, and the package validation
(:mod:`fcnseg.host.validation`) calls it (through :func:`propagate`) to prove at load time that
every tensor fits its declared datatype — the ranges the hardware would wrap on are the ones the
simulator computes with. The functions here read only attributes, shapes and array extremes; the
validation checks those (types, shapes, sizes) before it calls them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fcnseg.errors import UserError
from fcnseg.host.dtypes import dtype_bits

if TYPE_CHECKING:
    from fcnseg.host.package import Layer

Range = tuple[int, int]

#: Largest integer magnitude below which every integer is exact in the float type.
FLOAT_EXACT = {np.dtype(np.float32): 2**24, np.dtype(np.float64): 2**53}
#: pool functions with integer semantics (finn's ``Pool`` ``Function`` attribute)
POOL_FUNCTIONS = ("MaxPool", "AccPool", "QuantAvgPool")


def storage_dtype(r: Range) -> np.dtype:
    """The smallest numpy integer dtype holding every value of ``r``."""
    lo, hi = r
    for dt in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.int64):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    raise OverflowError(f"range [{lo}, {hi}] exceeds int64")


def matmul_range(in_range: Range, weights: np.ndarray) -> tuple[Range, int]:
    """Output range of ``x @ weights`` for ``x`` in ``in_range``, and the partial-sum bound.

    ``weights`` is (K, M). The returned bound ``S = max_m sum_k |w_km| * max(|lo|, |hi|)`` bounds
    |every partial sum in any summation order| — what decides whether a float GEMM is exact.
    Exact for any integers: in int64 when a float estimate shows no product or sum can come near
    2^62, else in Python integers (weights of a tampered package may be near 2^64).
    """
    lo, hi = in_range
    if not weights.size:
        return (0, 0), 0
    mag = max(abs(lo), abs(hi))
    estimate = float(np.abs(weights.astype(np.float64)).sum(axis=0).max()) * mag
    w = weights.astype(np.int64 if estimate < 2**62 else object)  # object: Python ints
    a, b = w * lo, w * hi
    out_lo = int(np.minimum(a, b).sum(axis=0).min())
    out_hi = int(np.maximum(a, b).sum(axis=0).max())
    bound = int(np.abs(w).sum(axis=0).max()) * mag
    return (out_lo, out_hi), bound


def gemm_dtype(bound: int) -> np.dtype:
    """float32 if every partial sum is below 2^24, else float64 below 2^53, else int64.

    int64 needs no bound on the partial sums: integer products and sums wrap modulo 2^64, so a
    dot product whose *result* fits int64 is exact whatever its partial sums did on the way
    (the accumulator's range is checked by :func:`storage_dtype` and by the package validation).
    """
    for dt in (np.dtype(np.float32), np.dtype(np.float64)):
        if bound < FLOAT_EXACT[dt]:
            return dt
    return np.dtype(np.int64)


def act_bias_scale(odt: str, act_val: int) -> tuple[int, int]:
    """finn's output mapping of a threshold count: BIPOLAR -> 2c - 1, else c + ActVal."""
    return (-1, 2) if odt == "BIPOLAR" else (int(act_val), 1)


def count_range(bias: int, scale: int, steps: int) -> Range:
    """Range of ``scale * count + bias`` for a count of ``0 .. steps`` thresholds passed."""
    ends = (bias, bias + scale * steps)
    return min(ends), max(ends)


def threshold_range(odt: str, act_val: int, steps: int) -> Range:
    """Output range of a multi-threshold with ``steps`` thresholds per channel (finn's mapping)."""
    return count_range(*act_bias_scale(odt, act_val), steps)


def const_range(arr: np.ndarray) -> Range:
    """``(min, max)`` of a non-empty integer constant, as Python integers."""
    return int(arr.min()), int(arr.max())


def elementwise_range(kind: str, a: Range, b: Range) -> Range:
    """Range of ``a op b`` for the integer elementwise kinds (AddStreams is an add)."""
    (a0, a1), (b0, b1) = a, b
    if kind in ("ElementwiseAdd", "AddStreams"):
        return a0 + b0, a1 + b1
    if kind == "ElementwiseSub":
        return a0 - b1, a1 - b0
    if kind == "ElementwiseMul":
        p = [a0 * b0, a0 * b1, a1 * b0, a1 * b1]
        return min(p), max(p)
    if kind == "ElementwiseMax":
        return max(a0, b0), max(a1, b1)
    raise UserError(f"{kind} is not an elementwise kind")


def quant_avg_shift(k2: int, idt: str, odt: str) -> int:
    """finn's QuantAvgPool right shift: ``bits(k^2 * (2^ibits - 1)) - obits`` (at least 0)."""
    ibits, obits = dtype_bits(idt)[0], dtype_bits(odt)[0]
    return max(int((2**ibits - 1) * k2).bit_length() - obits, 0)


@dataclass(frozen=True)
class LayerRanges:
    """What one layer proves: its outputs' ranges and, for an MVAU, its accumulator's."""

    outputs: list[Range]
    acc: Range | None = None  #: MVAU: range of ``x @ W`` (before any thresholds)
    bound: int = 0  #: MVAU: bound on |every partial sum| (:func:`matmul_range`)
    shift: int = 0  #: QuantAvgPool: the right shift


def _attr(layer: Layer, name: str, default: object = None) -> object:
    value = layer.attributes.get(name, default)
    if value is None:
        raise UserError(f"layer {layer.name}: attribute {name!r} missing")
    return value


def layer_ranges(layer: Layer, in_ranges: Sequence[Range]) -> LayerRanges:
    """The ranges one layer's outputs provably take when its inputs lie in ``in_ranges``.

    Follows the simulator's semantics kind by kind (:mod:`.layers`): an MVAU's accumulator is
    :func:`matmul_range` of its weights, thresholded outputs are ``[ActVal, ActVal + steps]``
    (BIPOLAR ``[-1, 1]``), padding adds 0, a max-pool keeps the range, sums and products combine
    ranges, data movers (windows, upsampling, fan-out, FIFOs) keep them.
    """
    kind = layer.kind
    rs = list(in_ranges)
    odt = layer.output_dtypes[0] if layer.output_dtypes else ""
    if kind == "MVAU":
        acc, bound = matmul_range(rs[0], np.asarray(layer.arrays["weights"]))
        if int(_attr(layer, "noActivation", 0)) == 1:
            return LayerRanges([acc], acc, bound)
        steps = int(np.shape(layer.arrays["thresholds"])[-1])
        out = threshold_range(odt, int(_attr(layer, "ActVal", 0)), steps)
        return LayerRanges([out], acc, bound)
    if kind == "Thresholding":
        steps = int(np.shape(layer.arrays["thresholds"])[-1])
        return LayerRanges([threshold_range(odt, int(_attr(layer, "ActVal", 0)), steps)])
    if kind == "FMPadding":
        lo, hi = rs[0]
        return LayerRanges([(min(lo, 0), max(hi, 0))])
    if kind == "Pool":
        return _pool_ranges(layer, rs[0])
    if kind in ("ElementwiseAdd", "ElementwiseSub", "ElementwiseMul", "ElementwiseMax"):
        it = iter(rs)
        a, b = (
            const_range(np.asarray(layer.arrays[side])) if side in layer.arrays else next(it)
            for side in ("lhs", "rhs")
        )
        return LayerRanges([elementwise_range(kind, a, b)])
    if kind == "AddStreams":
        return LayerRanges([elementwise_range(kind, rs[0], rs[1])])
    if kind == "DuplicateStreams":
        return LayerRanges([rs[0]] * len(layer.outputs))
    # ConvolutionInputGenerator, UpsampleNearestNeighbour, StreamingDataWidthConverter,
    # StreamingFIFO: values are moved, never changed
    return LayerRanges([rs[0]])


def _pool_ranges(layer: Layer, r: Range) -> LayerRanges:
    fn = str(_attr(layer, "Function"))
    kh, kw = (int(v) for v in _attr(layer, "KernelSize"))  # type: ignore[union-attr]
    k2 = kh * kw
    lo, hi = r
    if fn == "MaxPool":
        return LayerRanges([(lo, hi)])
    if fn == "AccPool":
        return LayerRanges([(lo * k2, hi * k2)])
    if fn == "QuantAvgPool":
        shift = quant_avg_shift(k2, layer.input_dtypes[0], layer.output_dtypes[0])
        return LayerRanges([(lo * k2 >> shift, hi * k2 >> shift)], shift=shift)
    raise UserError(f"layer {layer.name}: pool function {fn!r} is not integer")


def propagate(
    layers: Sequence[Layer], input_name: str, input_range: Range
) -> tuple[dict[str, Range], dict[str, LayerRanges]]:
    """Every tensor's proven range from the input's, layer by layer (topological order).

    Returns ``(tensor name -> range, layer name -> its LayerRanges)``."""
    ranges: dict[str, Range] = {input_name: input_range}
    per_layer: dict[str, LayerRanges] = {}
    for layer in layers:
        lr = layer_ranges(layer, [ranges[t] for t in layer.inputs])
        ranges.update(zip(layer.outputs, lr.outputs, strict=True))
        per_layer[layer.name] = lr
    return ranges, per_layer
