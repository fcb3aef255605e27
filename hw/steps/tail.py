"""Cut the float tail off a streamlined FCN so the accelerator outputs integer scores.

After streamlining, the last integer op (the score ``MatMul`` of FCN-32s, the skip ``Add`` of
FCN-8s) is followed only by per-class float ``Mul``/``Add`` nodes and a NHWC->NCHW ``Transpose``.
finn would turn those into float ``ElementwiseMul/Add`` layers inside the partition (FLOAT32 out,
NCHW). We remove them, compose them into one per-class affine map ``logits = scores * scale +
bias`` and record it, so the partition ends in integers (NHWC) and the host applies the map.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from finn.builder.build_dataflow_config import DataflowBuildConfig
    from qonnx.core.modelwrapper import ModelWrapper

#: metadata key on the ONNX model holding the recorded affine map (JSON).
OUTPUT_AFFINE_KEY = "fcnseg_output_affine"
#: file under the build's report directory holding the same record.
OUTPUT_AFFINE_FILE = "output_affine.json"


def _per_channel(value: np.ndarray, channels: int, node_name: str) -> np.ndarray:
    flat = np.asarray(value, dtype=np.float64).reshape(-1)
    if flat.size == 1:
        return np.full(channels, flat[0])
    if flat.size == channels and max(np.asarray(value).shape) == channels:
        return flat
    raise ValueError(f"{node_name}: tail constant of shape {np.shape(value)} is not per-channel")


def cut_float_tail(model: ModelWrapper) -> tuple[ModelWrapper, dict]:
    """Remove trailing ``Mul``/``Add``/``Transpose`` nodes; return the model and the affine map.

    The map is ``{"scale": [C floats], "bias": [C floats], "layout": "NHWC", "removed": [...]}``.
    Raises ``ValueError`` if what follows the last integer op is not a per-channel affine map.
    """
    from onnx import helper
    from qonnx.core.datatype import DataType
    from qonnx.util.basic import get_by_name

    graph = model.graph
    if len(graph.output) != 1:
        raise ValueError(f"expected one graph output, found {len(graph.output)}")
    tail = []
    tensor = graph.output[0].name
    while True:
        node = model.find_producer(tensor)
        if node is None or node.op_type not in ("Mul", "Add", "Transpose"):
            break
        if node.op_type != "Transpose" and model.get_initializer(node.input[1]) is None:
            break
        if node.op_type == "Transpose" and tuple(get_by_name(node.attribute, "perm").ints) != (
            0,
            3,
            1,
            2,
        ):
            break
        tail.insert(0, node)
        tensor = node.input[0]
    shape = model.get_tensor_shape(tensor)
    channels = int(shape[-1])
    scale = np.ones(channels)
    bias = np.zeros(channels)
    for node in tail:
        if node.op_type == "Mul":
            c = _per_channel(model.get_initializer(node.input[1]), channels, node.name)
            scale, bias = scale * c, bias * c
        elif node.op_type == "Add":
            bias = bias + _per_channel(model.get_initializer(node.input[1]), channels, node.name)
    dtype = model.get_tensor_datatype(tensor)
    if not dtype.is_integer():
        raise ValueError(f"the scores before the float tail are {dtype.name}, not integers")
    for node in tail:
        graph.node.remove(node)
    for vi in [vi for vi in graph.value_info if vi.name == tensor]:
        graph.value_info.remove(vi)  # the tensor becomes a graph output: one ValueInfo only
    old = graph.output[0]
    graph.output.remove(old)
    graph.output.append(
        helper.make_tensor_value_info(tensor, old.type.tensor_type.elem_type, shape)
    )
    model.set_tensor_datatype(tensor, dtype if dtype != DataType["FLOAT32"] else DataType["INT32"])
    affine = {
        "scale": scale.tolist(),
        "bias": bias.tolist(),
        "layout": "NHWC",
        "removed": [n.op_type for n in tail],
    }
    return model, affine


def step_cut_float_tail(model: ModelWrapper, cfg: DataflowBuildConfig) -> ModelWrapper:
    """Build step: :func:`cut_float_tail`, recording the map in the model and the report dir."""
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    model, affine = cut_float_tail(model)
    model = model.transform(InferShapes())
    model = model.transform(InferDataTypes())
    model = model.transform(InferDataLayouts())
    model.set_metadata_prop(OUTPUT_AFFINE_KEY, json.dumps(affine))
    report_dir = Path(cfg.output_dir) / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / OUTPUT_AFFINE_FILE).write_text(json.dumps(affine, indent=2))
    return model
