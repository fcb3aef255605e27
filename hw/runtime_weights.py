"""Runtime-writable weights and thresholds: the build step, the memory layout, the fingerprint.

``fcnseg compile --runtime-weights`` builds the MVAUs and the (standalone) Thresholding layers
with finn's ``runtime_writeable_weights=1``: their parameters then sit in memories the PS can
rewrite over AXI-lite, so a retrained net of the same architecture runs on the same bitfile.
This module holds what that needs on the build side (finn/qonnx are imported inside functions):

- :func:`step_fcn_runtime_weights`, a build step (``step(model, cfg) -> model``) that marks the
  layers writable. It runs right after the HW conversion, *before* finn's bit-width
  minimisation: finn leaves the weight and threshold datatypes of a writable layer as declared
  (``minimize_weight_bit_width`` skips them) and sizes its accumulator for the datatype's worst
  case, so the hardware fits any parameters of those types, not only the ones it was built with.
- :func:`memory_layout`: per writable layer, where its words go (AXI-lite interface, address
  bits, words, order) as docs/runtime_weights.md derives it from finn's source, and
  :func:`encode_mvau` / :func:`encode_thresholds` / :func:`decode_mvau` /
  :func:`decode_thresholds`, that layout in numpy (independent of finn's writer, which the
  tests compare them with); :func:`decode_layer` / :func:`encode_layer` per layer record, and
  :func:`valid_bits`, which bits of each word a memory stores (the emulated board's memories,
  :mod:`fcnseg.testing.emulated_zynq`, use these three; numpy only).
- :func:`write_weight_files`: the ``.dat`` files, written by finn's own
  ``make_weight_file(..., "decoupled_runtime", ...)`` (what finn's driver step would put in
  ``runtime_weights/``), named ``<partition>_<index>_<node>.dat`` as finn names them.
- :func:`fingerprint`: everything a bitfile fixes about the graph (ops, connections, shapes,
  datatypes, folding, threshold counts, non-writable constants) as a JSON object; two graphs
  with equal fingerprints run on the same bitfile with each other's weight files.
  :func:`first_difference` names the first place two fingerprints differ.

The record a package keeps (``runtime_weights`` of accelerator.json) is defined and checked in
:mod:`fcnseg.host.package`; :func:`runtime_record` fills it in.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcnseg.errors import UserError
from fcnseg.host.package import RUNTIME_WEIGHTS_DIR, canonical_json
from fcnseg.hw.to_package import HW_DOMAIN, base_kind

if TYPE_CHECKING:
    from qonnx.core.modelwrapper import ModelWrapper

    from fcnseg.hw.boards import Board

#: the layer kinds whose parameters become writable
WRITABLE_KINDS = ("MVAU", "Thresholding")
#: this step's dotted name (for the build's step list) and the step it follows
RUNTIME_STEP = "fcnseg.hw.runtime_weights.step_fcn_runtime_weights"
AFTER_STEP = "fcnseg.hw.steps.exact_thresholds.step_fcn_exact_thresholds"
#: what finn's ZynqBuild does to the folded graph before it partitions it (Vivado-free graph
#: transformations; ``make_zynq_proj.py``): :func:`zynq_partitions` runs them, so a layer's
#: ``StreamingDataflowPartition_<n>`` is finn's own, not a guess. Its Floorplan starts a new
#: partition at every node with an AXI-lite interface (``floorplan.py``): each writable layer
#: is alone in its partition and first in it, on the partition's ``s_axilite_0``.
PARTITION_INTERFACE = "s_axilite_0"
#: first AXI-lite peripheral address of finn's Zynq block design (``templates.py``:
#: ``axi_peripheral_base``), by PS family
AXI_PERIPHERAL_BASE = {"zynq": 0x4000_0000, "zynq_us+": 0xA000_0000}
#: the smallest AXI-lite range finn assigns (``assign_axi_addr_proc``: 4 KiB)
MIN_RANGE = 4096
#: the ``order`` names of the two layouts (docs/runtime_weights.md)
MVAU_ORDER = "memstream: line m = (row // PE) * (MW // SIMD) + col // SIMD; lane p * SIMD + s"
THRESHOLD_ORDER = "thresholding_axi: word ((c // PE) * 2^clog2(PE) + c % PE) * 2^clog2(N) + t"
#: node attributes that do not describe the hardware (paths, simulation, estimates, placement)
_NOT_HARDWARE = (
    "backend",
    "code_gen_dir_cppsim",
    "code_gen_dir_ipgen",
    "cycles_estimate",
    "cycles_rtlsim",
    "device_id",
    "exec_mode",
    "executable_path",
    "gen_top_module",
    "ip_path",
    "ip_vlnv",
    "ipgen_path",
    "mem_port",
    "output_hook",
    "partition_id",
    "res_estimate",
    "res_hls",
    "res_synth",
    "rtlsim_so",
    "rtlsim_trace",
    "slr",
)
#: attributes compared first, causes before consequences (a wider weight type also widens the
#: accumulator: the weight type is the difference to name)
_FIRST = (
    "weightDataType",
    "inputDataType",
    "numSteps",
    "outputDataType",
    "MW",
    "MH",
    "NumChannels",
    "PE",
    "SIMD",
)
FINGERPRINT_FORMAT = "fcnseg-runtime-fingerprint"
FINGERPRINT_VERSION = 1


def clog2(n: int) -> int:
    """SystemVerilog's ``$clog2``: the bits to address ``n`` items (0 for n <= 1)."""
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0


