"""Board fit: finn's resource estimates against a board's budget, and re-folding until it fits.

finn-plus reports estimates but never compares them with the device: a 99k-LUT design "builds"
for a 53k-LUT Pynq-Z2. Here the budget is the preset's totals times ``1 - margin`` (the margin
leaves room for the shell: DMAs, interconnect, FIFOs that the estimates do not include).

Rates are the accelerator's: tiles/s, one tile being its fixed input (finn calls the same number
FPS and its target ``target_fps``; a frame of any other size takes several tiles, see
:mod:`fcnseg.host.tiling`). Folding is monotone enough in practice (fewer cycles per tile -> more
PE/SIMD -> more LUT and BRAM) that a bisection over the target rate finds the fastest folding that
fits in a few cheap re-foldings (0.5 s each for the shipped FCN-8s) of the specialised model,
without re-running the streamlining. The same bisection, started above the built rate, tells a
user whose design fits with room to spare how much faster a fold still fits (:func:`find_headroom`).

Layers finn does not estimate
-----------------------------
finn-plus 1.6.1 returns 0 LUT and 0 BRAM for several HLS layers (``HWCustomOp``'s defaults): in our
FCNs ``Pool_hls``, ``UpsampleNearestNeighbour_hls``, ``ElementwiseAdd_hls`` (whose estimate counts
only a ``const`` operand's memory), ``DuplicateStreams_hls`` and ``FMPadding_rtl``. A fit that
trusts those zeros passes designs that do not fit, most of all at large tiles, where the
upsampler's buffer grows with the feature map. :func:`unestimated_bounds` gives each such layer a
per-layer figure derived from what its HLS/RTL code allocates (finn-hlslib, vendored in
``/work/shared/vendor/finn-hlslib``; docs/tile_search.md has the derivations), counted where finn
says 0 (the larger of the two, so a future finn estimate is not counted twice):

- **Pool_hls** (``maxpool.h`` ``Pool_batch``): the pooling window arrives already unrolled by the
  depthwise ``ConvolutionInputGenerator`` before it (whose line buffer finn does estimate), so the
  pool keeps only ``PE`` accumulators, ``ARRAY_PARTITION complete``: registers, **0 BRAM**. Logic:
  per PE one comparator, one max select and one init select of the accumulator width ``b``
  (``3 b`` LUT), plus the fold counter and loop control (:data:`CONTROL_LUT`):
  ``LUT = 3 b PE + CONTROL_LUT``. finn-plus 1.6.1 generates the ``hls::vector`` form
  ``Pool_batch<ISIZE, K>``, which the vendored tree lacks; it is the same loop (one accumulator
  per lane), so the bound is taken from the older source's structure.
- **UpsampleNearestNeighbour_hls** (``upsample.hpp`` ``upsample_nn<HI, HO, WI, WO, CF, CF>``): a
  ``static T buf[1 << clog2(buf_size)]`` with ``buf_size = HI * WI * CF`` (``Nest::buf_size`` is
  the whole volume of every level whose input and output sizes differ) of ``T`` = ``SIMD`` lanes
  of ``b`` bits: BRAM18 by finn's own memory formula (the one its ``ElementwiseBinary`` uses),
  or LUTRAM (``ceil(depth / 64) * width`` LUT) below 1 kbit where HLS picks distributed RAM; plus
  ``CONTROL_LUT`` for the Bresenham steppers and pointers.
- **ElementwiseAdd_hls**: ``PE`` adders of the output width ``b`` (``b PE`` LUT) plus control.
- **DuplicateStreams_hls**: wiring and one handshake per output stream: ``CONTROL_LUT``.
- **FMPadding_rtl**: a zero/data select per lane (``SIMD b`` LUT) plus its row/column counters.

These are analytical figures, not synthesis results; the BRAM ones follow from the declared
arrays, the LUT ones are upper estimates of simple datapaths and small next to the MVAUs.

Skip-join FIFOs (FCN-16s/8s ``DuplicateStreams`` -> ``ElementwiseAdd``) are sized by finn only
with Vivado (``auto_fifo_depths``). :func:`skip_fifo_bounds` bounds each: the skip branch can
never have to hold more than one tile's whole skip tensor at the join (the deep branch consumes
at most one tile before it emits), so a FIFO of that depth at the join's skip input suffices;
counted as BRAM18 by finn's formula. A bound, not finn's size (which is usually smaller).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from fcnseg.errors import UserError
from fcnseg.hw.boards import RESOURCES, Board


@dataclass
class Fit:
    """The outcome of comparing estimated totals with a budget."""

    fits: bool
    margin: float
    budget: dict[str, float]
    used: dict[str, float]
    #: resources over budget: name -> (used, budget)
    over: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: layer -> resources counted in ``used`` beside finn's totals (:func:`check_fit`)
    added: dict[str, dict[str, float]] = field(default_factory=dict)

    def utilisation(self) -> dict[str, float]:
        """Used / full device total, per resource (0 when the device has none and none is used)."""
        full = {
            r: b / (1.0 - self.margin) if self.margin < 1 else b for r, b in self.budget.items()
        }
        return {
            r: (self.used.get(r, 0.0) / full[r]) if full[r] else float(self.used.get(r, 0.0) > 0)
            for r in RESOURCES
        }

    def to_json(self) -> dict:
        return {
            "fits": self.fits,
            "margin": self.margin,
            "budget": self.budget,
            "used": self.used,
            "over": {r: list(v) for r, v in self.over.items()},
            "utilisation": self.utilisation(),
            "added": self.added,
        }

    def added_note(self) -> str | None:
        """:func:`added_note` of this fit's ``added``."""
        return added_note(self.added)


