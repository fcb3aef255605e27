"""Latency of one tile through the streaming dataflow pipeline, row by row.

finn's latency (``critical_path_cycles``, ``dataflow_performance``) sums the cycles of the layers
on the longest path, as if no layer started before the one upstream had finished the whole tile.
A dataflow accelerator streams: a 3x3 convolution emits its first output row once three input
rows are in, so every layer works on the same tile at once and the tile leaves after roughly the
bottleneck layer's time plus each layer's *fill* (the rows it must see before it can emit).

The model here, per layer (in the package's topological order):

- ``cycles``: finn's estimated cycles per tile for the layer (``estimate_layer_cycles``), spread
  evenly over its ``H_out`` output rows: one row costs ``cycles / H_out``;
- ``need(r)``: the last input row output row ``r`` depends on, from the layer's geometry:
  a sliding window (``ConvolutionInputGenerator``: kernel ``K``, stride ``S``, dilation ``D``)
  ``r*S + (K-1)*D``; padding (``FMPadding``, ``top`` rows) ``r - top`` clamped to the input;
  nearest upsampling ``floor(r * H_in / H_out)``; row-wise layers (MVAU, Thresholding, Pool fed
  by its window generator, DuplicateStreams, the elementwise joins) ``r``; any other layer the
  proportional ``ceil((r + 1) * H_in / H_out) - 1``;
- output row ``r`` is done at ``max(done(r - 1), ready(need(r))) + cycles / H_out``, where
  ``ready(k)`` is when row ``k`` of every input is done (the graph's input rows arrive at the
  IODMA's rate, ``dma_cycles / H`` apart).

The tile's latency is when the last row of the output layer is done. Assumptions (why this is an
estimate, not a bound): FIFOs between layers are deep enough that no layer waits for space
downstream (finn sizes them for that, with Vivado); a layer's work is uniform over its rows
(true of the MVAU and the padding; a window generator front-loads its line buffer fill); a row
is the unit of hand-over (finer hand-over would only lower the figure). finn's critical path stays
the pessimistic figure beside it; the model's own result never exceeds it (each row waits at most
for its whole input, and a layer at most for all of its rows: tested).

stdlib only: ``fcnseg info`` runs on a board.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fcnseg.errors import UserError

_ROW_WISE = {
    "MVAU",
    "VVAU",
    "Thresholding",
    "Pool",
    "DuplicateStreams",
    "AddStreams",
    "ElementwiseAdd",
    "ElementwiseSub",
    "ElementwiseMul",
    "ElementwiseMax",
    "StreamingDataWidthConverter",
    "StreamingFIFO",
    "LabelSelect",
}


@dataclass(frozen=True)
class Streaming:
    """The row model's figures for one tile."""

    latency_cycles: int
    #: per layer name: cycles from the tile's start until its last output row is done
    finish_cycles: dict[str, int]


def _rows(shape: Sequence[int]) -> int:
    """Rows of an NHWC tensor shape ``[1, H, W, C]`` (1 for a flat one)."""
    return int(shape[1]) if len(shape) == 4 else 1


