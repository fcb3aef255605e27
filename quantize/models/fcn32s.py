"""FCN-32s: the VGG-style backbone and the FC-as-conv head, scores at 1/32 (no skips)."""

from __future__ import annotations

import numpy as np
import torch

from fcnseg.quantize.models.common import FCNBase, ModelConfig, act_scale, weight_scale


class FCN32s(FCNBase):
    """Scores straight from ``score_fr`` at stride 32; the host upsamples them.

    Quantized, the output is ``score_fr``'s integer accumulator times
    ``scale(relu7) * scale(score_fr weight)[c]`` plus its float bias.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        if cfg.arch != "fcn32s":
            raise ValueError(f"FCN32s needs arch 'fcn32s', got {cfg.arch!r}")
        super().__init__(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pixels(x)
        _, _, pool5 = self.features(h)  # 1/32
        return self.head(pool5)  # 1/32

    def output_scale_bias(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.cfg.quantized:
            return self._ones_zeros()
        scale = act_scale(self.relu7) * weight_scale(self.score_fr)
        bias = self.score_fr.bias.detach().double().numpy().copy()
        return scale, bias
