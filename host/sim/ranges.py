"""Integer value ranges: the proofs behind the simulator's choice of dtypes.

Every tensor in the simulator carries a closed integer range ``(lo, hi)`` that is *derived*, not
trusted: it starts at the input datatype and is propagated through each layer (thresholds give
``[ActVal, ActVal + steps]``, a matrix product gives the per-column extremes of ``x @ W``, a sum
adds ranges ...). From a range follows the smallest numpy integer dtype for storage, and whether a
float GEMM is exact.
"""

from __future__ import annotations

import numpy as np

Range = tuple[int, int]

#: Largest integer magnitude below which every integer is exact in the float type.
FLOAT_EXACT = {np.dtype(np.float32): 2**24, np.dtype(np.float64): 2**53}


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
    """
    lo, hi = in_range
    w = weights.astype(np.int64)
    a, b = w * lo, w * hi
    out_lo = int(np.minimum(a, b).sum(axis=0).min()) if w.size else 0
    out_hi = int(np.maximum(a, b).sum(axis=0).max()) if w.size else 0
    bound = int(np.abs(w).sum(axis=0).max()) * max(abs(lo), abs(hi)) if w.size else 0
    return (out_lo, out_hi), bound


def gemm_dtype(bound: int) -> np.dtype:
    """float32 if every partial sum is below 2^24, else float64 below 2^53, else int64."""
    for dt in (np.dtype(np.float32), np.dtype(np.float64)):
        if bound < FLOAT_EXACT[dt]:
            return dt
    return np.dtype(np.int64)
