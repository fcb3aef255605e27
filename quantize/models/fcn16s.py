"""FCN-16s: FCN-32s plus one skip from pool4, fused by sum at 1/16."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fcnseg.quantize.models.common import (
    FCNBase,
    ModelConfig,
    act_scale,
    make_conv,
    make_fuse_quant,
)


class FCN16s(FCNBase):
    """``upscore2(score_fr) + score_pool4(pool4)``, both requantized by ``quant_fuse``.

    One quantizer instance for both addends gives them one scale, so finn's ``AddStreams`` adds
    integers; ``upscore2`` is nearest-neighbour x2 (finn ``UpsampleNearestNeighbour``). The output
    is an integer sum times that shared scale (bias 0).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        if cfg.arch != "fcn16s":
            raise ValueError(f"FCN16s needs arch 'fcn16s', got {cfg.arch!r}")
        super().__init__(cfg)
        n = cfg.num_classes
        self.score_pool4 = make_conv(cfg, cfg.widths[3], n, 1, cfg.io_bits, bias=True)
        self.quant_fuse = make_fuse_quant(cfg)
        self.upscore2 = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pixels(x)
        _, pool4, pool5 = self.features(h)
        score_fr = self.head(pool5)  # 1/32
        upscore2 = self.upscore2(self.quant_fuse(score_fr))  # 1/16
        score_pool4 = self.quant_fuse(self.score_pool4(pool4))  # 1/16
        return upscore2 + score_pool4  # 1/16

    def output_scale_bias(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.cfg.quantized:
            return self._ones_zeros()
        n = self.cfg.num_classes
        return np.full(n, act_scale(self.quant_fuse)), np.zeros(n)