def _need(kind: str, attrs: Mapping[str, Any], r: int, h_in: int, h_out: int) -> int:
    """The last input row output row ``r`` of a ``kind`` layer needs (-1: none)."""
    if kind == "ConvolutionInputGenerator":
        k = int(attrs["ConvKernelDim"][0])
        s = int(attrs["Stride"][0])
        d = int((attrs.get("Dilation") or [1])[0])
        row = r * s + (k - 1) * d
    elif kind == "FMPadding":
        row = r - int(attrs["Padding"][0])
    elif kind == "UpsampleNearestNeighbour":
        row = (r * h_in) // h_out
    elif kind in _ROW_WISE and h_in == h_out:
        row = r
    else:
        row = -(-(r + 1) * h_in // h_out) - 1
    return min(max(row, -1), h_in - 1)


def layer_cycles(
    layers: Sequence[Mapping[str, Any]], estimated: Sequence[Mapping[str, Any]]
) -> list[int]:
    """finn's cycles for each package layer: ``estimates["layers"]`` (specialised names,
    ``MVAU_hls_3``) matched to the package's layers (``MVAU_3``) as the k-th layer of a kind,
    the order SpecializeLayers keeps (:func:`fcnseg.hw.build.annotate_folding`)."""
    from fcnseg.hw.to_package import base_kind

    by_kind: dict[str, list[int]] = {}
    for row in estimated:
        op_type = re.sub(r"_\d+$", "", str(row["name"]))
        by_kind.setdefault(base_kind(op_type), []).append(int(row["cycles"]))
    seen: dict[str, int] = {}
    out = []
    for layer in layers:
        kind = str(layer["kind"])
        k = seen.get(kind, 0)
        seen[kind] = k + 1
        cycles = by_kind.get(kind, [])
        if k >= len(cycles):
            raise UserError(f"no finn cycle estimate for layer {layer['name']} ({kind})")
        out.append(cycles[k])
    if sum(seen.values()) != sum(len(v) for v in by_kind.values()):
        raise UserError("finn's estimates list layers the package does not have")
    return out


def streaming(
    layers: Sequence[Mapping[str, Any]],
    cycles: Sequence[int],
    dma_cycles: int = 0,
) -> Streaming:
    """The row model (module docstring) over package ``layers`` (``kind``, ``name``,
    ``inputs``, ``outputs``, ``attributes``, ``input_shapes``, ``output_shapes``,
    ``input_dtypes``) in topological order, with finn's ``cycles`` per layer."""
    if len(layers) != len(cycles) or not layers:
        raise UserError(f"{len(layers)} layers but {len(cycles)} cycle estimates")
    ready: dict[str, list[float]] = {}
    produced = {t for layer in layers for t in layer["outputs"]}
    finish: dict[str, int] = {}
    last: list[float] = []
    for layer, c in zip(layers, cycles, strict=True):
        ins = list(layer["inputs"])
        h_out = _rows(layer["output_shapes"][0])
        in_rows = []
        for t, shape in zip(ins, layer["input_shapes"], strict=True):
            h = _rows(shape)
            if t not in produced and t not in ready:  # the graph's input, fed by the IODMA
                ready[t] = [(k + 1) * dma_cycles / h for k in range(h)]
            if t not in ready:
                raise UserError(f"layer {layer['name']} reads {t} before it is produced")
            in_rows.append(ready[t])
        per_row = float(c) / h_out
        done: list[float] = []
        for r in range(h_out):
            start = done[-1] if done else 0.0
            for rows in in_rows:
                k = _need(str(layer["kind"]), layer["attributes"], r, len(rows), h_out)
                if k >= 0:
                    start = max(start, rows[k])
            done.append(start + per_row)
        for t in layer["outputs"]:
            ready[t] = done
        finish[str(layer["name"])] = math.ceil(done[-1])
        last = done
    return Streaming(math.ceil(last[-1]), finish)


def streaming_of(
    layers: Sequence[Any], estimates: Mapping[str, Any], io: Mapping[str, Any]
) -> Streaming | None:
    """:func:`streaming` of package ``layers`` (records or :class:`~fcnseg.host.package.Layer`)
    with finn's per-layer cycles from ``estimates`` (None without them) and the IODMA's cycles
    per tile for ``io`` (:func:`fcnseg.hw.info.fabric_of`)."""
    from fcnseg.hw.info import fabric_of

    if not estimates.get("layers"):
        return None
    records = [layer if isinstance(layer, Mapping) else vars(layer) for layer in layers]
    fabric = fabric_of(dict(estimates), dict(io))
    dma = fabric.dma_cycles if fabric is not None else 0
    return streaming(records, layer_cycles(records, estimates["layers"]), dma)


def package_streaming(package: Any) -> Streaming | None:
    """:func:`streaming_of` a loaded package's layers, estimates and io."""
    return streaming_of(package.meta["layers"], package.estimates or {}, package.meta["io"])
