"""Streamlining for FCN graphs: skip branches, forks and nearest-neighbour upsampling.

finn's default ``step_streamline`` handles a chain (FCN-32s) but leaves float ``Mul``/``Transpose``
nodes stranded at the forks and joins of FCN-16s/8s skips, and keeps ``Resize`` in NCHW, so the
dataflow partition later fails ("unsupported layers in between FINN operators"). The fix measured
on finn-plus 1.6.1 (docs/finn-notes.md): move linear ops and transposes past forks and past the
skip ``Add`` joins, streamline again, and repeat until the graph stops changing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from finn.builder.build_dataflow_config import DataflowBuildConfig
    from qonnx.core.modelwrapper import ModelWrapper

#: upper bound on fork/join/streamline rounds; FCN-8s settles in 2-3.
MAX_ROUNDS = 6


def _signature(model: ModelWrapper) -> tuple[str, ...]:
    return tuple(node.op_type for node in model.graph.node)


def _move_past_forks_and_joins(model: ModelWrapper) -> ModelWrapper:
    from finn.transformation.streamline.reorder import (
        MoveLinearPastEltwiseAdd,
        MoveLinearPastFork,
        MoveTransposePastFork,
        MoveTransposePastJoinAdd,
    )

    model = model.transform(MoveLinearPastFork())
    model = model.transform(MoveTransposePastFork())
    model = model.transform(MoveLinearPastEltwiseAdd())
    return model.transform(MoveTransposePastJoinAdd())


def step_fcn_streamline(model: ModelWrapper, cfg: DataflowBuildConfig) -> ModelWrapper:
    """Streamline an FCN: finn's streamlining plus fork/join moves, repeated to a fixed point.

    After it, every float scale of the body is absorbed into thresholds, convolutions are lowered
    to ``Im2Col`` + ``MatMul`` in NHWC, max-pools and ``Resize`` nodes are NHWC, and what is left in
    float is the tail after the last integer op (cut by :func:`step_cut_float_tail`).
    """
    from finn.transformation.streamline import Streamline, absorb
    from finn.transformation.streamline.reorder import MakeMaxPoolNHWC, MakeScaleResizeNHWC
    from qonnx.transformation.general import RemoveUnusedTensors
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul

    from fcnseg.hw.steps.transforms import MergeForkedTransposes, RemoveIdentityInputThreshold

    model = model.transform(absorb.AbsorbScalarBiasIntoMultiThreshold())
    model = model.transform(Streamline())
    # Streamline() is the expensive part (~4 s on the default FCN-8s): run it again only when
    # the moves changed the graph.
    for _ in range(MAX_ROUNDS):
        before = _signature(model)
        model = _move_past_forks_and_joins(model)
        if _signature(model) == before:
            break
        model = model.transform(Streamline())
    model = model.transform(LowerConvsToMatMul())
    for round_ in range(MAX_ROUNDS):
        before = _signature(model)
        model = model.transform(MergeForkedTransposes())
        model = model.transform(MakeMaxPoolNHWC())
        model = model.transform(InferDataLayouts())
        model = model.transform(MakeScaleResizeNHWC())
        model = model.transform(absorb.AbsorbTransposeIntoMultiThreshold())
        model = model.transform(absorb.AbsorbConsecutiveTransposes())
        model = _move_past_forks_and_joins(model)
        if round_ > 0 and _signature(model) == before:
            break
        model = model.transform(Streamline())
        model = model.transform(InferDataLayouts())
    model = model.transform(RemoveIdentityInputThreshold())
    model = model.transform(InferDataLayouts())
    return model.transform(RemoveUnusedTensors())
