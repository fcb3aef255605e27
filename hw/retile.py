"""``Retile((H, W))``: give a specialised HW graph a new input tile without re-streamlining it.

The tile search of ``fcnseg compile --frame`` (:mod:`fcnseg.hw.tile_search`) tries tens of tile
shapes. Streamlining (11 s for the shipped FCN-8s) does not depend on the tile, only the spatial
attributes of the HW layers and the tensor shapes do, so one build up to ``step_specialize_layers``
is retiled per candidate here and re-folded (0.5 s) instead of compiled again.

The pass walks the nodes in topological order, takes each node's streamed input shapes from its
producers' (already retiled) outputs, sets the node's spatial attributes from them by the op's own
shape rule (the formulas of ``finn/custom_op/fpgadataflow/<op>.py`` in finn-plus 1.6.1) and
records its output shapes:

============================  ==============================================================
op (any ``_hls`` / ``_rtl``)  attributes recomputed from the input ``(1, h, w, c)``
============================  ==============================================================
FMPadding                     ``ImgDim = [h, w]``; out ``h + pad[0] + pad[2]`` x ``w + pad[1]
                              + pad[3]``
ConvolutionInputGenerator     ``IFMDim = [h, w]``, ``OFMDim = (d - dil (k - 1) - 1) / stride + 1``
                              (the division must be exact: a window never hangs over the edge)
MVAU, Thresholding,           ``numInputVectors = [1, h, w]``
DuplicateStreams, LabelSelect
Pool                          ``OutImgDims = [h, w]`` (its input is the depthwise SWG's im2col)
UpsampleNearestNeighbour      ``HI, WI = h, w``; ``HO, WO`` = the same integer factor as before
ElementwiseAdd (and the       ``lhs_shape``, ``rhs_shape`` = the inputs (a ``const`` side keeps
other ElementwiseBinary ops)  its initializer's shape), ``out_shape`` = their broadcast
StreamingDataWidthConverter   ``inShape``, ``outShape`` = the input shape
============================  ==============================================================

Anything else is refused (:class:`~fcnseg.errors.UserError` naming the op): a node whose rule is
not written here would keep its old tile silently. Afterwards every node's own
``get_normal_input_shape`` / ``get_normal_output_shape`` must equal the tensors' new shapes and the
graph's shapes must survive qonnx's ``InferShapes`` unchanged; a mismatch is an error too. That a
retiled graph equals the graph the whole flow builds at that tile (attributes, shapes, finn's
cycles and resource estimates after the same folding) is what ``tests/hw/test_retile.py`` checks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation
from qonnx.transformation.infer_shapes import InferShapes

from fcnseg.errors import UserError
from fcnseg.hw.to_package import base_kind

if TYPE_CHECKING:
    from onnx import NodeProto
    from qonnx.core.modelwrapper import ModelWrapper

Shape = tuple[int, ...]
#: ``rule(node, custom op, streamed input shapes, all input shapes) -> output shapes``
Rule = Callable[["NodeProto", object, list[Shape], list[Shape | None]], list[Shape]]

_HW_DOMAIN = "finn.custom_op.fpgadataflow"


def _spatial(name: str, shape: Shape) -> tuple[int, int, int]:
    if len(shape) != 4 or shape[0] != 1:
        raise UserError(f"retile: {name} expects a (1, H, W, C) input, got {list(shape)}")
    return shape[1], shape[2], shape[3]


def _fmpadding(node: NodeProto, op, ins: list[Shape], _: list) -> list[Shape]:
    h, w, c = _spatial(node.name, ins[0])
    op.set_nodeattr("ImgDim", [h, w])
    pad = op.get_nodeattr("Padding")
    return [(1, h + pad[0] + pad[2], w + pad[1] + pad[3], c)]


def _window_out(name: str, axis: str, size: int, k: int, stride: int, dil: int) -> int:
    span = size - dil * (k - 1) - 1
    if span < 0 or span % stride:
        raise UserError(
            f"retile: {name} gets {size} {axis} for a {k}-wide window at stride {stride}: not a "
            "whole number of windows (the tile must be a multiple of the net stride and larger "
            "than the net's smallest feature map)"
        )
    return span // stride + 1


def _swg(node: NodeProto, op, ins: list[Shape], _: list) -> list[Shape]:
    h, w, c = _spatial(node.name, ins[0])
    kh, kw = op.get_nodeattr("ConvKernelDim")
    sh, sw = op.get_nodeattr("Stride")
    dh, dw = op.get_nodeattr("Dilation")
    if op.get_nodeattr("is1D"):
        raise UserError(f"retile: {node.name} is a 1D sliding window, not retiled")
    oh = _window_out(node.name, "rows", h, kh, sh, dh)
    ow = _window_out(node.name, "columns", w, kw, sw, dw)
    op.set_nodeattr("IFMDim", [h, w])
    op.set_nodeattr("OFMDim", [oh, ow])
    return [(1, oh, ow, kh * kw * op.get_nodeattr("IFMChannels"))]


def _vectors(node: NodeProto, op, ins: list[Shape], _: list) -> list[Shape]:
    """Ops whose spatial extent is ``numInputVectors``; outputs keep it, with their channels."""
    h, w, _c = _spatial(node.name, ins[0])
    op.set_nodeattr("numInputVectors", [1, h, w])
    return [tuple(op.get_normal_output_shape(i)) for i in range(len(node.output))]


def _pool(node: NodeProto, op, ins: list[Shape], _: list) -> list[Shape]:
    h, w, _c = _spatial(node.name, ins[0])
    op.set_nodeattr("OutImgDims", [h, w])
    return [(1, h, w, op.get_nodeattr("Channels"))]


def _upsample(node: NodeProto, op, ins: list[Shape], _: list) -> list[Shape]:
    h, w, c = _spatial(node.name, ins[0])
    factors = []
    for i, o in (("HI", "HO"), ("WI", "WO")):
        before_in, before_out = op.get_nodeattr(i), op.get_nodeattr(o)
        if before_in < 1 or before_out % before_in:
            raise UserError(f"retile: {node.name} scales {before_in} -> {before_out}: not integer")
        factors.append(before_out // before_in)
    op.set_nodeattr("HI", h)
    op.set_nodeattr("WI", w)
    op.set_nodeattr("HO", h * factors[0])
    op.set_nodeattr("WO", w * factors[1])
    return [(1, h * factors[0], w * factors[1], c)]


def _broadcast(name: str, a: Shape, b: Shape) -> Shape:
    import numpy as np

    try:
        return tuple(int(d) for d in np.broadcast_shapes(a, b))
    except ValueError:
        raise UserError(f"retile: {name} adds shapes {list(a)} and {list(b)}") from None


def _elementwise(node: NodeProto, op, _streamed: list[Shape], ins: list) -> list[Shape]:
    lhs, rhs = ins[0], ins[1]
    if lhs is None or rhs is None:
        raise UserError(f"retile: {node.name} has an input without a shape")
    op.set_nodeattr("lhs_shape", list(lhs))
    op.set_nodeattr("rhs_shape", list(rhs))
    out = _broadcast(node.name, lhs, rhs)
    op.set_nodeattr("out_shape", list(out))
    return [out]


def _dwc(node: NodeProto, op, ins: list[Shape], _: list) -> list[Shape]:
    op.set_nodeattr("inShape", list(ins[0]))
    op.set_nodeattr("outShape", list(ins[0]))
    return [ins[0]]


#: base op kind -> its shape rule (module docstring)
RULES: dict[str, Rule] = {
    "FMPadding": _fmpadding,
    "ConvolutionInputGenerator": _swg,
    "MVAU": _vectors,
    "Thresholding": _vectors,
    "DuplicateStreams": _vectors,
    "LabelSelect": _vectors,
    "Pool": _pool,
    "UpsampleNearestNeighbour": _upsample,
    "ElementwiseAdd": _elementwise,
    "ElementwiseSub": _elementwise,
    "ElementwiseMul": _elementwise,
    "ElementwiseMaximum": _elementwise,
    "ElementwiseMinimum": _elementwise,
    "StreamingDataWidthConverter": _dwc,
}


def graph_tile(model: ModelWrapper) -> tuple[int, int]:
    """The ``(H, W)`` of the graph's one NHWC input."""
    inputs = list(model.graph.input)
    if len(inputs) != 1:
        raise UserError(f"retile: the HW graph has {len(inputs)} inputs, expected one")
    shape = model.get_tensor_shape(inputs[0].name)
    _spatial(inputs[0].name, tuple(shape))
    return int(shape[1]), int(shape[2])


