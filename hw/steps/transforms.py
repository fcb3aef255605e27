"""Small graph transformations FCN graphs need and finn-plus 1.6.1 does not provide.

Each is a qonnx ``Transformation``: ``apply(model) -> (model, changed)``; ``model.transform``
repeats it to a fixed point.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qonnx.transformation.base import Transformation

if TYPE_CHECKING:
    from qonnx.core.modelwrapper import ModelWrapper


def _perm(node) -> tuple[int, ...]:
    from qonnx.util.basic import get_by_name

    attr = get_by_name(node.attribute, "perm")
    return tuple(attr.ints) if attr is not None else ()


class MergeForkedTransposes(Transformation):
    """Merge identical ``Transpose`` consumers of one tensor into a single ``Transpose``.

    Lowering two convolutions that read the same feature map (an FCN skip: ``pool4`` feeds both
    ``conv5`` and ``score_pool4``) gives the map two identical NCHW->NHWC transposes. finn's
    ``MakeMaxPoolNHWC`` then rewires only the first one and the second branch silently reads the
    tensor from *before* the pool (wrong shape and values). With one transpose followed by a fork
    the pool moves to NHWC correctly.
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        graph = model.graph
        for tensor in {i for node in graph.node for i in node.input}:
            consumers = [n for n in model.find_consumers(tensor) if n.op_type == "Transpose"]
            if len(consumers) < 2:
                continue
            keep = consumers[0]
            for other in consumers[1:]:
                if _perm(other) != _perm(keep):
                    continue
                for node in graph.node:
                    for k, name in enumerate(node.input):
                        if name == other.output[0]:
                            node.input[k] = keep.output[0]
                for out in graph.output:
                    if out.name == other.output[0]:
                        raise ValueError(f"{other.name}: forked transpose is a graph output")
                graph.node.remove(other)
                return model, True
        return model, False


class RemoveIdentityInputThreshold(Transformation):
    """Drop a ``MultiThreshold`` that maps a UINT8 graph input onto itself.

    The contract feeds raw UINT8 pixels and the net quantizes ``x/255`` with a fixed 1/255 scale:
    after streamlining that is a 255-step threshold ``x >= 0.5, 1.5, ... 254.5`` whose output
    equals its input. Left in, it becomes a Thresholding layer with 255 thresholds per channel.
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        import numpy as np
        from qonnx.core.datatype import DataType
        from qonnx.util.basic import get_by_name

        graph = model.graph
        inp = graph.input[0].name
        if model.get_tensor_datatype(inp) != DataType["UINT8"]:
            return model, False
        for node in model.find_consumers(inp):
            if node.op_type != "MultiThreshold":
                continue
            thresholds = model.get_initializer(node.input[1])
            if thresholds is None or thresholds.shape[-1] != 255:
                continue
            scale = get_by_name(node.attribute, "out_scale")
            bias = get_by_name(node.attribute, "out_bias")
            if (scale is not None and scale.f != 1.0) or (bias is not None and bias.f != 0.0):
                continue
            # x integer in [0, 255]: count(x >= t) == x iff t_k in (k-1, k] for k = 1..255
            k = np.arange(1, 256, dtype=np.float64)
            if not (np.all(thresholds > k - 1) and np.all(thresholds <= k)):
                continue
            if model.get_tensor_datatype(node.output[0]) != DataType["UINT8"]:
                continue
            for consumer in model.find_consumers(node.output[0]):
                for k_in, name in enumerate(consumer.input):
                    if name == node.output[0]:
                        consumer.input[k_in] = inp
            graph.node.remove(node)
            return model, True
        return model, False
