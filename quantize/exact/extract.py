"""The exact record (:mod:`.record`) of a Brevitas FCN from ``fcnseg.quantize.models``.

Every parameter is read from the model's state (the checkpoint's float32 values) and turned into
the rational it denotes; the quantizers' derived values are computed from their definitions in
Brevitas 0.13.4, exactly:

- weights: per-output-channel scale ``max|w| / (2^(b-1) - 1)`` (``Int8WeightPerChannelFloat``:
  abs-max statistics, narrow range), or one scale from the whole tensor's ``max|w|``
  (``Int8WeightPerTensorFloat``, Brevitas's default), integers
  ``clamp(round_half_even(w / scale))``;
- activations: scale ``|value| / t`` with ``t = 2^b - 1`` unsigned, ``2^(b-1)`` signed
  (``IntScaling``), ``value`` the learned parameter (or, while Brevitas is still collecting
  statistics, their running average, as its eval mode does); the input quantizer has the
  constant scale ``1/255`` and passes the pixels through unchanged;
- batch norm: the running statistics, ``gamma``, ``beta`` and ``eps`` of the module.

Each derived value is checked against what Brevitas itself computes in float64 (integers equal,
scales within float64 rounding): a quantizer configured differently is refused, not guessed.
"""

from __future__ import annotations

import copy
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from fcnseg.quantize.exact.record import BatchNorm, ExactNet, Quantizer, Step
from fcnseg.quantize.models.common import PIXEL_SCALE, FCNBase, backbone_table

#: relative tolerance between an exact derived scale and Brevitas's float64 value of it.
SCALE_RTOL = 1e-14


class UnsupportedQuantizer(ValueError):
    """The model uses a quantizer whose exact meaning this module does not know."""


def _fractions(t: torch.Tensor) -> tuple[Fraction, ...]:
    return tuple(Fraction(float(v)) for v in t.detach().double().reshape(-1).tolist())


def _check_scale(exact: Fraction | tuple[Fraction, ...], brevitas: torch.Tensor, what: str) -> None:
    ours = np.array([float(v) for v in (exact if isinstance(exact, tuple) else (exact,))])
    theirs = brevitas.detach().double().reshape(-1).numpy()
    theirs = np.broadcast_to(theirs, ours.shape)
    if not np.allclose(ours, theirs, rtol=SCALE_RTOL, atol=0):
        raise UnsupportedQuantizer(f"{what}: exact scale {ours[:3]} != Brevitas {theirs[:3]}")


def _round_half_even_ratio(num: np.ndarray, den: np.ndarray, mult: int) -> np.ndarray:
    """``round_half_even(num * mult / den)`` exactly for float arrays (den > 0).

    float64 gets it right unless the ratio is within 1e-6 of a half-integer; those (rare)
    entries are redone in rationals.
    """
    r = num * mult / den
    out = np.round(r)
    near = np.abs(np.abs(r - np.floor(r)) - 0.5) < 1e-6
    for i in zip(*np.nonzero(near), strict=True):
        exact = Fraction(float(num[i])) * mult / Fraction(float(den[i]))
        out[i] = round(exact)  # Python's round of a Fraction is half-to-even
    return out.astype(np.int64)


def weight_integers(
    conv: nn.Module, name: str | None = None
) -> tuple[np.ndarray, tuple[Fraction, ...]]:
    """Exact integer weights (OIHW) and per-output-channel scales of a ``QuantConv2d``.

    A per-tensor weight quantizer (one scale from the whole tensor's ``max|w|``) gives the same
    scale to every channel. ``name`` labels the layer in errors (default: the module's repr).
    """
    label = name or str(conv)
    proxy = conv.weight_quant
    if not proxy.is_signed or not proxy.is_narrow_range:
        raise UnsupportedQuantizer(f"{label}: weights must be signed narrow-range")
    bits = int(proxy.bit_width())
    top = 2 ** (bits - 1) - 1
    w = conv.weight.detach().double().numpy()
    quant = conv.quant_weight()
    per_tensor = quant.scale.numel() == 1 and w.shape[0] > 1
    absmax = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    if per_tensor:
        absmax = np.full_like(absmax, np.abs(w).max())
    if np.any(absmax == 0):
        raise UnsupportedQuantizer(f"{label}: an output channel has all-zero weights")
    scales = tuple(Fraction(float(m)) / top for m in absmax)
    den = np.broadcast_to(absmax.reshape(-1, 1, 1, 1), w.shape)
    ints = np.clip(_round_half_even_ratio(w, den, top), -top, top)
    _check_scale(scales, quant.scale, f"{label} weight")
    if not np.array_equal(ints, quant.int().detach().numpy().astype(np.int64)):
        raise UnsupportedQuantizer(f"{label}: exact integer weights differ from Brevitas's")
    return ints, scales


def act_quantizer(name: str, module: nn.Module) -> Quantizer:
    """The exact quantizer of a Brevitas ``QuantReLU``/``QuantIdentity`` (per-tensor scale)."""
    proxy = module.act_quant
    bits = int(proxy.bit_width())
    signed, narrow = bool(proxy.is_signed), bool(proxy.is_narrow_range)
    if signed:
        lo, hi, divisor = -(2 ** (bits - 1)) + narrow, 2 ** (bits - 1) - 1, 2 ** (bits - 1)
    else:
        lo, hi, divisor = 0, 2**bits - 1 - narrow, 2**bits - 1 - narrow
    scaling = proxy.fused_activation_quant_proxy.tensor_quant.scaling_impl
    value = getattr(scaling, "value", None)
    if value is None:
        raise UnsupportedQuantizer(f"{name}: no learned scale parameter")
    if int(getattr(scaling, "counter", 1)) <= int(getattr(scaling, "collect_stats_steps", 0)):
        value = scaling.buffer  # still collecting statistics: eval mode reads their average
    scale = abs(Fraction(float(value.detach().double().reshape(-1)[0]))) / divisor
    _check_scale(scale, proxy.scale(), name)
    return Quantizer(name, scale, lo, hi)