class Retile(Transformation):
    """Set the input tile of a specialised (or unspecialised) HW graph to ``tile = (H, W)``.

    Input NHWC ``(1, H, W, C)``; every HW node's spatial attributes and every activation
    tensor's shape follow (module docstring). Idempotent; ``changed`` is always False (one pass).
    """

    def __init__(self, tile: Sequence[int]) -> None:
        super().__init__()
        if len(tile) != 2 or any(int(t) < 1 for t in tile):
            raise UserError(f"retile: tile must be two positive sizes, got {list(tile)}")
        self.tile = (int(tile[0]), int(tile[1]))

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        graph_tile(model)
        name = model.graph.input[0].name
        channels = int(model.get_tensor_shape(name)[3])
        shapes: dict[str, Shape] = {name: (1, *self.tile, channels)}
        for node in _topological(model):
            if not node.domain.startswith(_HW_DOMAIN):
                raise UserError(f"retile: {node.name} ({node.op_type}) is not a HW layer")
            rule = RULES.get(base_kind(node.op_type))
            if rule is None:
                raise UserError(
                    f"retile: no shape rule for {node.op_type} ({node.name}); known: "
                    + ", ".join(sorted(RULES))
                )
            op = getCustomOp(node)
            every: list[Shape | None] = []
            for t in node.input:
                if t in shapes:
                    every.append(shapes[t])
                elif model.get_initializer(t) is not None:
                    every.append(tuple(model.get_initializer(t).shape))
                else:
                    raise UserError(f"retile: {node.name} reads {t}, which nothing produces")
            streamed = [shapes[t] for t in node.input if t in shapes]
            outs = rule(node, op, streamed, every)
            if len(outs) != len(node.output):
                raise UserError(f"retile: {node.name} has {len(node.output)} outputs")
            for t, shape in zip(node.output, outs, strict=True):
                shapes[t] = tuple(int(d) for d in shape)
            _check_node(node, op, every, outs, model)
        for t, shape in shapes.items():
            model.set_tensor_shape(t, list(shape))
        _check_inferred(model, shapes)
        return model, False


