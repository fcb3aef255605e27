"""Conversion of a streamlined FCN to finn-plus HW layers.

finn's ``step_convert_to_hw`` converts ``Upsample`` nodes only; PyTorch's ``nn.Upsample`` exports
``Resize``. ``InferUpsample`` accepts both, so we run it on the (already NHWC) ``Resize`` nodes
first, then finn's own conversion, which also turns forks into ``DuplicateStreams`` and the skip
``Add`` of two streams into ``ElementwiseAdd``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from finn.builder.build_dataflow_config import DataflowBuildConfig
    from qonnx.core.modelwrapper import ModelWrapper


def step_fcn_convert_to_hw(model: ModelWrapper, cfg: DataflowBuildConfig) -> ModelWrapper:
    """Nearest-neighbour ``Resize`` -> ``UpsampleNearestNeighbour``, then finn's conversion."""
    from finn.builder.build_dataflow_steps import step_convert_to_hw
    from finn.transformation.fpgadataflow.convert_to_hw.upsample import InferUpsample
    from qonnx.transformation.infer_data_layouts import InferDataLayouts

    model = model.transform(InferDataLayouts())
    if model.get_nodes_by_op_type("Resize") or model.get_nodes_by_op_type("Upsample"):
        model = model.transform(InferUpsample())
    model = step_convert_to_hw(model, cfg)
    left = [n.op_type for n in model.graph.node if n.op_type in ("Resize", "Upsample")]
    if left:
        raise ValueError(
            f"{len(left)} {left[0]} node(s) could not become UpsampleNearestNeighbour "
            "(only nearest-neighbour, integer NHWC inputs are supported)"
        )
    return model