def batch_norm(bn: nn.BatchNorm2d) -> BatchNorm:
    """The exact eval-mode parameters of a ``BatchNorm2d`` (running statistics, affine, eps)."""
    return BatchNorm(
        mean=_fractions(bn.running_mean),
        var=_fractions(bn.running_var),
        gamma=_fractions(bn.weight),
        beta=_fractions(bn.bias),
        eps=Fraction(float(bn.eps)),
    )


class _Builder:
    """Collects steps while tracking the scale of every integer tensor."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.scales: dict[str, Fraction] = {}

    def conv(self, name, src, dst, conv, bn=None, quant: Quantizer | None = None) -> None:
        ints, scales = weight_integers(conv)
        bias = _fractions(conv.bias) if conv.bias is not None else None
        self.steps.append(
            Step(
                op="conv",
                name=name,
                src=src,
                dst=dst,
                weight=ints,
                padding=int(conv.padding[0]),
                in_scale=self.scales[src],
                weight_scale=scales,
                bias=bias,
                bn=None if bn is None else batch_norm(bn),
                quant=quant,
            )
        )
        if quant is not None:
            self.scales[dst] = quant.scale

    def same_scale(self, op: str, name: str, src: str, dst: str, **kw) -> None:
        self.steps.append(Step(op=op, name=name, src=src, dst=dst, **kw))
        self.scales[dst] = self.scales[src]

    def requant(self, name: str, src: str, dst: str, quant: Quantizer) -> None:
        self.steps.append(
            Step(op="requant", name=name, src=src, dst=dst, in_scale=self.scales[src], quant=quant)
        )
        self.scales[dst] = quant.scale


def _check_pixel_quant(model: FCNBase) -> None:
    """The model's ``quant_inp`` must be the pixel quantizer (:func:`check_pixel_quant`)."""
    check_pixel_quant(model.quant_inp)


def check_pixel_quant(quant: nn.Module) -> None:
    """The input quantizer must map ``pixel * PIXEL_SCALE`` back to the pixel (UINT8, 1/255)."""
    proxy = quant.act_quant
    bits, signed = int(proxy.bit_width()), bool(proxy.is_signed)
    scale = float(proxy.scale().reshape(-1)[0])
    # the constant (1.0 / 255) may be held in float32: its exact meaning is 1/255 either way
    if bits != 8 or signed or abs(scale - PIXEL_SCALE) > 1e-7 * PIXEL_SCALE:
        raise UnsupportedQuantizer(
            f"input quantizer must be UINT8 with scale 1/255, got {bits} bits, scale {scale}"
        )


def float64_copy(model: nn.Module) -> nn.Module:
    """A float64 eval-mode copy of a Brevitas model with no cached quant tensors (an export or
    a float32 forward leaves float32 ones in the proxies, which ``scale()`` would return)."""
    m = copy.deepcopy(model).double().eval()
    for module in m.modules():
        if getattr(module, "_cached_act", None) is not None:
            module._cached_act = None
    return m


def exact_net(model: FCNBase) -> ExactNet:
    """The exact record of a quantized FCN-32s/16s/8s (the model is not modified)."""
    cfg = model.cfg
    if not cfg.quantized:
        raise UnsupportedQuantizer("the float twin has no exact integer meaning")
    m = float64_copy(model)
    with torch.no_grad():
        _check_pixel_quant(m)
        b = _Builder()
        b.scales["pixels"] = Fraction(1, 255)
        src = "pixels"
        for name, _, _, _ in backbone_table(cfg):
            stage = getattr(m.features, f"stage{name[4]}")
            if name.startswith("pool"):
                b.same_scale("pool", name, src, name, k=2)
            else:
                suffix = name[4:]
                relu = getattr(stage, f"relu{suffix}")
                quant = act_quantizer(f"relu{suffix}", relu)
                b.conv(name, src, name, getattr(stage, name), getattr(stage, f"bn{suffix}"), quant)
            src = name
        b.conv("fc6", src, "fc6", m.fc6, m.bn6, act_quantizer("relu6", m.relu6))
        b.conv("fc7", "fc6", "fc7", m.fc7, m.bn7, act_quantizer("relu7", m.relu7))
        if cfg.arch == "fcn32s":
            b.conv("score_fr", "fc7", "scores", m.score_fr)
            return ExactNet(cfg.arch, tuple(b.steps))
        fuse = act_quantizer("quant_fuse", m.quant_fuse)
        b.conv("score_fr", "fc7", "score_fr", m.score_fr, quant=fuse)
        b.same_scale("upsample", "upscore2", "score_fr", "upscore2", k=2)
        b.conv("score_pool4", "pool4", "score_pool4", m.score_pool4, quant=fuse)
        if cfg.arch == "fcn16s":
            b.same_scale("add", "fuse_pool4", "upscore2", "scores", src2="score_pool4")
            return ExactNet(cfg.arch, tuple(b.steps))
        b.same_scale("add", "fuse_pool4", "upscore2", "fuse_pool4", src2="score_pool4")
        b.requant("fuse_pool4_q", "fuse_pool4", "fuse_pool4_q", fuse)
        b.same_scale("upsample", "upscore_pool4", "fuse_pool4_q", "upscore_pool4", k=2)
        b.conv("score_pool3", "pool3", "score_pool3", m.score_pool3, quant=fuse)
        b.same_scale("add", "fuse_pool3", "upscore_pool4", "scores", src2="score_pool3")
        return ExactNet(cfg.arch, tuple(b.steps))
