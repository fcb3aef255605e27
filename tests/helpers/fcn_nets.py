"""Tiny FCNs for the quantize tests (few channels, so a forward pass takes milliseconds).

A helpers module (imports torch: import it once torch is known to be there), used by
tests/quantize/test_models.py and test_export.py. ``calibrated`` gives a net with realistic
BatchNorm statistics and activation scales (a fresh Brevitas net has every activation scale at
its init value, which quantizes almost everything to zero).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fcnseg.quantize.models import ModelConfig, build_model

TINY = dict(num_classes=3, widths=(4, 4, 8, 8, 8), depths=(1, 1, 1, 1, 1), head_width=16)


def tiny_config(arch: str, **changes: object) -> ModelConfig:
    return ModelConfig(arch=arch, **{**TINY, **changes})


def photos(size: tuple[int, int] = (64, 64)) -> torch.Tensor:
    """scikit-image's bundled photos (astronaut, chelsea, coffee), centre-cropped, NCHW 0..255."""
    from skimage import data

    h, w = size
    batch = []
    for name in ("astronaut", "chelsea", "coffee"):
        img = getattr(data, name)()
        y0, x0 = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
        batch.append(img[y0 : y0 + h, x0 : x0 + w])
    return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float()


def calibrate(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """BatchNorm running stats from ``x`` (train-mode pass), then Brevitas activation scales."""
    from brevitas.graph.calibrate import calibration_mode

    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    if model.cfg.quantized:
        with torch.no_grad(), calibration_mode(model):
            model(x)
    return model.eval()


def calibrated(arch: str, seed: int = 0, size: tuple[int, int] = (64, 64), **changes: object):
    torch.manual_seed(seed)
    model = build_model(tiny_config(arch, **changes))
    return calibrate(model, photos(size))
