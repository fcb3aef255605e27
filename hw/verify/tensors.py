"""Every intermediate tensor of the simulator on a tile, in finn's stream layouts.

The simulator's engine fuses sliding windows into their consumers, so the tensors between them
never exist there. :func:`simulator_tensors` runs the package's layers one by one with the same
per-layer ops (``fcnseg.host.sim.layers``), unfused, and keeps every tensor: the reference each
generated node is held against. :func:`to_finn_layout` then puts a tensor into the order finn's
stream carries it where that differs from the simulator's NHWC: a depthwise sliding window
(``ConvolutionInputGenerator`` with ``depthwise=1``) emits its window ``(K, C)`` as
``(C/SIMD, K, SIMD)``, so that the consumer sees SIMD channels of one window element together
(finn-plus ``ConvolutionInputGenerator_rtl.execute_node`` does the same interleave).
"""

from __future__ import annotations

import numpy as np

from fcnseg.errors import UserError
from fcnseg.host.package import Package, parse_dtype
from fcnseg.host.sim.layers import OPS
from fcnseg.host.sim.ranges import Range


def simulator_tensors(package: Package, tile: np.ndarray) -> dict[str, np.ndarray]:
    """Tensor name -> int64 NHWC value of every layer input and output on one uint8 tile."""
    x = np.asarray(tile)
    if x.ndim == 3:
        x = x[None]
    expected = (1, *package.tile, 3)
    if x.dtype != np.uint8 or x.shape != expected:
        raise UserError(f"the tile must be uint8 {expected}, got {x.dtype} {x.shape}")
    name = package.input["name"]
    env: dict[str, np.ndarray] = {name: x.astype(np.int64)}
    ranges: dict[str, Range] = {name: parse_dtype(package.input["dtype"])}
    for layer in package.layers:
        cls = OPS.get(layer.kind)
        if cls is None:
            raise UserError(f"layer {layer.name}: kind {layer.kind} has no simulator")
        op = cls(layer, [ranges[t] for t in layer.inputs])
        ranges.update(zip(layer.outputs, op.out_ranges, strict=True))
        results = op(*(env[t] for t in layer.inputs))
        env.update(
            (t, np.asarray(r).astype(np.int64)) for t, r in zip(layer.outputs, results, strict=True)
        )
    return env


def depthwise_interleave(x: np.ndarray, k: int, channels: int, simd: int) -> np.ndarray:
    """``(..., K * C)`` in ``(K, C)`` order -> finn's ``(C/SIMD, K, SIMD)`` order."""
    lead = x.shape[:-1]
    v = x.reshape(*lead, k, channels // simd, simd)
    n = len(lead)
    return v.transpose(*range(n), n + 1, n, n + 2).reshape(*lead, k * channels)


def depthwise_deinterleave(x: np.ndarray, k: int, channels: int, simd: int) -> np.ndarray:
    """Inverse of :func:`depthwise_interleave`: finn's ``(C/SIMD, K, SIMD)`` -> ``(K, C)``."""
    lead = x.shape[:-1]
    v = x.reshape(*lead, channels // simd, k, simd)
    n = len(lead)
    return v.transpose(*range(n), n + 1, n, n + 2).reshape(*lead, k * channels)


def _depthwise_window(node_attrs: dict, op_type: str) -> tuple[int, int, int] | None:
    """``(K, C, SIMD)`` of a depthwise sliding window, else None (a layout finn keeps as is)."""
    if op_type.startswith("ConvolutionInputGenerator") and int(node_attrs.get("depthwise", 0)):
        kh, kw = (int(v) for v in node_attrs["ConvKernelDim"])
        return kh * kw, int(node_attrs["IFMChannels"]), int(node_attrs["SIMD"])
    return None


def from_finn_layout(node_attrs: dict, op_type: str, tensor: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_finn_layout`: an output of ``op_type`` back in the simulator's order."""
    window = _depthwise_window(node_attrs, op_type)
    return tensor if window is None else depthwise_deinterleave(tensor, *window)


def to_finn_layout(node_attrs: dict, op_type: str, tensor: np.ndarray) -> np.ndarray:
    """The output ``tensor`` of a node of ``op_type`` as its stream carries it."""
    window = _depthwise_window(node_attrs, op_type)
    return tensor if window is None else depthwise_interleave(tensor, *window)