def with_runtime_step(steps: Sequence[str]) -> list[str]:
    """``steps`` with :data:`RUNTIME_STEP` right after the exact-threshold step."""
    steps = list(steps)
    if AFTER_STEP not in steps:
        raise UserError(f"the build's steps lack {AFTER_STEP}: cannot place {RUNTIME_STEP}")
    at = steps.index(AFTER_STEP) + 1
    return steps[:at] + [RUNTIME_STEP] + steps[at:]


def step_fcn_runtime_weights(model: ModelWrapper, cfg: Any) -> ModelWrapper:
    """Mark every MVAU and Thresholding layer ``runtime_writeable_weights=1`` (MVAUs with
    ``mem_mode="internal_decoupled"``, the memstream finn makes writable). An MVAU with fused
    thresholds is refused: finn embeds those in the compute core, not in a writable memory
    (build with standalone thresholds)."""
    from qonnx.custom_op.registry import getCustomOp

    for node in model.graph.node:
        if not node.domain.startswith(HW_DOMAIN) or base_kind(node.op_type) not in WRITABLE_KINDS:
            continue
        inst = getCustomOp(node)
        if base_kind(node.op_type) == "MVAU":
            if not inst.get_nodeattr("noActivation"):
                raise UserError(
                    f"{node.name}: thresholds fused into the MVAU cannot be written at run "
                    "time; build with standalone thresholds"
                )
            inst.set_nodeattr("mem_mode", "internal_decoupled")
        inst.set_nodeattr("runtime_writeable_weights", 1)
    return model


# --------------------------------------------------------------------------- the layout


def writable_nodes(model: ModelWrapper) -> list[Any]:
    """The writable nodes of a specialised graph, in node order (finn's driver index order)."""
    from qonnx.custom_op.registry import getCustomOp

    out = []
    for node in model.graph.node:
        if base_kind(node.op_type) in WRITABLE_KINDS and node.domain.startswith(HW_DOMAIN):
            if getCustomOp(node).get_nodeattr("runtime_writeable_weights") == 1:
                out.append(node)
    return out