def _topological(model: ModelWrapper) -> list[NodeProto]:
    """The nodes in an order where every producer comes before its consumers (Kahn)."""
    produced_by = {t: n for n in model.graph.node for t in n.output}
    done: set[str] = set()
    order: list[NodeProto] = []
    pending = list(model.graph.node)
    while pending:
        ready = [
            n
            for n in pending
            if all(t not in produced_by or id(produced_by[t]) in done for t in n.input)
        ]
        if not ready:
            raise UserError("retile: the HW graph has a cycle")
        for n in ready:
            done.add(id(n))
            order.append(n)
        pending = [n for n in pending if id(n) not in done]
    return order


def _check_node(node: NodeProto, op, ins: list, outs: list[Shape], model: ModelWrapper) -> None:
    """The node's own shape methods must agree with the shapes the rule propagated."""
    for i, t in enumerate(node.input):
        if model.get_initializer(t) is not None:
            continue
        own = tuple(int(d) for d in op.get_normal_input_shape(i))
        if own != tuple(ins[i]):
            raise UserError(
                f"retile: {node.name} input {i} would be {list(ins[i])} but its attributes "
                f"say {list(own)}"
            )
    for i, shape in enumerate(outs):
        own = tuple(int(d) for d in op.get_normal_output_shape(i))
        if own != tuple(shape):
            raise UserError(
                f"retile: {node.name} output {i} is {list(shape)} but its attributes say "
                f"{list(own)}"
            )


def _check_inferred(model: ModelWrapper, shapes: dict[str, Shape]) -> None:
    """qonnx's ``InferShapes`` (each op's ``make_shape_compatible_op``) must reproduce them."""
    inferred = model.transform(InferShapes())
    for t, shape in shapes.items():
        got = inferred.get_tensor_shape(t)
        if got is None or tuple(got) != shape:
            raise UserError(f"retile: {t} is {list(shape)}, shape inference says {got}")
