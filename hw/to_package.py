"""finn-plus HW-layer graph -> deployment package (format: :mod:`fcnseg.host.package`).

``layers_from_model`` turns the graph *before* SpecializeLayers (nodes in the domain
``finn.custom_op.fpgadataflow``: MVAU, ConvolutionInputGenerator, FMPadding, Pool, Thresholding,
DuplicateStreams, ElementwiseAdd, UpsampleNearestNeighbour, ...) into the package's ordered layer
list with integer arrays; ``build_package`` writes the package. A dataflow-partition parent is
followed into its child graph. Layout-only boundary nodes (the NCHW<->NHWC Transposes finn keeps
around the partition) are dropped: the package's input and output are NHWC. Any other non-HW node
is refused, since the host could not run it.

Float tensors from finn become integers here, exactly: weights must be integer-valued; thresholds
``t`` become ``ceil(t)`` (for integer inputs ``x >= t`` iff ``x >= ceil(t)``) clipped to the
proven input range ``[lo, hi + 1]`` (counts unchanged) and sorted per row, stored in the smallest
dtype. Each layer also records the datatypes its node declares (:data:`DECLARED_TYPES`: the
weights', the thresholds', the operands'), which the host checks the arrays against; the writer
refuses a layer whose type is unset or not an integer, since a package must carry them (the
flow's own analyses, which read half-converted graphs, see whatever the graph has).
finn/qonnx/onnx are imported inside functions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcnseg.errors import UserError
from fcnseg.host.card import ModelCard
from fcnseg.host.package import LAYER_KINDS, Layer, is_integer_dtype, parse_dtype, write_package
from fcnseg.host.sim.ranges import matmul_range, storage_dtype

if TYPE_CHECKING:
    from qonnx.core.modelwrapper import ModelWrapper

HW_DOMAIN = "finn.custom_op.fpgadataflow"
LAYOUT_OPS = {"Transpose", "Reshape", "Identity"}

#: attributes copied into accelerator.json per kind (size-free ones drive the simulator; the
#: tile-size ones are kept for reference and for the board driver).
ATTRS: dict[str, tuple[str, ...]] = {
    "MVAU": (
        "MW",
        "MH",
        "ActVal",
        "noActivation",
        "binaryXnorMode",
        "accDataType",
        "weightDataType",
        "mem_mode",
    ),
    "ConvolutionInputGenerator": (
        "ConvKernelDim",
        "IFMChannels",
        "IFMDim",
        "OFMDim",
        "Stride",
        "Dilation",
        "depthwise",
    ),
    "FMPadding": ("ImgDim", "Padding", "NumChannels"),
    "Pool": ("Channels", "KernelSize", "Function", "OutImgDims", "AccumBits", "Size"),
    "Thresholding": ("NumChannels", "numSteps", "ActVal", "weightDataType"),
    "DuplicateStreams": ("NumChannels", "NumOutputStreams"),
    "UpsampleNearestNeighbour": ("HI", "WI", "HO", "WO", "NumChannels"),
    "StreamingDataWidthConverter": ("inWidth", "outWidth"),
    "StreamingFIFO": ("depth",),
    "AddStreams": ("NumChannels",),
}
for _k in ("ElementwiseAdd", "ElementwiseSub", "ElementwiseMul", "ElementwiseMax"):
    ATTRS[_k] = (
        "lhs_shape",
        "rhs_shape",
        "out_shape",
        "lhs_style",
        "rhs_style",
        "lhs_dtype",
        "rhs_dtype",
        "out_dtype",
    )
#: the datatypes a layer declares beside its streams (finn attribute names), which a version-2
#: package must carry: the host checks the arrays against them on load (weights within
#: ``weightDataType``; for Thresholding finn's ``weightDataType`` is the thresholds' type;
#: Elementwise constants within ``lhs_dtype``/``rhs_dtype``). Each is in :data:`ATTRS` too.
DECLARED_TYPES: dict[str, tuple[str, ...]] = {
    "MVAU": ("weightDataType", "accDataType"),
    "Thresholding": ("weightDataType",),
    **{
        k: ("lhs_dtype", "rhs_dtype", "out_dtype")
        for k in ("ElementwiseAdd", "ElementwiseSub", "ElementwiseMul", "ElementwiseMax")
    },
}
#: the folding attributes of a HW layer: what a finn folding JSON sets per node, carried from
#: the folded model onto hw_graph.onnx (``fcnseg.hw.build``), into the reports and into each
#: package layer's ``folding`` record, which can therefore be written back as a ``--folding``
#: file. ``mem_mode`` (where MVAU weights live) is a folding decision in finn, hence here.
FOLDING_ATTRS = ("PE", "SIMD", "parallel_window", "ram_style", "resType", "mem_mode")
#: the op-type suffixes of specialised layers (SpecializeLayers: ``MVAU`` -> ``MVAU_hls``)
SPECIALISED_SUFFIXES = ("_hls", "_rtl")


def base_kind(op_type: str) -> str:
    """The HW op a (possibly specialised) op type implements: ``MVAU_hls`` -> ``MVAU``.

    A specialised layer has the same semantics and attributes as its HW op."""
    for suffix in SPECIALISED_SUFFIXES:
        if op_type.endswith(suffix):
            return op_type[: -len(suffix)]
    return op_type


def _hw_graph(model: ModelWrapper) -> ModelWrapper:
    """The HW-layer graph: the model itself, or the child of its single dataflow partition."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    parts = [n for n in model.graph.node if n.op_type == "StreamingDataflowPartition"]
    if len(parts) > 1:
        raise UserError(f"the HW graph has {len(parts)} dataflow partitions; expected one")
    if parts:
        return ModelWrapper(getCustomOp(parts[0]).get_nodeattr("model"))
    return model


