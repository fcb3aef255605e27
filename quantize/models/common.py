"""Shared parts of the FCN family: quantizers, layer factories, VGG-style backbone, head.

Every net is ``input quantizer -> 5 VGG stages (3x3 same convs + BN + ReLU, 2x2/2 max-pool) ->
head`` where the head is the classifier's FC layers written as convolutions (the FCN paper's
``fc6``/``fc7``/``score_fr``). With ``quantized=False`` the same topology is built from plain torch
layers (the float twin), with the same parameter names, so a float checkpoint can initialise QAT.

The quantized nets are written for finn-plus (see ``docs/finn-notes.md``):

- the input is raw pixels 0..255; the net multiplies by 1/255 into an 8-bit unsigned quantizer with
  a *constant* scale 1/255, so the integer the accelerator receives is the pixel itself;
- conv -> BatchNorm -> QuantReLU everywhere (finn turns BN + ReLU quantizer into thresholds);
- score convs have a float bias (an ``Int32Bias`` breaks qonnx ``ExtractBiasFromConv``);
- skip fusion (``fcn16s``/``fcn8s``) sums two tensors requantized by ONE shared quantizer instance,
  so finn's ``AddStreams`` sees equal scales; in-net upsampling is nearest-neighbour x2.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from brevitas.core.restrict_val import RestrictValueType
from brevitas.core.scaling import ScalingImplType
from brevitas.nn import QuantConv2d, QuantIdentity, QuantReLU
from brevitas.quant import Int8ActPerTensorFloat, Int8WeightPerChannelFloat, Uint8ActPerTensorFloat
from torch import nn

# ModelConfig is plain data read without torch (hw, benchmarks): defined in fcnseg.quantize.config,
# re-exported here for the model modules and older imports.
from fcnseg.quantize.config import NUM_STAGES as NUM_STAGES
from fcnseg.quantize.config import OUTPUT_STRIDES as OUTPUT_STRIDES
from fcnseg.quantize.config import ModelConfig as ModelConfig

#: the accelerator's input is UINT8 pixels; the net maps them to [0, 1] with this fixed factor.
PIXEL_SCALE = 1.0 / 255.0


# --------------------------------------------------------------------------------------------
# Quantizers (Brevitas injectors; bit widths are passed per layer as kwargs)
# --------------------------------------------------------------------------------------------
class WeightQuant(Int8WeightPerChannelFloat):
    """Signed narrow-range weights, per-output-channel float scale from the weights' max."""


class ActQuant(Uint8ActPerTensorFloat):
    """Unsigned activations after ReLU, per-tensor learned scale initialised from statistics."""


class ScoreQuant(Int8ActPerTensorFloat):
    """Signed per-tensor quantizer shared by both addends of a skip fusion."""


class PixelQuant(Uint8ActPerTensorFloat):
    """The input quantizer: unsigned, FIXED scale (threshold 1.0 over 2**bits - 1 levels).

    With 8 bits and input ``pixel / 255`` the integer it produces is the pixel itself, so the
    accelerator takes raw UINT8 and no scale is learned for the input.
    """

    scaling_impl_type = ScalingImplType.CONST
    restrict_scaling_type = RestrictValueType.FP
    max_val = 1.0


# --------------------------------------------------------------------------------------------
# Layer factories (quantized or float twin)
# --------------------------------------------------------------------------------------------
def make_conv(
    cfg: ModelConfig, cin: int, cout: int, kernel: int, bits: int, bias: bool = False
) -> nn.Module:
    """A same-padded stride-1 conv: ``QuantConv2d`` (float bias if any) or ``nn.Conv2d``."""
    pad = kernel // 2
    if not cfg.quantized:
        return nn.Conv2d(cin, cout, kernel, padding=pad, bias=bias)
    return QuantConv2d(
        cin,
        cout,
        kernel,
        padding=pad,
        bias=bias,
        weight_quant=WeightQuant,
        weight_bit_width=bits,
        bias_quant=None,  # float bias: Int32Bias breaks qonnx ExtractBiasFromConv
        return_quant_tensor=False,
    )


def make_relu(cfg: ModelConfig) -> nn.Module:
    """ReLU; quantized to ``act_bits`` unsigned, returning a QuantTensor for the next conv."""
    if not cfg.quantized:
        return nn.ReLU(inplace=False)
    return QuantReLU(act_quant=ActQuant, bit_width=cfg.act_bits, return_quant_tensor=True)


