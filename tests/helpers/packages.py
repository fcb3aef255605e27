"""A hand-made deployment package: pad, 3x3 conv (MVAU + thresholds), 2x2 max-pool, 1x1 score
(8x8 tile, output stride 2, 3 classes), its layers, io and model card, and :func:`tiny_package`
which writes it. Each :func:`make_layers` call draws fresh weights from one module-level RNG.
The layers declare what a package must (shapes at the tile, weight and accumulator types), and
the card the receptive field the layers have: the package passes the load-time validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcnseg.host.package import Layer

RNG = np.random.default_rng(7)
C1, NC = 4, 3


def make_layers(tile: int = 8, classes: int = NC, rng: np.random.Generator | None = None):
    """The package's six layers; weights and thresholds freshly drawn from ``rng`` (default
    :data:`RNG`).

    ``tile`` (even) only sets the shapes the layers declare (a package at another tile);
    ``classes`` is the score layer's output channels."""
    rng = RNG if rng is None else rng
    t, h = tile, tile // 2
    w1 = rng.integers(-8, 8, size=(27, C1)).astype(np.int8)
    t1 = np.sort(rng.integers(-400, 400, size=(C1, 15)), axis=1).astype(np.int16)
    w2 = rng.integers(-8, 8, size=(C1, classes)).astype(np.int8)
    return [
        Layer(
            "FMPadding",
            "pad0",
            ("x",),
            ("p0",),
            {"Padding": [1, 1, 1, 1]},
            ("UINT8",),
            ("UINT8",),
            ((1, t, t, 3),),
            ((1, t + 2, t + 2, 3),),
        ),
        Layer(
            "ConvolutionInputGenerator",
            "swg0",
            ("p0",),
            ("c0",),
            {"ConvKernelDim": [3, 3], "Stride": [1, 1], "Dilation": [1, 1]},
            ("UINT8",),
            ("UINT8",),
            ((1, t + 2, t + 2, 3),),
            ((1, t, t, 27),),
            folding={"SIMD": 3},
        ),
        Layer(
            "MVAU",
            "conv1",
            ("c0",),
            ("a1",),
            {"MW": 27, "MH": C1, "ActVal": 0, "weightDataType": "INT4", "accDataType": "INT17"},
            ("UINT8",),
            ("UINT4",),
            ((1, t, t, 27),),
            ((1, t, t, C1),),
            folding={"PE": 2, "SIMD": 9},
            arrays={"weights": w1, "thresholds": t1},
        ),
        Layer(
            "ConvolutionInputGenerator",
            "swg1",
            ("a1",),
            ("c1",),
            {"ConvKernelDim": [2, 2], "Stride": [2, 2], "Dilation": [1, 1], "depthwise": 1},
            ("UINT4",),
            ("UINT4",),
            ((1, t, t, C1),),
            ((1, h, h, 4 * C1),),
        ),
        Layer(
            "Pool",
            "pool1",
            ("c1",),
            ("m1",),
            {"Function": "MaxPool", "KernelSize": [2, 2]},
            ("UINT4",),
            ("UINT4",),
            ((1, h, h, 4 * C1),),
            ((1, h, h, C1),),
        ),
        Layer(
            "MVAU",
            "score",
            ("m1",),
            ("y",),
            {
                "MW": C1,
                "MH": classes,
                "noActivation": 1,
                "weightDataType": "INT4",
                "accDataType": "INT16",
            },
            ("UINT4",),
            ("INT16",),
            ((1, h, h, C1),),
            ((1, h, h, classes),),
            arrays={"weights": w2},
        ),
    ]


IO = {
    "input": {"name": "x", "dtype": "UINT8", "shape": [1, 8, 8, 3], "layout": "NHWC"},
    "output": {
        "name": "y",
        "dtype": "INT16",
        "shape": [1, 4, 4, NC],
        "layout": "NHWC",
        "scale": [0.5, 0.25, 1.0],
        "bias": [0.0, 1.0, -1.0],
    },
}
CARD = {
    "name": "toy",
    "arch": "toy",
    "classes": ["a", "b", "c"],
    "palette": [[0, 0, 0], [1, 2, 3], [4, 5, 6]],
    "tile": [8, 8],
    "output_stride": 2,
    "receptive_field": 4,  # 3x3 conv (3), then a 2x2/2 pool (+1)
    "normalisation": "x/255",
}


def tiny_package(folder: Path) -> Path:
    """A real, hand-made deployment package (H4's test layers: 3x3 conv, pool, 1x1 score)."""
    from fcnseg.host.package import write_package

    return write_package(
        folder, model_card=CARD, io=IO, layers=make_layers(), board="pynq-z2", hw_graph=b"-"
    )
