"""Small Brevitas FCNs for the exactness tests, with parameters that stress the exact path.

``stressed_net`` builds a tiny FCN-32s/16s/8s at the given bit widths, settles its batch norms
and activation scales on random pixels, and then makes its batch norms awkward on purpose: about
a third of the channels get a negative ``gamma`` (finn moves the sign into the weights) and the
biases are random, so that thresholds land anywhere between integers, not on round values.
"""

from __future__ import annotations

import numpy as np

TINY = dict(widths=(4, 4, 8, 8, 8), depths=(1, 1, 1, 1, 1), head_width=8, head_kernel=3)


def stressed_net(
    arch: str,
    *,
    weight_bits: int = 4,
    act_bits: int = 4,
    io_bits: int = 8,
    num_classes: int = 4,
    seed: int = 0,
    negative_gamma: float = 0.3,
    tile: tuple[int, int] = (64, 64),
):
    import torch
    from torch import nn

    from fcnseg.quantize.models import ModelConfig, build_model

    torch.manual_seed(seed)
    cfg = ModelConfig(
        arch=arch,
        num_classes=num_classes,
        weight_bits=weight_bits,
        act_bits=act_bits,
        io_bits=io_bits,
        **TINY,
    )
    model = build_model(cfg)
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, *tile) * 255)
        gen = torch.Generator().manual_seed(seed + 1)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                flip = torch.rand(n, generator=gen) < negative_gamma
                module.weight.mul_(torch.where(flip, -1.0, 1.0))
                module.bias.add_(torch.randn(n, generator=gen) * 0.3)
        model(torch.rand(2, 3, *tile) * 255)  # scales follow the changed batch norms
    return model.eval()


def random_pixels(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def brevitas_scores(model, pixels: np.ndarray) -> np.ndarray:
    """Integer scores NHWC of float64 Brevitas on uint8 pixels NHWC."""
    import torch

    from fcnseg.quantize.exact.extract import float64_copy

    m = float64_copy(model)
    x = torch.from_numpy(np.array(pixels)).permute(0, 3, 1, 2).double()
    with torch.no_grad():
        logits = m(x).permute(0, 2, 3, 1).numpy()
        scale, bias = m.output_scale_bias()
    return np.rint((logits - bias) / scale).astype(np.int64)
