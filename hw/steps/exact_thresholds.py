"""Exact thresholds in the HW graph: every threshold recomputed from the model's own parameters.

finn's streamlining folds scales, biases and batch norm into thresholds in float32, so a
threshold whose exact value is 96964.0029 is stored as 96964.0 and becomes the integer 96964
instead of 96965; every input whose accumulator lands there then differs from the trained model
(``docs/exactness.md``). This module replaces each threshold of each MVAU / Thresholding layer by
the exact integer of :mod:`fcnseg.quantize.exact.levels` — the least accumulator value that must
count — solved from the export's exact record (``exact.json`` + ``exact.npz``, copied into the
build folder by ``fcnseg compile``).

Matching a HW layer to the record needs no names: an MVAU is the conv step whose integer weights
equal its weight matrix (in finn's ``(kh, kw, cin) x cout`` order) up to a sign per output
channel — finn moves a negative batch-norm factor into the weights, and the sign becomes the
orientation of that channel's accumulator. A Thresholding layer fed (through pools, upsampling,
stream duplication) by an MVAU without activation belongs to that MVAU's step; one fed by an
``ElementwiseAdd`` is the next ``requant`` step of the record, in graph order. The layer's
``ActVal`` and step count must equal the quantizer's ``lo`` and ``hi - lo``.

Two build steps use it: :func:`step_fcn_exact_thresholds` right after the conversion to HW
layers (so the datatypes finn derives later come from the exact integers) and
:func:`step_fcn_check_thresholds` after the last bit-width minimisation, which refuses a graph
whose thresholds have drifted. ``fcnseg compile`` checks the package's layers once more before it
writes them (:func:`misplaced`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcnseg.errors import UserError
from fcnseg.host.package import Layer, parse_dtype
from fcnseg.host.sim.ranges import matmul_range
from fcnseg.hw.to_package import base_kind, layers_from_model
from fcnseg.quantize.exact.levels import thresholds as solve_thresholds
from fcnseg.quantize.exact.record import ExactNet, Step, load_net

if TYPE_CHECKING:
    from finn.builder.build_dataflow_config import DataflowBuildConfig
    from qonnx.core.modelwrapper import ModelWrapper

#: folder of the build holding the export's exact record.
EXACT_DIR = "exact"
#: report of the recomputation (per layer: thresholds, how many moved, which).
REPORT_FILE = "exact_thresholds.json"
#: layers a Thresholding's input may pass through from its accumulator (order-preserving per
#: channel, so thresholding before or after them is the same).
PASS_THROUGH = {
    "Pool",
    "StreamingMaxPool",
    "DuplicateStreams",
    "UpsampleNearestNeighbour",
    "StreamingDataWidthConverter",
    "StreamingFIFO",
}
#: float32 holds every integer below this exactly (finn stores thresholds as float32).
FLOAT32_EXACT = 2**24


@dataclass(frozen=True)
class Target:
    """A HW layer holding thresholds, the record step they encode and the channel signs."""

    layer: Layer
    step: Step
    signs: np.ndarray
    acc_range: tuple[int, int]

    def exact(self) -> np.ndarray:
        """The exact thresholds in the layer's own shape (rows per channel, or one row)."""
        t = solve_thresholds(self.step, self.acc_range, self.signs)
        have = self.layer.arrays["thresholds"]
        if t.shape[0] == 1 and have.shape[0] > 1:
            t = np.repeat(t, have.shape[0], axis=0)
        if t.shape != have.shape:
            raise UserError(
                f"layer {self.layer.name}: {have.shape} thresholds, but the model's "
                f"{self.step.name} has {t.shape} (channels x steps)"
            )
        return t


def _weight_signs(w_hw: np.ndarray, step: Step) -> np.ndarray | None:
    """Per-column sign s with ``w_hw == s * w_record`` (finn's (kh, kw, cin) order), or None."""
    w = step.weight
    o, i, kh, kw = w.shape
    ref = w.transpose(2, 3, 1, 0).reshape(kh * kw * i, o)
    if ref.shape != w_hw.shape or not np.array_equal(np.abs(ref), np.abs(w_hw)):
        return None
    signs = np.ones(o, dtype=np.int64)
    flipped = np.all(w_hw == -ref, axis=0) & np.any(ref != 0, axis=0)
    signs[flipped] = -1
    return signs if np.array_equal(ref * signs, w_hw) else None


def _conv_step(layer: Layer, net: ExactNet) -> tuple[Step, np.ndarray]:
    w = np.asarray(layer.arrays["weights"]).astype(np.int64)
    found = [
        (s, signs)
        for s in net.steps
        if s.op == "conv" and (signs := _weight_signs(w, s)) is not None
    ]
    if len(found) != 1:
        what = "no layer" if not found else f"{len(found)} layers"
        raise UserError(
            f"layer {layer.name}: its {w.shape} integer weights match {what} of the exact record "
            "(was the graph built from another checkpoint, or did a weight round differently?)"
        )
    return found[0]