def _mvau_layout(inst: Any) -> dict[str, Any]:
    if inst.get_nodeattr("TH") != 1:
        raise UserError(f"{inst.onnx_node.name}: tiled MVAUs (TH > 1) are not supported")
    if inst.get_nodeattr("mem_mode") != "internal_decoupled" or inst.get_nodeattr("pumpedMemory"):
        raise UserError(f"{inst.onnx_node.name}: writable weights need an unpumped memstream")
    pe, simd = int(inst.get_nodeattr("PE")), int(inst.get_nodeattr("SIMD"))
    width = int(inst.get_instream_width(1))  # PE * SIMD * weight bits
    per_line = 1 << clog2(-(-width // 32))
    lines = int(inst.calc_wmem())
    return {
        "order": MVAU_ORDER,
        "lane_bits": int(inst.get_input_datatype(1).bitwidth()),
        "line_bits": width,
        "words_per_line": per_line,
        "lines": lines,
        "words": lines * per_line,
        "address_bits": clog2(lines * per_line) + 2,
        "folding": {"PE": pe, "SIMD": simd},
        "shape": [int(inst.get_nodeattr("MW")), int(inst.get_nodeattr("MH"))],
    }


def _threshold_layout(inst: Any, model: ModelWrapper) -> dict[str, Any]:
    if not inst.onnx_node.op_type.endswith("_rtl"):
        raise UserError(f"{inst.onnx_node.name}: only RTL thresholding is supported writable")
    pe, steps = int(inst.get_nodeattr("PE")), int(inst.get_nodeattr("numSteps"))
    bits = int(inst.get_input_datatype(1).bitwidth())
    if bits > 32:
        raise UserError(f"{inst.onnx_node.name}: thresholds of {bits} bits exceed one AXI word")
    rows = int(model.get_tensor_shape(inst.onnx_node.input[1])[0])
    channels = int(inst.get_nodeattr("NumChannels")) if rows > 1 else pe
    words = (channels // pe) * (1 << clog2(pe)) * (1 << clog2(steps))
    return {
        "order": THRESHOLD_ORDER,
        "lane_bits": bits,
        "line_bits": bits,
        "words_per_line": 1,
        "lines": words,
        "words": words,
        "address_bits": clog2(words) + 2,
        "folding": {"PE": pe},
        "shape": [rows, steps],
    }


def zynq_partitions(model: ModelWrapper, part: str, dma_port_width: int) -> list[list[str]]:
    """The node names of each ``StreamingDataflowPartition_<n>`` finn's ZynqBuild makes of a
    folded graph (``n`` = position; 0 is idma0, the last odma0): its own InsertIODMA,
    InsertDWC, SpecializeLayers, Floorplan and CreateDataflowPartition, with its renaming after
    each (FIFO sizing, which comes earlier in a Vivado build, adds FIFOs to partitions but
    starts none)."""
    import tempfile

    from finn.transformation.fpgadataflow.create_dataflow_partition import (
        CreateDataflowPartition,
    )
    from finn.transformation.fpgadataflow.floorplan import Floorplan
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_iodma import InsertIODMA
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames

    from fcnseg.hw.compat import prepare_finn

    prepare_finn()
    with tempfile.TemporaryDirectory(prefix="fcnseg-partitions-") as scratch:
        steps = [
            InsertIODMA(dma_port_width),
            InsertDWC(),
            SpecializeLayers(part),
            Floorplan(),
            CreateDataflowPartition(partition_model_dir=scratch),
        ]
        parent = ModelWrapper(model.model)
        for step in steps:
            parent = parent.transform(step).transform(GiveUniqueNodeNames())
            parent = parent.transform(GiveReadableTensorNames())
        return [
            [n.name for n in ModelWrapper(getCustomOp(sdp).get_nodeattr("model")).graph.node]
            for sdp in parent.graph.node
        ]


def memory_layout(
    model: ModelWrapper, zynq: str, partitions: Sequence[Sequence[str]]
) -> list[dict[str, Any]]:
    """The AXI-lite layout of every writable layer of a specialised, folded graph, each in its
    partition of ``partitions`` (:func:`zynq_partitions`).

    ``predicted_offset`` is where finn's block design puts the layer's interface, counted from
    :data:`AXI_PERIPHERAL_BASE` (``assign_axi_addr_proc``, partition by partition, idma0
    first): idma0's control port (registers below 0x40) takes the first 4 KiB. The ``.hwh``
    of the built bitfile is the authority on the board."""
    from qonnx.custom_op.registry import getCustomOp

    if zynq not in AXI_PERIPHERAL_BASE:
        raise UserError(f"unknown Zynq family {zynq!r}")
    where = {name: n for n, names in enumerate(partitions) for name in names}
    out = []
    for index, node in enumerate(writable_nodes(model)):
        partition = where.get(node.name)
        if partition is None or partitions[partition][0] != node.name:
            raise UserError(f"{node.name}: not the first node of a dataflow partition")
        inst = getCustomOp(node)
        kind = base_kind(node.op_type)
        layout = _mvau_layout(inst) if kind == "MVAU" else _threshold_layout(inst, model)
        size = max(MIN_RANGE, 1 << layout["address_bits"])
        out.append(
            {
                "index": index,
                "node": node.name,
                "kind": kind,
                "impl": node.op_type[len(kind) + 1 :],
                "partition": partition,
                "instance": f"StreamingDataflowPartition_{partition}",
                "interface": PARTITION_INTERFACE,
                "file": f"{RUNTIME_WEIGHTS_DIR}/{partition}_0_{node.name}.dat",
                "word_bits": 32,
                "dtype": inst.get_input_datatype(1).name,
                "range_bytes": size,
                "predicted_offset": 0,
                "narrow_weights": _narrow(inst, model) if kind == "MVAU" else None,
                **layout,
            }
        )
    # addresses go partition by partition (graph order), which on a graph with skip branches
    # is not the order of the nodes
    offset = MIN_RANGE  # idma0's control registers
    for entry in sorted(out, key=lambda e: e["partition"]):
        size = entry["range_bytes"]
        offset = -(-offset // size) * size  # aligned to its range, as assign_axi_addr_proc
        entry["predicted_offset"] = offset
        offset += size
    return out


def zynq_family(part: str) -> str:
    """``"zynq"`` for a Zynq-7000 part (xc7z...), ``"zynq_us+"`` for the others (ZynqMP)."""
    return "zynq" if part.lower().startswith("xc7z") else "zynq_us+"


def _narrow(inst: Any, model: ModelWrapper) -> bool | None:
    """Whether finn builds this RTL MVAU for narrow-range weights (``NARROW_WEIGHTS``: its
    weights never reach the datatype's minimum; ``matrixvectoractivation_rtl.generate_hdl``).
    A bitfile built narrow computes a minimum weight wrongly; None for HLS MVAUs."""
    if not inst.onnx_node.op_type.endswith("_rtl"):
        return None
    weights = model.get_initializer(inst.onnx_node.input[1])
    return bool(np.min(weights) != inst.get_input_datatype(1).min())


# --------------------------------------------------------------------------- the words


def _twos(values: np.ndarray, bits: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64) & ((1 << bits) - 1)


def _signed(values: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    values = np.asarray(values, dtype=np.int64)
    if signed:
        values = np.where(values >= 1 << (bits - 1), values - (1 << bits), values)
    return values


def encode_mvau(weights: np.ndarray, layout: Mapping[str, Any]) -> np.ndarray:
    """The 32-bit words of an MVAU's weight matrix ``weights`` (MW, MH) in memstream order:
    line ``m`` of PE ``p``, SIMD lane ``s`` holds ``W[col, row]`` with ``row = (m // (MW /
    SIMD)) * PE + p``, ``col = (m % (MW / SIMD)) * SIMD + s``, at bits ``(p * SIMD + s) *
    bits`` of the line (two's complement); each line is ``words_per_line`` words, least
    significant word first."""
    pe, simd = layout["folding"]["PE"], layout["folding"]["SIMD"]
    bits, per_line = layout["lane_bits"], layout["words_per_line"]
    mw, mh = weights.shape
    w = np.asarray(weights, dtype=np.int64).T  # (MH, MW)
    # (MH/PE, PE, MW/SIMD, SIMD) -> (MH/PE, MW/SIMD, PE, SIMD): line-major, lanes p*SIMD+s
    lanes = w.reshape(mh // pe, pe, mw // simd, simd).transpose(0, 2, 1, 3)
    lanes = _twos(lanes.reshape(-1, pe * simd), bits)
    words = np.zeros((lanes.shape[0], per_line), dtype=np.uint64)
    for lane in range(pe * simd):
        bit = lane * bits
        value = lanes[:, lane].astype(np.uint64)
        for j in range(per_line):  # a lane may straddle two words
            lo, hi = 32 * j, 32 * (j + 1)
            if bit + bits <= lo or bit >= hi:
                continue
            shift = bit - lo
            part = value << np.uint64(shift) if shift >= 0 else value >> np.uint64(-shift)
            words[:, j] |= part & np.uint64(0xFFFF_FFFF)
    return words.reshape(-1).astype(np.uint32)


def decode_mvau(words: np.ndarray, layout: Mapping[str, Any], signed: bool) -> np.ndarray:
    """Inverse of :func:`encode_mvau`: the (MW, MH) integer matrix."""
    pe, simd = layout["folding"]["PE"], layout["folding"]["SIMD"]
    bits, per_line = layout["lane_bits"], layout["words_per_line"]
    mw, mh = layout["shape"]
    lines = np.asarray(words, dtype=np.uint64).reshape(-1, per_line)
    values = np.zeros((lines.shape[0], pe * simd), dtype=np.int64)
    for lane in range(pe * simd):
        acc = np.zeros(lines.shape[0], dtype=np.uint64)
        for k in range(bits):
            bit = lane * bits + k
            acc |= ((lines[:, bit // 32] >> np.uint64(bit % 32)) & np.uint64(1)) << np.uint64(k)
        values[:, lane] = _signed(acc, bits, signed)
    w = values.reshape(mh // pe, mw // simd, pe, simd).transpose(0, 2, 1, 3).reshape(mh, mw)
    return w.T


def encode_thresholds(thresholds: np.ndarray, layout: Mapping[str, Any]) -> np.ndarray:
    """The words of a Thresholding layer's ``thresholds`` (rows, N): threshold ``t`` of channel
    ``c`` at word ``((c // PE) * 2^clog2(PE) + c % PE) * 2^clog2(N) + t``, zero elsewhere, the
    value in the low ``bits`` of the word (two's complement, not sign-extended)."""
    pe = layout["folding"]["PE"]
    rows, steps = np.asarray(thresholds).shape
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.int64), (max(rows, pe), steps))
    channels = t.shape[0]
    slots, width = 1 << clog2(pe), 1 << clog2(steps)
    out = np.zeros((channels // pe, slots, width), dtype=np.int64)
    out[:, :pe, :steps] = t.reshape(channels // pe, pe, steps)
    return _twos(out.reshape(-1), layout["lane_bits"]).astype(np.uint32)


def decode_thresholds(words: np.ndarray, layout: Mapping[str, Any], signed: bool) -> np.ndarray:
    """Inverse of :func:`encode_thresholds`: the (channels, N) thresholds."""
    pe = layout["folding"]["PE"]
    steps = layout["shape"][1]
    slots, width = 1 << clog2(pe), 1 << clog2(steps)
    w = np.asarray(words, dtype=np.int64).reshape(-1, slots, width)[:, :pe, :steps]
    return _signed(w.reshape(-1, steps), layout["lane_bits"], signed)


def _is_signed(dtype: str) -> bool:
    from fcnseg.host.dtypes import dtype_bits

    return dtype_bits(dtype)[1]


def decode_layer(words: np.ndarray, layout: Mapping[str, Any]) -> np.ndarray:
    """The parameter tensor a writable layer's memory words hold, in the package's shape: an
    MVAU's (MW, MH) weights, a Thresholding layer's (rows, N) thresholds (one row when the
    layer's thresholds are shared by every channel; the memory holds it once per PE), signed
    as the layer's ``dtype``. What the emulated board's fabric computes with."""
    signed = _is_signed(layout["dtype"])
    if layout["kind"] == "MVAU":
        return decode_mvau(words, layout, signed)
    if layout["kind"] == "Thresholding":
        return decode_thresholds(words, layout, signed)[: layout["shape"][0]]
    raise UserError(f"{layout.get('layer', '?')}: {layout['kind']} has no writable memory")


def encode_layer(values: np.ndarray, layout: Mapping[str, Any]) -> np.ndarray:
    """Inverse of :func:`decode_layer`: the layer's memory words."""
    if layout["kind"] == "MVAU":
        return encode_mvau(values, layout)
    if layout["kind"] == "Thresholding":
        return encode_thresholds(values, layout)
    raise UserError(f"{layout.get('layer', '?')}: {layout['kind']} has no writable memory")


def valid_bits(layout: Mapping[str, Any]) -> np.ndarray:
    """Per memory word, the bits that hold a parameter (uint32): the encoding of a tensor of
    -1 (every lane bit set, two's complement). 0 marks a padding word (the power-of-two line
    padding of a memstream, the unused PE and step slots of a threshold memory), which no
    memory stores; bits outside the mask are beyond the lane or line width."""
    return encode_layer(np.full(layout["shape"], -1, dtype=np.int64), layout)


def read_dat(path: str | Path) -> np.ndarray:
    """The words of a ``.dat`` runtime weight file (one 8-digit hex word a line), as the
    driver reads them (``int(x, 16)`` per whitespace-separated token)."""
    return np.array([int(x, 16) for x in Path(path).read_text().split()], dtype=np.uint32)


def write_weight_files(model: ModelWrapper, layout: Sequence[Mapping[str, Any]], out: Path) -> None:
    """finn's own ``decoupled_runtime`` weight file of every writable layer into ``out``
    (``layout[i]["file"]`` relative to it). Checks each file has the words the layout says."""
    from qonnx.custom_op.registry import getCustomOp

    nodes = {n.name: n for n in writable_nodes(model)}
    for entry in layout:
        node = nodes[entry["node"]]
        path = out / entry["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        values = model.get_initializer(node.input[1])
        getCustomOp(node).make_weight_file(values, "decoupled_runtime", str(path))
        words = len(read_dat(path))
        if words != entry["words"]:
            raise UserError(f"{path}: finn wrote {words} words, the layout says {entry['words']}")


# --------------------------------------------------------------------------- the fingerprint


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, int | float | str) or value is None:
        return value
    return repr(type(value).__name__)


def _constant_digest(values: np.ndarray) -> str:
    a = np.ascontiguousarray(np.asarray(values, dtype=np.float64))
    return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()


def fingerprint(model: ModelWrapper) -> dict[str, Any]:
    """What the bitfile of a specialised, folded graph fixes, as JSON: per HW node in order its
    name, op type, hardware attributes (all but :data:`_NOT_HARDWARE`: folding, datatypes,
    sizes, threshold counts, memory styles), and per input/output tensor its producer, shape
    and datatype; a constant input of a writable layer as its shape only, any other constant
    by its sha256 (it is baked into the bitfile, so it must not change)."""
    from qonnx.custom_op.registry import getCustomOp

    producer = {t: n.name for n in model.graph.node for t in n.output}
    writable = {n.name for n in writable_nodes(model)}
    nodes = []
    for node in model.graph.node:
        if not node.domain.startswith(HW_DOMAIN):
            raise UserError(f"{node.name} ({node.op_type}) is not a HW layer")
        inst = getCustomOp(node)
        attrs = {
            name: _jsonable(inst.get_nodeattr(name))
            for name in sorted(inst.get_nodeattr_types())
            if name not in _NOT_HARDWARE
        }
        inputs = []
        for k, tensor in enumerate(node.input):
            entry: dict[str, Any] = {
                "shape": [int(v) for v in model.get_tensor_shape(tensor)],
                "datatype": model.get_tensor_datatype(tensor).name,
            }
            init = model.get_initializer(tensor)
            if init is None:
                entry["from"] = producer.get(tensor, "input")
            elif node.name in writable and k == 1:
                entry["from"] = "writable"
            else:
                entry["from"] = "constant"
                entry["sha256"] = _constant_digest(init)
            inputs.append(entry)
        outputs = [
            {
                "shape": [int(v) for v in model.get_tensor_shape(t)],
                "datatype": model.get_tensor_datatype(t).name,
            }
            for t in node.output
        ]
        nodes.append(
            {
                "name": node.name,
                "op_type": node.op_type,
                "attributes": attrs,
                "inputs": inputs,
                "outputs": outputs,
            }
        )
    return {"format": FINGERPRINT_FORMAT, "version": FINGERPRINT_VERSION, "nodes": nodes}


def fingerprint_digest(fp: Mapping[str, Any]) -> str:
    """sha256 hex of the fingerprint's canonical JSON (:func:`~fcnseg.host.package.canonical_json`,
    as the package loader checks it)."""
    return hashlib.sha256(canonical_json(fp).encode("utf-8")).hexdigest()


def first_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """The first place ``new`` differs from ``old``, as ``"layer X: what old A vs new B"``
    (None if equal). Nodes are compared in order: name and op type, attributes (:data:`_FIRST`,
    then by name), inputs and outputs by position; then the node count."""
    a, b = list(old.get("nodes", [])), list(new.get("nodes", []))
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        where = f"layer {x['name']}"
        for key in ("name", "op_type"):
            if x[key] != y[key]:
                return f"{where} (#{i}): {key} old {x[key]} vs new {y[key]}"
        names = set(x["attributes"]) | set(y["attributes"])
        for attr in [a for a in _FIRST if a in names] + sorted(names - set(_FIRST)):
            va, vb = x["attributes"].get(attr), y["attributes"].get(attr)
            if va != vb:
                return f"{where}: {attr} old {va} vs new {vb}"
        for side in ("inputs", "outputs"):
            if len(x[side]) != len(y[side]):
                return f"{where}: {len(x[side])} {side} old vs {len(y[side])} new"
            for k, (p, q) in enumerate(zip(x[side], y[side], strict=True)):
                for key in sorted(set(p) | set(q)):
                    if p.get(key) != q.get(key):
                        what = "constant values" if key == "sha256" else key
                        old_v = "" if key == "sha256" else f" old {p.get(key)} vs new {q.get(key)}"
                        return f"{where}: {side[:-1]} {k} {what} differ{old_v}"
    if len(a) != len(b):
        return f"graph: {len(a)} HW layers old vs {len(b)} new"
    if old.get("version") != new.get("version"):
        return f"fingerprint version old {old.get('version')} vs new {new.get('version')}"
    return None


def runtime_record(
    folded: ModelWrapper, package_names: Mapping[str, str], part: str, dma_port_width: int
) -> dict[str, Any]:
    """The package's ``runtime_weights`` record of a folded graph: the layout of its writable
    layers (each with ``layer``, the package layer it writes: ``package_names`` maps node names
    of the specialised graph to the package's), the fingerprint and its digest."""
    fp = fingerprint(folded)
    partitions = zynq_partitions(folded, part, dma_port_width)
    layers = memory_layout(folded, zynq_family(part), partitions)
    for entry in layers:
        if entry["node"] not in package_names:
            raise UserError(f"{entry['node']}: no package layer corresponds to it")
        entry["layer"] = package_names[entry["node"]]
    zynq = zynq_family(part)
    return {
        "partitions": len(partitions),
        "zynq": zynq,
        "axi_base": AXI_PERIPHERAL_BASE[zynq],
        "layers": layers,
        "fingerprint": fp,
        "fingerprint_sha256": fingerprint_digest(fp),
    }


def package_names(hw_graph: ModelWrapper, folded: ModelWrapper) -> dict[str, str]:
    """Specialised node name -> the package's layer name (the k-th node of a kind in the
    folded graph is the k-th of that kind in the HW graph; SpecializeLayers keeps the order,
    as :func:`fcnseg.hw.build.annotate_folding` relies on too)."""
    from fcnseg.hw.to_package import hw_nodes

    before: dict[str, list[str]] = {}
    for name, node in hw_nodes(hw_graph).items():
        before.setdefault(node.op_type, []).append(name)
    seen: dict[str, int] = {}
    out = {}
    for node in folded.graph.node:
        kind = base_kind(node.op_type)
        k = seen.get(kind, 0)
        seen[kind] = k + 1
        if k < len(before.get(kind, [])):
            out[node.name] = before[kind][k]
    return out


def runtime_files(
    folded: ModelWrapper, hw_graph: ModelWrapper, board: Board, out_dir: Path
) -> tuple[dict[str, Any], dict[str, Path]]:
    """The ``runtime_weights`` record of a build for ``board`` and its ``.dat`` files (written
    under ``out_dir``), as ``(record, {package path: file})`` for the package writer."""
    names = package_names(hw_graph, folded)
    record = runtime_record(folded, names, board.part, board.dma_port_width)
    write_weight_files(folded, record["layers"], out_dir)
    return record, {e["file"]: out_dir / e["file"] for e in record["layers"]}
