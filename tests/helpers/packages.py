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


#: the toy classifier (:func:`make_classifier_layers`): the crop side one score cell is, and the
#: pixels between cells. Not a multiple of the stride on purpose (the host pads the canvas).
CLS_WINDOW, CLS_STRIDE = 14, 4


def _window(name: str, src: str, dst: str, dtype: str, shape, k: int, s: int = 1) -> Layer:
    """A sliding window (no padding): ``k x k`` at stride ``s``, depthwise for the pools."""
    n, h, w, c = shape
    out = (n, (h - k) // s + 1, (w - k) // s + 1, k * k * c)
    attributes = {"ConvKernelDim": [k, k], "Stride": [s, s], "Dilation": [1, 1]}
    if s > 1:
        attributes["depthwise"] = 1
    return Layer(
        "ConvolutionInputGenerator", name, (src,), (dst,), attributes, (dtype,), (dtype,),
        (shape,), (out,),
    )  # fmt: skip


def _mvau(name: str, src: str, dst: str, idt: str, shape, mh: int, rng, act: bool) -> list:
    """An MVAU over ``shape``'s channels: INT4 weights, UINT4 thresholds or raw INT16 scores."""
    n, h, w, mw = shape
    arrays = {"weights": rng.integers(-8, 8, size=(mw, mh)).astype(np.int8)}
    attributes: dict = {"MW": mw, "MH": mh, "weightDataType": "INT4", "accDataType": "INT20"}
    if act:
        # steps within each column's reachable accumulator range, around its middle
        top = 255 if idt == "UINT8" else 15
        wt = arrays["weights"].astype(np.int64)
        lo, hi = top * np.minimum(wt, 0).sum(axis=0), top * np.maximum(wt, 0).sum(axis=0)
        mid, half = (lo + hi) // 2, np.maximum((hi - lo) // 6, 8)
        steps = rng.integers(mid - half, mid + half, size=(15, mh)).T
        arrays["thresholds"] = np.sort(steps, axis=1).astype(np.int32)
        attributes["ActVal"] = 0
    else:
        attributes["noActivation"] = 1
    odt = "UINT4" if act else "INT16"
    return [
        Layer(
            "MVAU",
            name,
            (src,),
            (dst,),
            attributes,
            (idt,),
            (odt,),
            (shape,),
            ((n, h, w, mh),),
            arrays=arrays,
        )
    ]


def _pool(name: str, src: str, dst: str, shape) -> list:
    """A 2x2/2 max-pool (window + Pool) on UINT4."""
    win = _window(f"swg_{name}", src, f"{dst}_w", "UINT4", shape, 2, 2)
    n, h, w, c4 = win.output_shapes[0]
    pool = Layer(
        "Pool", name, (f"{dst}_w",), (dst,), {"Function": "MaxPool", "KernelSize": [2, 2]},
        ("UINT4",), ("UINT4",), (win.output_shapes[0],), ((n, h, w, c4 // 4),),
    )  # fmt: skip
    return [win, pool]


def make_classifier_layers(tile: int = 24, classes: int = NC, seed: int = 11) -> list[Layer]:
    """A valid-conv (unpadded) classifier converted to convolutions, at a ``tile``-px tile:

        conv1 3x3 -> pool 2x2/2 -> conv2 3x3 -> pool 2x2/2 -> fc6 as a 2x2 conv -> score 1x1

    Its ``CLS_WINDOW`` (14) x 14 input gives one cell; cells are ``CLS_STRIDE`` (4) px apart,
    and the receptive field is the window. ``seed`` fixes the weights, so packages at two tiles
    with one seed are the same net (one-pass references)."""
    rng = np.random.default_rng(seed)
    x = (1, tile, tile, 3)
    layers = [_window("swg1", "x", "c1", "UINT8", x, 3)]
    layers += _mvau("conv1", "c1", "a1", "UINT8", layers[-1].output_shapes[0], C1, rng, True)
    layers += _pool("pool1", "a1", "m1", layers[-1].output_shapes[0])
    layers.append(_window("swg2", "m1", "c2", "UINT4", layers[-1].output_shapes[0], 3))
    layers += _mvau("conv2", "c2", "a2", "UINT4", layers[-1].output_shapes[0], C1, rng, True)
    layers += _pool("pool2", "a2", "m2", layers[-1].output_shapes[0])
    layers.append(_window("swg6", "m2", "c6", "UINT4", layers[-1].output_shapes[0], 2))
    layers += _mvau("fc6", "c6", "a6", "UINT4", layers[-1].output_shapes[0], C1, rng, True)
    layers += _mvau("score", "a6", "y", "UINT4", layers[-1].output_shapes[0], classes, rng, False)
    return layers


def classifier_card(tile: int = 24, classes: int = NC) -> dict:
    """The toy classifier's model card at a ``tile``-px tile."""
    return {
        "name": "toy-classifier",
        "arch": "toy",
        "task": "classification",
        "window": CLS_WINDOW,
        "classes": ["a", "b", "c", "d", "e"][:classes],
        "tile": [tile, tile],
        "output_stride": CLS_STRIDE,
        "receptive_field": CLS_WINDOW,
    }


def classifier_package(
    folder: Path, tile: int = 24, classes: int = NC, seed: int = 11, **card
) -> Path:
    """Write the toy classifier's package at ``tile`` (``card`` keys override the card's)."""
    from fcnseg.host.package import write_package

    layers = make_classifier_layers(tile, classes, seed)
    cells = layers[-1].output_shapes[0]
    io = {
        "input": {"name": "x", "dtype": "UINT8", "shape": [1, tile, tile, 3], "layout": "NHWC"},
        "output": {
            "name": "y",
            "dtype": "INT16",
            "shape": list(cells),
            "layout": "NHWC",
            "scale": [0.02 * (k + 1) for k in range(classes)],
            "bias": [0.5 * k - 1.0 for k in range(classes)],
        },
    }
    return write_package(
        folder,
        model_card={**classifier_card(tile, classes), **card},
        io=io,
        layers=layers,
        board="pynq-z2",
        hw_graph=b"-",
    )