def targets(layers: list[Layer], net: ExactNet) -> list[Target]:
    """Every threshold-holding layer of ``layers`` with the record step it encodes."""
    producer = {t: layer for layer in layers for t in layer.outputs}
    requants = iter([s for s in net.steps if s.op == "requant"])
    out = []
    for layer in layers:
        kind = layer.kind  # package layers carry the base kind (MVAU, not MVAU_hls)
        if "thresholds" not in layer.arrays:
            continue
        in_range = parse_dtype(layer.input_dtypes[0])
        if kind == "MVAU":
            step, signs = _conv_step(layer, net)
            acc = matmul_range(in_range, np.asarray(layer.arrays["weights"]))[0]
        elif kind == "Thresholding":
            src = producer.get(layer.inputs[0])
            while src is not None and src.kind in PASS_THROUGH:
                src = producer.get(src.inputs[0])
            if src is not None and src.kind == "MVAU":
                step, signs = _conv_step(src, net)
            elif src is not None and src.kind == "ElementwiseAdd":
                step = next(requants, None)
                if step is None:
                    raise UserError(f"layer {layer.name}: the record has no requantizer left")
                signs = np.ones(1, dtype=np.int64)
            else:
                raise UserError(f"layer {layer.name}: cannot trace its input to an accumulator")
            acc = in_range
        else:
            raise UserError(f"layer {layer.name}: {kind} with thresholds is not supported")
        if step.quant is None:
            raise UserError(f"layer {layer.name}: the model's {step.name} has no quantizer")
        act = int(layer.attributes.get("ActVal", 0))
        if act != step.quant.lo:
            raise UserError(
                f"layer {layer.name}: ActVal {act}, but {step.name}'s quantizer starts at "
                f"{step.quant.lo}"
            )
        out.append(Target(layer, step, signs, acc))
    return out


def misplaced(layers: list[Layer], net: ExactNet) -> list[dict[str, Any]]:
    """Every threshold of ``layers`` that differs from the exact one: layer, channel, step."""
    bad = []
    for target in targets(layers, net):
        want = target.exact()
        have = np.asarray(target.layer.arrays["thresholds"]).astype(np.int64)
        for c, k in zip(*np.nonzero(have != want), strict=True):
            bad.append(
                {
                    "layer": target.layer.name,
                    "model_layer": target.step.name,
                    "channel": int(c),
                    "step": int(k),
                    "have": int(have[c, k]),
                    "exact": int(want[c, k]),
                }
            )
    return bad


def _threshold_input(node) -> int:
    return 2 if base_kind(node.op_type) == "MVAU" else 1


def _smallest_type(lo: int, hi: int):
    from qonnx.core.datatype import DataType

    return DataType.get_smallest_possible(hi if lo >= 0 else min(lo, -hi - 1))


def apply_exact_thresholds(model: ModelWrapper, net: ExactNet) -> tuple[ModelWrapper, dict]:
    """Write the exact thresholds into every MVAU/Thresholding node; return the report."""
    from qonnx.custom_op.registry import getCustomOp

    layers, _ = layers_from_model(model)
    nodes = {n.name: n for n in model.graph.node}
    report: dict[str, Any] = {"layers": [], "thresholds": 0, "moved": 0}
    for target in targets(layers, net):
        node = nodes[target.layer.name]
        want = target.exact()
        if np.abs(want).max(initial=0) >= FLOAT32_EXACT:
            raise UserError(f"layer {node.name}: thresholds beyond 2^24 do not fit finn's float32")
        tensor = node.input[_threshold_input(node)]
        before = model.get_initializer(tensor)
        have = target.layer.arrays["thresholds"].astype(np.int64)
        moved = [
            {
                "channel": int(c),
                "step": int(k),
                "finn": int(have[c, k]),
                "exact": int(want[c, k]),
                "finn_float": float(np.asarray(before)[c, k]),
            }
            for c, k in zip(*np.nonzero(have != want), strict=True)
        ]
        model.set_initializer(tensor, want.astype(np.float32))
        tdt = _smallest_type(int(want.min()), int(want.max()))
        model.set_tensor_datatype(tensor, tdt)
        if base_kind(node.op_type) == "Thresholding":
            getCustomOp(node).set_nodeattr("weightDataType", tdt.name)
        report["layers"].append(
            {
                "layer": node.name,
                "model_layer": target.step.name,
                "thresholds": int(want.size),
                "moved": moved,
            }
        )
        report["thresholds"] += int(want.size)
        report["moved"] += len(moved)
    return model, report


def _record(cfg: DataflowBuildConfig) -> ExactNet:
    return load_net(Path(cfg.output_dir) / EXACT_DIR)


def step_fcn_exact_thresholds(model: ModelWrapper, cfg: DataflowBuildConfig) -> ModelWrapper:
    """Build step: exact thresholds from the record (report: report/exact_thresholds.json)."""
    model, report = apply_exact_thresholds(model, _record(cfg))
    report_dir = Path(cfg.output_dir) / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n")
    return model


def check_model(model: ModelWrapper, net: ExactNet) -> None:
    """Raise a one-line :class:`UserError` if any threshold of ``model`` is not the exact one."""
    bad = misplaced(layers_from_model(model)[0], net)
    if bad:
        first = bad[0]
        raise UserError(
            f"{len(bad)} threshold(s) differ from the exact model, first: layer {first['layer']} "
            f"({first['model_layer']}) channel {first['channel']} step {first['step']}: "
            f"{first['have']} instead of {first['exact']}"
        )


def step_fcn_check_thresholds(model: ModelWrapper, cfg: DataflowBuildConfig) -> ModelWrapper:
    """Build step: refuse a graph whose thresholds are no longer the exact ones."""
    check_model(model, _record(cfg))
    return model