def make_pixel_quant(cfg: ModelConfig) -> nn.Module:
    """The input quantizer (identity for the float twin)."""
    if not cfg.quantized:
        return nn.Identity()
    return QuantIdentity(act_quant=PixelQuant, bit_width=cfg.io_bits, return_quant_tensor=True)


def make_fuse_quant(cfg: ModelConfig) -> nn.Module:
    """The quantizer shared by both addends of a skip fusion (identity for the float twin)."""
    if not cfg.quantized:
        return nn.Identity()
    return QuantIdentity(act_quant=ScoreQuant, bit_width=cfg.io_bits, return_quant_tensor=False)


def make_dropout(cfg: ModelConfig) -> nn.Module:
    return nn.Dropout2d(cfg.dropout) if cfg.dropout > 0 else nn.Identity()


# --------------------------------------------------------------------------------------------
# Backbone topology table and receptive field
# --------------------------------------------------------------------------------------------
def backbone_table(cfg: ModelConfig) -> list[tuple[str, int, int, int]]:
    """The backbone as rows ``(name, cin, cout, bits)`` of 3x3 convs, ``("poolN", 0, 0, 0)`` rows.

    Caffe/VGG names: ``conv{stage}_{i}``; stage ``s`` ends in ``pool{s}`` (stride ``2**s``).
    The first conv sees the 8-bit input and gets ``io_bits`` weights.
    """
    rows: list[tuple[str, int, int, int]] = []
    cin = 3
    for stage, (width, depth) in enumerate(zip(cfg.widths, cfg.depths, strict=True), start=1):
        for i in range(1, depth + 1):
            bits = cfg.io_bits if not rows else cfg.weight_bits
            rows.append((f"conv{stage}_{i}", cin, width, bits))
            cin = width
        rows.append((f"pool{stage}", 0, 0, 0))
    return rows


