"""Activation-scale calibration before QAT, and initialising a quantized net from its float twin.

Brevitas' learned activation scales (``ParamFromRuntimePercentileScaling``) start from statistics
of the first batches they see. Left to training, those statistics come from a net whose weights
are moving; calibrating first (``brevitas.graph.calibrate.calibration_mode``: quantization
disabled, percentile statistics collected over a few batches, then frozen into the scale
parameters) starts QAT from scales that fit the trained float activations.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from fcnseg.errors import UserError


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Run ``batches`` (input tensors) through ``model`` in calibration mode; return the count.

    The model comes back in train mode (calibration runs in train mode so BatchNorm statistics
    adapt to the same batches).
    """
    from brevitas.graph.calibrate import calibration_mode

    count = 0
    model.train()
    with calibration_mode(model):
        for x in batches:
            model(x)
            count += 1
    model.train()
    return count


def init_from_float(model: nn.Module, checkpoint: str | Path) -> list[str]:
    """Copy a float twin's weights (conv, BN) into ``model``; return the keys left untouched.

    The float twin has the same parameter names as the quantized net, minus the quantizers'
    own parameters, which calibration then sets. A tensor whose shape differs (another topology)
    is a :class:`UserError`.
    """
    from fcnseg.quantize.models.io import load_checkpoint

    float_model, meta = load_checkpoint(checkpoint)
    if meta["model_config"].get("quantized", True):
        raise UserError(f"init_from {checkpoint} is not a float checkpoint")
    source = float_model.state_dict()
    target = model.state_dict()
    for key, value in source.items():
        if key not in target:
            raise UserError(f"init_from {checkpoint}: the quantized net has no tensor {key}")
        if target[key].shape != value.shape:
            raise UserError(
                f"init_from {checkpoint}: {key} is {tuple(value.shape)}, the quantized net "
                f"needs {tuple(target[key].shape)}"
            )
    model.load_state_dict(source, strict=False)
    return sorted(set(target) - set(source))