def hw_nodes(model: ModelWrapper) -> dict[str, Any]:
    """The HW-layer nodes of a graph (inside its dataflow partition, if any) by node name."""
    return {n.name: n for n in _hw_graph(model).graph.node if n.domain.startswith(HW_DOMAIN)}


def _integer(name: str, arr: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.array_equal(a, np.round(a)):
            raise UserError(f"layer {name}: {what} are not integers")
        a = a.astype(np.int64)
    return a.astype(np.int64)


def _compact(a: np.ndarray) -> np.ndarray:
    return a.astype(storage_dtype((int(a.min()), int(a.max())))) if a.size else a


def _thresholds(name: str, t: np.ndarray, in_range: tuple[int, int]) -> np.ndarray:
    """finn's float thresholds as the package's integers: ``ceil``, clipped to ``[lo, hi + 1]``
    and sorted per row (counts ``#{t : x >= t}`` do not depend on the order; a version-2
    package's thresholds are sorted, so the host need not sort them)."""
    t = np.asarray(t, dtype=np.float64)
    if not np.all(np.isfinite(t)):
        raise UserError(f"layer {name}: thresholds are not finite")
    lo, hi = in_range
    t = np.sort(np.clip(np.ceil(t), lo, hi + 1).astype(np.int64), axis=-1)
    return _compact(t)


def declared_types(node) -> dict[str, str]:
    """The datatypes a HW node declares (:data:`DECLARED_TYPES` of its kind) that are set, by
    finn attribute name; an unset one is left out.

    Read as they are: in the middle of the flow some are not integers yet (a Thresholding's
    ``weightDataType`` is FLOAT32 until its thresholds are rounded). :func:`check_declared`
    says whether a layer has all it needs to be packaged. Used by :func:`node_to_layer` and by
    ``fcnseg upgrade`` (:mod:`fcnseg.hw.upgrade`), so both read a graph's types the same way.
    """
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    types = inst.get_nodeattr_types()
    present = {a.name for a in node.attribute}
    return {
        attr: str(inst.get_nodeattr(attr))
        for attr in DECLARED_TYPES.get(base_kind(node.op_type), ())
        # a required attribute that is unset makes qonnx raise a bare Exception
        if attr in types and (attr in present or not inst.get_nodeattr_def(attr)[1])
    }


def complete_declared(
    kind: str, declared: Mapping[str, str], input_dtypes: tuple[str, ...] | list[str]
) -> dict[str, str]:
    """``declared`` (:func:`declared_types`) with a Thresholding's thresholds type filled in
    where finn has not set it yet: FLOAT32 until finn's ``RoundAndClipThresholds``, which ceils
    thresholds on an integer input to ``[min, max + 1]`` and declares the smallest type holding
    that (an INT32 input gives INT33). This writer rounds and clips float thresholds the same way
    (:func:`_thresholds`, within the input's proven range), so the type is finn's own rule, not a
    guess. An unset type, or any other, stays as the graph has it (:func:`check_declared`
    judges it)."""
    out = dict(declared)
    if kind == "Thresholding" and str(out.get("weightDataType")).startswith("FLOAT"):
        if input_dtypes and is_integer_dtype(input_dtypes[0]):
            from qonnx.core.datatype import DataType

            lo, hi = parse_dtype(input_dtypes[0])
            edge = hi + 1 if lo >= 0 else -(hi + 1) - 1
            out["weightDataType"] = DataType.get_smallest_possible(edge).name
    return out


def check_declared(layer: Layer) -> None:
    """Refuse, in one line naming the layer, a layer that lacks one of its declared types
    (:data:`DECLARED_TYPES`) or whose type is not an integer datatype: a version-2 package
    must carry them, since the host checks the layer's arrays against them on load."""
    for attr in DECLARED_TYPES.get(layer.kind, ()):
        value = layer.attributes.get(attr)
        if not is_integer_dtype(value):
            state = "unset" if value is None else repr(value)
            raise UserError(
                f"layer {layer.name} ({layer.kind}): declared type {attr} is {state}, not an "
                "integer datatype (a package needs it to check the layer's arrays)"
            )


def node_to_layer(model: ModelWrapper, node, ranges: dict[str, tuple[int, int]]) -> Layer:
    """One HW node -> package :class:`Layer` (integer arrays, size-free attributes, dtypes).

    ``ranges`` maps tensor names to integer ranges; missing inputs get their datatype's range
    (used to clip thresholds); it is updated in place.
    """
    from qonnx.custom_op.registry import getCustomOp

    kind = base_kind(node.op_type)
    if kind not in LAYER_KINDS:
        raise UserError(f"layer {node.name}: HW layer kind {kind} is not supported by fcnseg")
    inst = getCustomOp(node)
    types = inst.get_nodeattr_types()
    dyn = [t for t in node.input if t and model.get_initializer(t) is None]
    in_dts = [model.get_tensor_datatype(t).name for t in dyn]
    out_dts = [model.get_tensor_datatype(t).name for t in node.output]
    declared = complete_declared(kind, declared_types(node), in_dts)
    attrs = {
        a: declared[a] if a in declared else inst.get_nodeattr(a)
        for a in ATTRS.get(kind, ())
        if a in types and (a in declared or a not in DECLARED_TYPES.get(kind, ()))
    }
    folding = {a: inst.get_nodeattr(a) for a in FOLDING_ATTRS if a in types}
    for dt in in_dts + out_dts:
        if not is_integer_dtype(dt):
            raise UserError(
                f"layer {node.name} ({kind}) streams {dt}: the accelerator must be integer "
                "end to end (cut the float tail before packaging)"
            )
    for t, dt in zip(dyn, in_dts, strict=True):
        ranges.setdefault(t, parse_dtype(dt))
    arrays: dict[str, np.ndarray] = {}
    if kind == "MVAU":
        w = _integer(node.name, model.get_initializer(node.input[1]), "weights")
        arrays["weights"] = _compact(w)
        if len(node.input) > 2 and not int(inst.get_nodeattr("noActivation")):
            acc_range, _ = matmul_range(ranges[dyn[0]], w)
            t = model.get_initializer(node.input[2])
            arrays["thresholds"] = _thresholds(node.name, t, acc_range)
    elif kind == "Thresholding":
        t = model.get_initializer(node.input[1])
        arrays["thresholds"] = _thresholds(node.name, t, ranges[dyn[0]])
    elif kind.startswith("Elementwise"):
        for side, t in zip(("lhs", "rhs"), node.input, strict=False):
            c = model.get_initializer(t)
            if c is not None:
                arrays[side] = _compact(_integer(node.name, c, f"{side} constants"))
    return Layer(
        kind=kind,
        name=node.name,
        inputs=tuple(dyn),
        outputs=tuple(node.output),
        attributes=attrs,
        input_dtypes=tuple(in_dts),
        output_dtypes=tuple(out_dts),
        input_shapes=tuple(tuple(model.get_tensor_shape(t)) for t in dyn),
        output_shapes=tuple(tuple(model.get_tensor_shape(t)) for t in node.output),
        folding=folding,
        arrays=arrays,
    )


def _topological(layers: list[Layer]) -> list[Layer]:
    """Stable topological order (graph order where it is already valid): the package contract."""
    produced_by = {t: i for i, layer in enumerate(layers) for t in layer.outputs}
    done: set[int] = set()
    order: list[Layer] = []
    pending = list(range(len(layers)))
    while pending:
        for k, i in enumerate(pending):
            deps = {produced_by[t] for t in layers[i].inputs if t in produced_by}
            if deps <= done:
                done.add(i)
                order.append(layers[i])
                del pending[k]
                break
        else:
            raise UserError("the HW layers contain a cycle")
    return order


def layers_from_model(model: ModelWrapper) -> tuple[list[Layer], dict[str, Any]]:
    """Package layers and the io dict (without scale/bias) of a finn-plus HW-layer graph."""

    model = _hw_graph(model)
    nodes = list(model.graph.node)
    hw = [n for n in nodes if n.domain.startswith(HW_DOMAIN)]
    if not hw:
        raise UserError("the model has no HW layers (run the conversion to HW layers first)")
    first, last = nodes.index(hw[0]), nodes.index(hw[-1])
    for n in nodes[:first] + nodes[last + 1 :]:
        if n.op_type not in LAYOUT_OPS:
            raise UserError(f"node {n.name} ({n.op_type}) outside the HW layers is not layout-only")
    for n in nodes[first : last + 1]:
        if not n.domain.startswith(HW_DOMAIN):
            raise UserError(f"node {n.name} ({n.op_type}) between HW layers is not a HW layer")

    ranges: dict[str, tuple[int, int]] = {}
    layers = _topological([node_to_layer(model, node, ranges) for node in hw])
    produced = {t for layer in layers for t in layer.outputs}
    consumed = {t for layer in layers for t in layer.inputs}
    ins = [t for t in consumed if t not in produced]
    outs = [t for t in produced if t not in consumed]
    if len(ins) != 1 or len(outs) != 1:
        raise UserError(f"HW layers need one input and one output, found {ins} -> {outs}")
    io = {}
    for port, t in (("input", ins[0]), ("output", outs[0])):
        shape = [int(v) for v in model.get_tensor_shape(t)]
        io[port] = {
            "name": t,
            "dtype": model.get_tensor_datatype(t).name,
            "shape": shape,
            "layout": "NHWC",
        }
    return layers, io


def build_package(
    hw_model: ModelWrapper | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    model_card: ModelCard | Mapping[str, Any] | str | os.PathLike,
    estimates: Mapping[str, Any] | None = None,
    board: str | None = None,
    folding: Mapping[str, Mapping[str, Any]] | None = None,
    output_scale: list[float] | None = None,
    output_bias: list[float] | None = None,
    extra_files: Mapping[str, str | os.PathLike] | None = None,
    runtime_weights: Mapping[str, Any] | None = None,
) -> Path:
    """Write the deployment package of a HW-layer graph; return its folder.

    ``model_card``: the export's model.json (a :class:`ModelCard`, its JSON, or the path of
    the file; validated here either way). Its ``output_scale``/``output_bias``
    (per class) become the package's output scale/bias unless given explicitly (when the HW
    graph's integer output is scaled differently from the export's). ``folding``: the folding
    config (node name -> {PE, SIMD, ...}), merged into each layer's ``folding`` record (the node
    attributes are the truth; this only fills keys they lack). ``extra_files``: package-relative
    path -> source file (bitfile, driver settings). ``runtime_weights``: the record of a
    runtime-writable build (:func:`fcnseg.hw.runtime_weights.runtime_files`).
    """
    from qonnx.core.modelwrapper import ModelWrapper

    if not isinstance(hw_model, ModelWrapper):
        hw_model = ModelWrapper(str(hw_model))
    if isinstance(model_card, ModelCard):
        card = model_card
    elif isinstance(model_card, Mapping):
        card = ModelCard.from_json(model_card)
    else:
        card = ModelCard.load(model_card)
    layers, io = layers_from_model(hw_model)
    for layer in layers:
        check_declared(layer)
    if folding:
        merged = []
        for layer in layers:
            fold = {**dict(folding.get(layer.name, {})), **layer.folding}
            merged.append(Layer(**{**vars(layer), "folding": fold}))
        layers = merged
    nc = io["output"]["shape"][-1]
    scale = output_scale if output_scale is not None else card.output_scale
    bias = output_bias if output_bias is not None else card.output_bias
    if scale is None:
        raise UserError("model card has no output_scale; pass output_scale")
    scale = [float(v) for v in np.broadcast_to(np.asarray(scale, dtype=np.float64), (nc,))]
    bias = [float(v) for v in np.broadcast_to(np.asarray(bias or 0.0, dtype=np.float64), (nc,))]
    io["output"].update(scale=scale, bias=bias)
    return write_package(
        out_dir,
        model_card=card.without_output_affine(),  # write_package fills in the tile if absent
        io=io,
        layers=layers,
        estimates=estimates,
        board=board,
        hw_graph=_hw_graph(hw_model).model.SerializeToString(),
        extra_files=extra_files,
        runtime_weights=runtime_weights,
    )