def added_note(added: Mapping[str, Mapping[str, float]] | None) -> str | None:
    """One line: what a fit counted beside finn's estimates (``Fit.added``), by layer kind."""
    if not added:
        return None
    kinds: dict[str, list] = {}
    for name, res in added.items():
        kind = "skip FIFO" if name.startswith(SKIP_FIFO_PREFIX) else name.rsplit("_", 1)[0]
        entry = kinds.setdefault(kind, [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += float(res.get("LUT", 0.0))
        entry[2] += float(res.get("BRAM_18K", 0.0))
    parts = [
        f"{kind}: {n} layer{'s' * (n != 1)}, bound {lut:.0f} LUT / {bram:.0f} BRAM added"
        for kind, (n, lut, bram) in sorted(kinds.items())
    ]
    return "not estimated by finn, counted in the fit: " + "; ".join(parts)


def check_fit(
    totals: Mapping[str, float],
    board: Board,
    margin: float,
    added: Mapping[str, Mapping[str, float]] | None = None,
) -> Fit:
    """Compare estimated ``totals`` (finn's ``estimate_layer_resources.json["total"]``), plus
    ``added`` (layer -> resources finn does not count: :func:`unestimated_bounds`,
    :func:`skip_fifo_bounds`), with the board's budget."""
    if not 0.0 <= margin < 1.0:
        raise UserError(f"--margin must be in [0, 1), got {margin}")
    budget = {r: v * (1.0 - margin) for r, v in board.budget().items()}
    extra = {r: sum(float(v.get(r, 0.0)) for v in (added or {}).values()) for r in RESOURCES}
    used = {r: float(totals.get(r, 0.0)) + extra[r] for r in RESOURCES}
    over = {r: (used[r], budget[r]) for r in RESOURCES if used[r] > budget[r]}
    return Fit(
        fits=not over,
        margin=margin,
        budget=budget,
        used=used,
        over=over,
        added={k: dict(v) for k, v in (added or {}).items()},
    )


def biggest_layer(layer_resources: Mapping[str, Mapping[str, float]], resource: str) -> str:
    """The layer using the most of ``resource`` (the one to name in an error)."""
    layers = {k: v for k, v in layer_resources.items() if k != "total"}
    return max(layers, key=lambda name: float(layers[name].get(resource, 0.0)))


def misfit_message(
    fit: Fit, layer_resources: Mapping[str, Mapping[str, float]], board: Board
) -> str:
    """One line naming the resource most over budget and the layer using most of it."""
    resource, (used, budget) = max(fit.over.items(), key=lambda kv: kv[1][0] / max(kv[1][1], 1e-9))
    layer = biggest_layer(layer_resources, resource)
    share = float(layer_resources[layer].get(resource, 0.0))
    return (
        f"does not fit {board.name}: {resource} {used:.0f} > budget {budget:.0f} "
        f"({board.budget()[resource]} - {fit.margin:.0%} margin); layer {layer} alone uses "
        f"{share:.0f} {resource}"
    )


@dataclass
class Probe:
    """One re-folding tried by :func:`bisect_fps`."""

    target_fps: float
    fps: float
    fit: Fit


def bisect_fps(
    estimate: Callable[[float], tuple[float, Fit]],
    high_fps: float,
    low_fps: float = 1.0,
    rel_tol: float = 0.05,
    max_probes: int = 12,
) -> tuple[Probe | None, list[Probe]]:
    """Highest target rate (tiles/s) in ``[low_fps, high_fps]`` whose folding fits; bisection in
    log space.

    ``estimate(target_fps) -> (estimated tiles/s, Fit)`` re-folds and estimates. Returns the best
    fitting probe (None if even ``low_fps`` does not fit) and all probes made, for the report.
    """
    probes: list[Probe] = []

    def probe(target: float) -> Probe:
        fps, fit = estimate(target)
        probes.append(Probe(target, fps, fit))
        return probes[-1]

    lowest = probe(low_fps)
    if not lowest.fit.fits:
        return None, probes
    best, lo, hi = lowest, math.log(low_fps), math.log(high_fps)
    while len(probes) < max_probes and hi - lo > math.log1p(rel_tol):
        mid = probe(math.exp((lo + hi) / 2))
        if mid.fit.fits:
            lo = math.log(mid.target_fps)
            if mid.fps > best.fps:
                best = mid
        else:
            hi = math.log(mid.target_fps)
    return best, probes


@dataclass
class Headroom:
    """A faster folding than the built one that still fits the board (finn-plus estimates)."""

    #: the built folding's estimated tiles/s
    current_tiles_per_s: float
    #: the fastest fitting folding found: its estimated tiles/s, target and fit
    tiles_per_s: float
    target_fps: float
    fit: Fit
    #: re-foldings tried to find it
    probes: int

    def suggested_target(self) -> int:
        """A ``--target-fps`` to type: the rate found, rounded down to two significant digits.

        Any target up to the rate found folds to that folding or a smaller one (SetFolding raises
        each layer's parallelism until it meets the target, so a lower target stops no later),
        and smaller foldings use fewer resources: the suggestion fits too.
        """
        rate = self.tiles_per_s
        step = 10 ** max(0, math.floor(math.log10(rate)) - 1)
        return max(1, int(rate // step * step))

    def to_json(self) -> dict:
        return {
            "current_tiles_per_s": self.current_tiles_per_s,
            "tiles_per_s": self.tiles_per_s,
            "target_fps": self.target_fps,
            "suggested_target_fps": self.suggested_target(),
            "utilisation": self.fit.utilisation(),
            "probes": self.probes,
            "method": "re-folded and estimated by finn-plus (not synthesised)",
        }


def find_headroom(
    estimate: Callable[[float], tuple[float, Fit]],
    current_tiles_per_s: float,
    *,
    min_gain: float = 1.2,
    max_speedup: float = 64.0,
    max_probes: int = 10,
) -> Headroom | None:
    """The fastest folding that fits, if it is at least ``min_gain`` times the built one.

    ``estimate`` is the re-folding estimator of :func:`bisect_fps`. The first probe asks for
    ``min_gain`` times the current rate: if that does not fit there is no headroom worth a
    message (one cheap probe); otherwise a bisection up to ``max_speedup`` times the current
    rate finds the limit within 5 %. A full-parallel design that fits everywhere ends at the
    rate the folding saturates at.
    """
    if current_tiles_per_s <= 0:
        return None
    low, high = current_tiles_per_s * min_gain, current_tiles_per_s * max_speedup
    best, probes = bisect_fps(estimate, high_fps=high, low_fps=low, max_probes=max_probes)
    if best is None or best.fps < current_tiles_per_s * min_gain:
        return None
    return Headroom(current_tiles_per_s, best.fps, best.target_fps, best.fit, len(probes))


# --------------------------------------------------------------------------- unestimated layers

#: LUTs for a layer's loop counters, fold counters and stream handshakes (a 32-bit counter with
#: its compare and increment is ~ 2 x 32 LUT; rounded up).
CONTROL_LUT = 80
#: name prefix of the skip-join FIFO entries of :func:`skip_fifo_bounds`
SKIP_FIFO_PREFIX = "skip_fifo:"


def bram18(width: int, depth: int) -> int:
    """BRAM18 blocks for a ``width`` x ``depth`` memory: finn-plus 1.6.1's formula
    (``ElementwiseBinaryOperation._bram18_estimation``, the 7-series aspect ratios)."""
    if width <= 0 or depth <= 0:
        return 0
    if width == 1:
        return math.ceil(depth / 16384)
    if width == 2:
        return math.ceil(depth / 8192)
    if width <= 4:
        return math.ceil(depth / 4096) * math.ceil(width / 4)
    if width <= 9:
        return math.ceil(depth / 2048) * math.ceil(width / 9)
    if width <= 18 or depth > 512:
        return math.ceil(depth / 1024) * math.ceil(width / 18)
    return math.ceil(depth / 512) * math.ceil(width / 36)


def memory(width: int, depth: int) -> dict[str, float]:
    """An HLS array as resources: LUTRAM below 1 kbit (HLS's choice for small arrays), else
    BRAM18 by :func:`bram18`."""
    if width * depth < 1024:
        return {"LUT": float(width * math.ceil(depth / 64)), "BRAM_18K": 0.0}
    return {"LUT": 0.0, "BRAM_18K": float(bram18(width, depth))}


def _bits(dtype: str) -> int:
    from qonnx.core.datatype import DataType

    return int(DataType[dtype].bitwidth())


def layer_bound(op) -> dict[str, float] | None:
    """The per-layer figure of the module docstring for one HW custom op (None: finn estimates
    this kind itself)."""
    kind = op.onnx_node.op_type
    if kind == "Pool_hls":
        bits = max(
            _bits(op.get_nodeattr("InputDataType")), _bits(op.get_nodeattr("OutputDataType"))
        )
        return {"LUT": float(3 * bits * op.get_nodeattr("PE") + CONTROL_LUT), "BRAM_18K": 0.0}
    if kind == "UpsampleNearestNeighbour_hls":
        simd = op.get_nodeattr("SIMD")
        fold = op.get_nodeattr("NumChannels") // simd
        size = op.get_nodeattr("HI") * op.get_nodeattr("WI") * fold
        depth = 1 << max(0, math.ceil(math.log2(size)))
        mem = memory(simd * _bits(op.get_nodeattr("inputDataType")), depth)
        return {"LUT": mem["LUT"] + CONTROL_LUT, "BRAM_18K": mem["BRAM_18K"]}
    if kind == "ElementwiseAdd_hls":
        lanes = op.get_nodeattr("PE")
        return {"LUT": float(_bits(op.get_nodeattr("out_dtype")) * lanes + CONTROL_LUT)}
    if kind == "DuplicateStreams_hls":
        return {"LUT": float(CONTROL_LUT)}
    if kind == "FMPadding_rtl":
        lanes = op.get_nodeattr("SIMD")
        return {"LUT": float(_bits(op.get_nodeattr("inputDataType")) * lanes + CONTROL_LUT)}
    return None


def unestimated_bounds(
    model, layer_resources: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, float]]:
    """Layer -> resources to add beside finn's ``layer_resources`` (per-layer estimates of the
    folded ``model``): :func:`layer_bound` minus what finn already counts, where positive."""
    from qonnx.custom_op.registry import getCustomOp

    added: dict[str, dict[str, float]] = {}
    for node in model.graph.node:
        if not node.domain.startswith("finn.custom_op.fpgadataflow"):
            continue
        bound = layer_bound(getCustomOp(node))
        if bound is None:
            continue
        finn = layer_resources.get(node.name, {})
        extra = {r: v - float(finn.get(r, 0.0)) for r, v in bound.items()}
        extra = {r: v for r, v in extra.items() if v > 0}
        if extra:
            added[node.name] = extra
    return added


def skip_fifo_bounds(model) -> dict[str, dict[str, float]]:
    """``skip_fifo:<join>`` -> BRAM18 of a FIFO holding one tile's whole skip tensor at each
    join (module docstring). The skip input of an ``ElementwiseAdd`` is the one reached from
    the ``DuplicateStreams`` fork through fewer nodes."""
    from qonnx.custom_op.registry import getCustomOp

    producer = {t: n for n in model.graph.node for t in n.output}

    def hops_to_fork(tensor: str) -> int:
        hops, node = 0, producer.get(tensor)
        while node is not None and not node.op_type.startswith("DuplicateStreams"):
            hops += 1
            node = producer.get(node.input[0])
        return hops if node is not None else 10**9

    out: dict[str, dict[str, float]] = {}
    for node in model.graph.node:
        if not node.op_type.startswith("ElementwiseAdd") or len(node.input) != 2:
            continue
        if any(model.get_initializer(t) is not None for t in node.input):
            continue
        skip = min(range(2), key=lambda i: hops_to_fork(node.input[i]))
        op = getCustomOp(node)
        shape = model.get_tensor_shape(node.input[skip])
        lanes = op.get_nodeattr("PE")
        width = lanes * _bits(op.get_nodeattr(("lhs_dtype", "rhs_dtype")[skip]))
        depth = math.prod(shape) // lanes
        out[SKIP_FIFO_PREFIX + node.name] = {"BRAM_18K": float(bram18(width, depth))}
    return out


def added_resources(
    model, layer_resources: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, float]]:
    """Everything the fit counts beside finn's totals for the folded ``model``: the per-layer
    bounds (:func:`unestimated_bounds`) and the skip-join FIFOs (:func:`skip_fifo_bounds`);
    pass it as ``check_fit(..., added=)``."""
    return {**unestimated_bounds(model, layer_resources), **skip_fifo_bounds(model)}
