"""An integer FCN-32s/FCN-8s in numpy with the engine interface (``run``: NHWC uint8 -> int64
scores), random small integer weights: exact references for tiling, stitching, shift-and-stitch
and the segmenter without a deployment package. ``conv``/``act``/``pool``/``up`` are its layers
(the shift-and-stitch tests rebuild it with dilated convolutions)."""

from __future__ import annotations

import numpy as np

from fcnseg.host.tiling import Geometry


def conv(x: np.ndarray, w: np.ndarray, dilation: int = 1) -> np.ndarray:
    """'same' zero-padded conv, NHWC int64, weights (k, k, cin, cout)."""
    k = w.shape[0]
    pad = dilation * (k // 2)
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    h, wd = x.shape[1:3]
    out = np.zeros((*x.shape[:3], w.shape[3]), dtype=np.int64)
    for dy in range(k):
        for dx in range(k):
            patch = xp[:, dy * dilation : dy * dilation + h, dx * dilation : dx * dilation + wd]
            out += patch @ w[dy, dx]
    return out


def act(x: np.ndarray, shift: int) -> np.ndarray:
    return np.clip(x >> shift, 0, 15)


def pool(x: np.ndarray) -> np.ndarray:
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def up(x: np.ndarray) -> np.ndarray:
    return x.repeat(2, axis=1).repeat(2, axis=2)


class ToyEngine:
    """Integer FCN-32s/8s in numpy with the Engine interface (``run``, NHWC uint8 -> int64)."""

    net_stride = 32

    def __init__(self, arch: str = "fcn8s", classes: int = 3, seed: int = 3, head_kernel: int = 1):
        rng = np.random.default_rng(seed)
        self.arch = arch
        self.output_stride = 32 if arch == "fcn32s" else 8
        chans = [3, 4, 4, 6, 6, 6]
        self.convs = [
            rng.integers(-2, 3, size=(3, 3, a, b)) for a, b in zip(chans, chans[1:], strict=False)
        ]
        self.head = rng.integers(-2, 3, size=(head_kernel, head_kernel, 6, 6))
        self.score = {k: rng.integers(-6, 7, size=(1, 1, 6, classes)) for k in ("fr", "p4", "p3")}
        # Receptive field: 3x3 convs at strides 1..16 add 1+2+4+8+16 = 31 px a side, the head
        # (head_kernel // 2) * 32; the 32-cell itself is 32 px wide.
        self.receptive_field = 32 + 2 * (31 + 32 * (head_kernel // 2))
        self.calls: list[tuple[int, ...]] = []

    def run(self, x: np.ndarray) -> np.ndarray:
        assert x.dtype == np.uint8 and x.ndim == 4 and x.shape[3] == 3
        assert x.shape[1] % 32 == 0 and x.shape[2] % 32 == 0
        self.calls.append(x.shape)
        h = x.astype(np.int64)
        taps = []
        for w, shift in zip(self.convs, (6, 3, 3, 1, 1), strict=True):
            h = pool(act(conv(h, w), shift))
            taps.append(h)
        h = act(conv(h, self.head), 1)
        scores = conv(h, self.score["fr"])
        if self.arch == "fcn8s":
            scores = up(scores) + conv(taps[3], self.score["p4"])
            scores = up(scores) + conv(taps[2], self.score["p3"])
        return scores

    def geometry(self, tile: tuple[int, int] = (128, 128)) -> Geometry:
        return Geometry(tile, self.output_stride, self.net_stride, self.receptive_field)