def receptive_field(cfg: ModelConfig) -> int:
    """Receptive field (pixels, per axis) of one output cell, computed from the topology.

    Interval propagation along one axis: every cell of every map carries the [lo, hi] input
    pixels it depends on, through the 3x3 convs, 2x2/2 pools, the head, nearest x2 upsampling
    (cell ``i`` reads coarse cell ``i // 2``) and the skip sums (union of both addends). The
    result is the widest interval among cells far from the image border (with nearest
    upsampling the interval depends on a cell's phase, so FCN-16s/8s see a little more than
    their coarse path alone).
    """
    n = 64 * 32  # a 1-D "image" long enough that its middle cells never see the border

    def conv(m: tuple[np.ndarray, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = m
        r = k // 2
        lo_p = np.pad(lo, r, mode="edge")
        hi_p = np.pad(hi, r, mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view
        return windows(lo_p, k).min(axis=1), windows(hi_p, k).max(axis=1)

    def pool(m: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = m
        return np.minimum(lo[0::2], lo[1::2]), np.maximum(hi[0::2], hi[1::2])

    def upsample(m: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return np.repeat(m[0], 2), np.repeat(m[1], 2)

    def add(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]):
        return np.minimum(a[0], b[0]), np.maximum(a[1], b[1])

    m = (np.arange(n), np.arange(n))
    taps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, _, _, _ in backbone_table(cfg):
        if name.startswith("pool"):
            m = pool(m)
            taps[name] = m
        else:
            m = conv(m, 3)
    m = conv(m, cfg.head_kernel)  # fc6; fc7 and the score convs are 1x1
    if cfg.arch in ("fcn16s", "fcn8s"):
        m = add(upsample(m), taps["pool4"])
    if cfg.arch == "fcn8s":
        m = add(upsample(m), taps["pool3"])
    lo, hi = m
    middle = slice(len(lo) // 4, 3 * len(lo) // 4)
    return int((hi[middle] - lo[middle]).max() + 1)


class VGGBackbone(nn.Module):
    """Five VGG stages built from :func:`backbone_table`; returns (pool3, pool4, pool5)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        stages: list[OrderedDict[str, nn.Module]] = [OrderedDict() for _ in range(NUM_STAGES)]
        for name, cin, cout, bits in backbone_table(cfg):
            stage = int(name[4]) - 1
            if name.startswith("pool"):
                stages[stage][name] = nn.MaxPool2d(2, stride=2)
                continue
            suffix = name[4:]  # "1_1"
            stages[stage][name] = make_conv(cfg, cin, cout, 3, bits)
            stages[stage][f"bn{suffix}"] = nn.BatchNorm2d(cout)
            stages[stage][f"relu{suffix}"] = make_relu(cfg)
        for i, layers in enumerate(stages, start=1):
            self.add_module(f"stage{i}", nn.Sequential(layers))

    def forward(self, x: torch.Tensor) -> tuple[Any, Any, Any]:
        h = self.stage1(x)  # 1/2
        h = self.stage2(h)  # 1/4
        pool3 = self.stage3(h)  # 1/8
        pool4 = self.stage4(pool3)  # 1/16
        pool5 = self.stage5(pool4)  # 1/32
        return pool3, pool4, pool5


# --------------------------------------------------------------------------------------------
# The FCN base class
# --------------------------------------------------------------------------------------------
class FCNBase(nn.Module):
    """Input quantizer + backbone + FC-as-conv head; subclasses add the skip fusion.

    ``forward(x)`` takes pixels 0..255 (float NCHW, H and W multiples of 32) and returns the
    score map at ``output_stride`` (float logits). For a quantized net
    ``logits = q * output_scale[c] + output_bias[c]`` with integer ``q`` (see
    :meth:`output_scale_bias`).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.output_stride = cfg.output_stride
        self.quant_inp = make_pixel_quant(cfg)
        self.features = VGGBackbone(cfg)
        c5 = cfg.widths[-1]
        # fc6: the first FC layer as a conv (paper: 7x7; here head_kernel, same-padded)
        self.fc6 = make_conv(cfg, c5, cfg.head_width, cfg.head_kernel, cfg.weight_bits)
        self.bn6 = nn.BatchNorm2d(cfg.head_width)
        self.relu6 = make_relu(cfg)
        self.drop6 = make_dropout(cfg)
        # fc7: the second FC layer as a 1x1 conv
        self.fc7 = make_conv(cfg, cfg.head_width, cfg.head_width, 1, cfg.weight_bits)
        self.bn7 = nn.BatchNorm2d(cfg.head_width)
        self.relu7 = make_relu(cfg)
        self.drop7 = make_dropout(cfg)
        # score_fr: the classifier layer as a 1x1 conv (8-bit weights, float bias)
        self.score_fr = make_conv(cfg, cfg.head_width, cfg.num_classes, 1, cfg.io_bits, bias=True)

    def pixels(self, x: torch.Tensor) -> Any:
        """Raw pixels 0..255 -> the 8-bit input quantizer with fixed scale 1/255."""
        return self.quant_inp(x * PIXEL_SCALE)

    def head(self, pool5: Any) -> torch.Tensor:
        """fc6 -> fc7 -> score_fr on the 1/32 features."""
        h = self.drop6(self.relu6(self.bn6(self.fc6(pool5))))  # 1/32
        h = self.drop7(self.relu7(self.bn7(self.fc7(h))))  # 1/32
        return self.score_fr(h)  # 1/32

    def output_scale_bias(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-class ``(output_scale, output_bias)`` as float64 arrays of shape (num_classes,).

        The net's integer scores are exactly ``round((logits - bias) / scale)``. The float twin
        returns ones and zeros (its logits are not integer multiples of anything).
        """
        raise NotImplementedError

    def _ones_zeros(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.cfg.num_classes
        return np.ones(n, dtype=np.float64), np.zeros(n, dtype=np.float64)


def act_scale(module: nn.Module) -> float:
    """The (per-tensor, eval-mode) scale of a Brevitas activation quantizer module."""
    scale = module.act_quant.scale()
    if scale is None:  # not cached yet: brevitas caches act metadata on an eval forward
        raise RuntimeError(f"{type(module).__name__} has no scale yet; run one eval forward")
    return float(scale.detach().reshape(-1)[0])


def weight_scale(conv: nn.Module) -> np.ndarray:
    """Per-output-channel weight scale of a QuantConv2d (float64, shape (out_channels,))."""
    scale = conv.quant_weight().scale.detach().double().reshape(-1).numpy()
    return np.broadcast_to(scale, (conv.out_channels,)).copy()
