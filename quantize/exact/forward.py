"""The exact reference: an :class:`~.record.ExactNet` run on integer pixels, in integers.

Convolutions are integer dot products (computed by float64 BLAS only where every partial sum is
provably below 2**53, else in int64), each quantizer is its exact thresholds
(:func:`.levels.thresholds`) counted per channel, pools take integer maxima, nearest upsampling
repeats, adds add. Nothing is rounded that the model does not round, so the result is the
quantized model's integer scores, the value every execution (Brevitas, qonnx, finn, the
simulator, the hardware) must reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from fcnseg.host.sim.ranges import matmul_range
from fcnseg.quantize.exact.levels import natural_signs, thresholds
from fcnseg.quantize.exact.record import ExactNet, Step

Range = tuple[int, int]
EXACT_FLOAT = 2**53


def _matrix(step: Step) -> np.ndarray:
    """A conv step's weights as a (inputs, outputs) matrix (row order irrelevant to ranges)."""
    return step.weight.reshape(step.weight.shape[0], -1).T


def conv_range(step: Step, x: Range) -> Range:
    """Reachable accumulator range of a conv step whose inputs lie in ``x``."""
    return matmul_range(x, _matrix(step))[0]


def oriented(step: Step) -> Step:
    """A conv step whose weights are turned so that every channel's level grows with its
    accumulator (negative batch-norm factors flip a channel, as finn does); other steps as is."""
    if step.op != "conv" or step.quant is None:
        return step
    signs = natural_signs(step)
    if np.all(signs == 1):
        return step
    return replace(step, weight=step.weight * signs.reshape(-1, 1, 1, 1))


def tensor_ranges(net: ExactNet, pixels: Range = (0, 255)) -> dict[str, Range]:
    """Integer range of every tensor (and of every conv's oriented accumulator, ``name.acc``)."""
    r: dict[str, Range] = {net.input: pixels}
    for s in net.steps:
        if s.op == "conv":
            r[f"{s.name}.acc"] = conv_range(oriented(s), r[s.src])
            r[s.dst] = (s.quant.lo, s.quant.hi) if s.quant else r[f"{s.name}.acc"]
        elif s.op == "requant":
            r[f"{s.name}.acc"] = r[s.src]
            r[s.dst] = (s.quant.lo, s.quant.hi)
        elif s.op == "add":
            a, b = r[s.src], r[s.src2]
            r[s.dst] = (a[0] + b[0], a[1] + b[1])
        else:
            r[s.dst] = r[s.src]
    return r


def _conv(x: np.ndarray, step: Step, bound: int) -> np.ndarray:
    """Integer conv of NHWC ``x`` (stride 1, zero padding) -> NHWC int64 accumulators."""
    w = step.weight  # O, I, kh, kw
    o, i, kh, kw = w.shape
    p = step.padding
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    n, hp, wp, _ = xp.shape
    h, wo = hp - kh + 1, wp - kw + 1
    patches = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))
    # (n, h, w, I, kh, kw) -> (n*h*w, kh*kw*I) in the (kh, kw, I) order of the weights below
    cols = patches.transpose(0, 1, 2, 4, 5, 3).reshape(n * h * wo, kh * kw * i)
    wm = w.transpose(2, 3, 1, 0).reshape(kh * kw * i, o)
    if bound < EXACT_FLOAT:
        acc = np.rint(cols.astype(np.float64) @ wm.astype(np.float64)).astype(np.int64)
    else:
        acc = cols.astype(np.int64) @ wm
    return acc.reshape(n, h, wo, o)


def _count(acc: np.ndarray, t: np.ndarray, lo: int) -> np.ndarray:
    """``lo + #{k : acc >= t[c, k]}`` per channel (``t`` rows ascending; one row = all)."""
    out = np.empty(acc.shape, dtype=np.int64)
    for c in range(acc.shape[-1]):
        row = t[c if t.shape[0] > 1 else 0]
        out[..., c] = lo + np.searchsorted(row, acc[..., c], side="right")
    return out


@dataclass
class ExactForward:
    """A cached plan: thresholds solved once per step, then any number of integer runs."""

    net: ExactNet
    ranges: dict[str, Range] = field(init=False)
    steps: list[Step] = field(init=False)
    thresholds: dict[str, np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        self.ranges = tensor_ranges(self.net)
        self.steps = [oriented(s) for s in self.net.steps]
        self.thresholds = {
            s.name: thresholds(s, self.ranges[f"{s.name}.acc"], natural_signs(s))
            for s in self.net.thresholded()
        }

    def run(self, pixels: np.ndarray, keep: bool = False) -> np.ndarray | dict[str, np.ndarray]:
        """Integer scores NHWC of uint8 pixels NHWC (sides multiples of the net's stride).

        ``keep=True`` returns every named tensor (for layer-by-layer comparisons).
        """
        x = np.asarray(pixels)
        if x.ndim == 3:
            x = x[None]
        t: dict[str, np.ndarray] = {self.net.input: x.astype(np.int64)}
        for s in self.steps:
            src = t[s.src]
            if s.op == "conv":
                _, bound = matmul_range(self.ranges[s.src], _matrix(s))
                acc = _conv(src, s, bound)
                t[s.dst] = _count(acc, self.thresholds[s.name], s.quant.lo) if s.quant else acc
            elif s.op == "requant":
                t[s.dst] = _count(src, self.thresholds[s.name], s.quant.lo)
            elif s.op == "pool":
                n, h, w, c = src.shape
                k = s.k
                t[s.dst] = src.reshape(n, h // k, k, w // k, k, c).max(axis=(2, 4))
            elif s.op == "upsample":
                t[s.dst] = src.repeat(s.k, axis=1).repeat(s.k, axis=2)
            elif s.op == "add":
                t[s.dst] = src + t[s.src2]
        return t if keep else t[self.net.output]
