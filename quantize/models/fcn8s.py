"""FCN-8s: FCN-16s plus a second skip from pool3, fused by sum at 1/8."""

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


class FCN8s(FCNBase):
    """Two sum fusions under ONE shared quantizer ``quant_fuse`` (one scale ``s`` for all scores).

    ``fuse_pool4 = upscore2(q(score_fr)) + q(score_pool4(pool4))`` at 1/16, then
    ``upscore_pool4(q(fuse_pool4)) + q(score_pool3(pool3))`` at 1/8; upsampling is
    nearest-neighbour x2. Because ``fuse_pool4`` is a sum of integers times ``s``, requantizing it
    with the same ``s`` is an exact integer clamp: no rounding ties, so Brevitas, qonnx and finn's
    thresholds agree bit for bit (two separate scales put rare near-ties in that requantization,
    measured 1-LSB mismatches in finn). The output is an integer sum times ``s`` (bias 0).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        if cfg.arch != "fcn8s":
            raise ValueError(f"FCN8s needs arch 'fcn8s', got {cfg.arch!r}")
        super().__init__(cfg)
        n = cfg.num_classes
        self.score_pool4 = make_conv(cfg, cfg.widths[3], n, 1, cfg.io_bits, bias=True)
        self.score_pool3 = make_conv(cfg, cfg.widths[2], n, 1, cfg.io_bits, bias=True)
        self.quant_fuse = make_fuse_quant(cfg)
        self.upscore2 = nn.Upsample(scale_factor=2, mode="nearest")
        self.upscore_pool4 = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pixels(x)
        pool3, pool4, pool5 = self.features(h)
        score_fr = self.head(pool5)  # 1/32
        upscore2 = self.upscore2(self.quant_fuse(score_fr))  # 1/16
        score_pool4 = self.quant_fuse(self.score_pool4(pool4))  # 1/16
        fuse_pool4 = upscore2 + score_pool4  # 1/16
        upscore_pool4 = self.upscore_pool4(self.quant_fuse(fuse_pool4))  # 1/8
        score_pool3 = self.quant_fuse(self.score_pool3(pool3))  # 1/8
        return upscore_pool4 + score_pool3  # 1/8

    def output_scale_bias(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.cfg.quantized:
            return self._ones_zeros()
        n = self.cfg.num_classes
        return np.full(n, act_scale(self.quant_fuse)), np.zeros(n)
