"""The quantized image classifier of the seed: an unpadded VGG-style backbone and three FC layers.

``Classifier`` is ``pixel scale -> input quantizer -> 5 stages (one 3x3 conv WITHOUT padding +
BN + QuantReLU, 2x2/2 max-pool) -> Flatten -> fc6 -> QuantReLU -> fc7 -> QuantReLU -> score``,
the FC layers Brevitas ``QuantLinear`` (C*K*K -> F -> F -> classes). It is written in the
torchvision layout (``features`` + ``classifier`` children) that
:func:`fcnseg.quantize.surgery.fc_to_conv` converts: fc6 becomes a ``K x K`` convolution, fc7 and
score ``1 x 1`` ones, quantizers and integer weights unchanged (:func:`convert`).

Why no padding: on a larger image, cell ``(i, j)`` of the converted net's map must be exactly the
classifier on the crop at ``(32 i, 32 j)``. With padding the crop sees zeros at its border where
the one pass sees real pixels. Unpadded, a crop offset by a multiple of 32 meets every 2x2 pool
window on the same pixel pairs as the one pass (the offset is even at every pool's input), and
each of its values is computed from the same pixels.

Why two convs in stage 1 and ``K = 5`` rather than the seed's 7: at 224x224 a five-pool backbone
reaches 7x7 only if no conv shrinks the map (``224 / 32 = 7`` exactly), so with unpadded 3x3
convs the last map is smaller. Stage 1 has two convs (``depths = (2, 1, 1, 1, 1)``) so that every
pool's input has an even side on every multiple of 32 (``32m - 4, 16m - 4, 8m - 4, 4m - 4,
2m - 4``): no pool drops a row, the exact reference and finn's ``StreamingMaxPool`` see even maps,
and one cell sees exactly the 224 pixels of its crop. At 224: 220 -> 110 -> 108 -> 54 -> 52 -> 26
-> 24 -> 12 -> 10 -> 5, so fc6 is a 5x5 conv; at 384 the last map is 10x10 and the converted net
gives the seed's 6x6 map of the 36 crops at stride 32.

The head has no batch norm (``fc_to_conv`` refuses ``BatchNorm1d``, which would meet a 4-D map):
fc6 and fc7 carry a float bias that finn absorbs into the QuantReLU's thresholds. As everywhere in
this project (``common.py``): pixels 0..255 in, times 1/255 into a UINT8 quantizer with fixed
scale (the accelerator takes raw pixels), 8-bit weights in the first conv and the score layer, and
the score layer's float bias, so the accelerator outputs the integer accumulator ``q`` and
``logits = q * output_scale[c] + output_bias[c]``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fcnseg import config as config_io
from fcnseg.config import ConfigError
from fcnseg.errors import UserError
from fcnseg.quantize.config import NUM_STAGES
from fcnseg.quantize.models.common import (
    PIXEL_SCALE,
    ActQuant,
    WeightQuant,
    act_scale,
    make_pixel_quant,
    weight_scale,
)

#: the ``arch`` of a classifier's config and model card.
ARCH = "classifier"
#: the ``task`` key of the model card (the host reads it with ``window``).
TASK = "classification"


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything needed to rebuild a classifier (saved next to its checkpoint)."""

    #: always "classifier" (tells a classifier checkpoint from an FCN's)
    arch: str = ARCH
    #: number of classes
    num_classes: int = 6
    #: channels of the 3x3 convs of each of the 5 stages
    widths: tuple[int, ...] = (8, 16, 24, 32, 32)
    #: unpadded 3x3 convs per stage (each pool's input must have an even side at the window)
    depths: tuple[int, ...] = (2, 1, 1, 1, 1)
    #: outputs of fc6 and fc7
    fc_width: int = 64
    #: the classifier's input side (pixels); a multiple of 32
    window: int = 224
    #: weight bits of the inner layers
    weight_bits: int = 4
    #: activation (QuantReLU) bits
    act_bits: int = 4
    #: bits of the input quantizer, first conv and score layer weights
    io_bits: int = 8
    #: False = a float twin (plain torch layers, same names)
    quantized: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        if self.arch != ARCH:
            raise ConfigError(f"ClassifierConfig.arch must be {ARCH!r}, got {self.arch!r}")
        if len(self.widths) != NUM_STAGES or min(self.widths) < 1:
            raise ConfigError(f"ClassifierConfig.widths needs {NUM_STAGES} positive entries")
        if len(self.depths) != NUM_STAGES or min(self.depths) < 1:
            raise ConfigError(f"ClassifierConfig.depths needs {NUM_STAGES} positive entries")
        if self.num_classes < 2 or self.fc_width < 1:
            raise ConfigError("ClassifierConfig needs num_classes >= 2 and fc_width >= 1")
        if self.window < 32 or self.window % 32:
            raise ConfigError(
                f"ClassifierConfig.window must be a multiple of 32, got {self.window}"
            )
        try:
            feature_side(self.depths, self.window)
        except UserError as error:
            raise ConfigError(f"ClassifierConfig: {error}") from None
        if min(self.weight_bits, self.act_bits, self.io_bits) < 2:
            raise ConfigError("ClassifierConfig bit widths must be >= 2")

    @property
    def output_stride(self) -> int:
        """Input pixels between neighbouring cells of the converted net's map."""
        return 2**NUM_STAGES

    @property
    def net_stride(self) -> int:
        """Input sizes are multiples of this (five 2x2/2 pools)."""
        return 2**NUM_STAGES

    @property
    def head_kernel(self) -> int:
        """K: the last map's side at the window size (fc6's kernel once converted)."""
        return feature_side(self.depths, self.window)

    def to_dict(self) -> dict[str, Any]:
        return config_io.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassifierConfig:
        return config_io.from_dict(cls, data, "ClassifierConfig")

    def replace(self, **changes: Any) -> ClassifierConfig:
        return dataclasses.replace(self, **changes)


def feature_side(depths: tuple[int, ...], side: int) -> int:
    """The backbone's output side for an input side (per stage ``depth`` unpadded 3x3 convs and
    a 2x2/2 pool); a pool input of odd or non-positive side is a :class:`UserError`."""
    start = side
    for stage, depth in enumerate(depths, start=1):
        side -= 2 * depth
        if side < 2 or side % 2:
            raise UserError(
                f"an input side of {start} px gives pool{stage} a {side}-px map; it must be even "
                "and at least 2 (use a multiple of 32)"
            )
        side //= 2
    return side


def map_side(cfg: ClassifierConfig, side: int) -> int:
    """Cells per axis of the converted net on an input of ``side`` pixels (6 at 384 for 224)."""
    cells = feature_side(cfg.depths, side) - cfg.head_kernel + 1
    if cells < 1:
        raise UserError(f"an input side of {side} px is smaller than the {cfg.window}-px window")
    return cells


def receptive_field(cfg: ClassifierConfig) -> int:
    """Input pixels (per axis) one output cell depends on, from the layers.

    Walked backwards from one cell: a ``K x K`` conv needs ``K`` cells, a pool ``2 n`` inputs for
    ``n`` outputs, each unpadded 3x3 conv ``n + 2`` inputs for ``n`` outputs (224 at 224: a cell
    sees its whole crop).
    """
    n = cfg.head_kernel
    for depth in reversed(cfg.depths):
        n = 2 * n + 2 * depth
    return n


def conv_table(cfg: ClassifierConfig) -> list[tuple[str, int, int, int]]:
    """The backbone as rows ``(name, stage, channels, weight bits)``: ``conv{s}_{i}`` then
    ``pool{s}`` (channels and bits 0) per stage; the first conv gets ``io_bits`` weights."""
    rows: list[tuple[str, int, int, int]] = []
    for stage, (width, depth) in enumerate(zip(cfg.widths, cfg.depths, strict=True), start=1):
        for i in range(1, depth + 1):
            bits = cfg.io_bits if not rows else cfg.weight_bits
            rows.append((f"conv{stage}_{i}", stage, width, bits))
        rows.append((f"pool{stage}", stage, 0, 0))
    return rows


class PixelScale(nn.Module):
    """Raw pixels 0..255 -> [0, 1] (the fixed 1/255 before the input quantizer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * PIXEL_SCALE


def _conv(cfg: ClassifierConfig, cin: int, cout: int, bits: int) -> nn.Module:
    if not cfg.quantized:
        return nn.Conv2d(cin, cout, 3, padding=0, bias=False)
    from brevitas.nn import QuantConv2d

    return QuantConv2d(
        cin, cout, 3, padding=0, bias=False, weight_quant=WeightQuant, weight_bit_width=bits,
        return_quant_tensor=False,
    )  # fmt: skip


def _relu(cfg: ClassifierConfig) -> nn.Module:
    if not cfg.quantized:
        return nn.ReLU()
    from brevitas.nn import QuantReLU

    return QuantReLU(act_quant=ActQuant, bit_width=cfg.act_bits, return_quant_tensor=True)


def _linear(cfg: ClassifierConfig, cin: int, cout: int, bits: int) -> nn.Module:
    if not cfg.quantized:
        return nn.Linear(cin, cout, bias=True)
    from brevitas.nn import QuantLinear

    return QuantLinear(
        cin, cout, bias=True, weight_quant=WeightQuant, weight_bit_width=bits,
        bias_quant=None,  # float bias (as the FCNs' score conv): qonnx-friendly
        return_quant_tensor=False,
    )  # fmt: skip


class Classifier(nn.Module):
    """The classifier at its window size (module docstring); ``forward`` gives logits (N, classes).

    Quantized, ``logits = q * output_scale[c] + output_bias[c]`` with the integer accumulator
    ``q`` of the score layer (:meth:`output_scale_bias`).
    """

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["scale"] = PixelScale()
        layers["quant_inp"] = make_pixel_quant(cfg)  # type: ignore[arg-type]  # duck-typed cfg
        cin = 3
        for name, _, width, bits in conv_table(cfg):
            if name.startswith("pool"):
                layers[name] = nn.MaxPool2d(2, stride=2)
                continue
            suffix = name[4:]  # "1_1"
            layers[name] = _conv(cfg, cin, width, bits)
            layers[f"bn{suffix}"] = nn.BatchNorm2d(width)
            layers[f"relu{suffix}"] = _relu(cfg)
            cin = width
        self.features = nn.Sequential(layers)
        k = cfg.head_kernel
        head: OrderedDict[str, nn.Module] = OrderedDict()
        head["flatten"] = nn.Flatten()
        head["fc6"] = _linear(cfg, cin * k * k, cfg.fc_width, cfg.weight_bits)
        head["relu6"] = _relu(cfg)
        head["fc7"] = _linear(cfg, cfg.fc_width, cfg.fc_width, cfg.weight_bits)
        head["relu7"] = _relu(cfg)
        head["score"] = _linear(cfg, cfg.fc_width, cfg.num_classes, cfg.io_bits)
        self.classifier = nn.Sequential(head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def output_scale_bias(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-class ``(scale, bias)`` (float64): ``logits = q * scale + bias``."""
        return _scale_bias(self.cfg, self.classifier.relu7, self.classifier.score)


def _scale_bias(cfg: ClassifierConfig, relu: nn.Module, score: nn.Module):
    if not cfg.quantized:
        return np.ones(cfg.num_classes), np.zeros(cfg.num_classes)
    scale = act_scale(relu) * _weight_scale(score)
    return scale, score.bias.detach().double().numpy().copy()


def _weight_scale(layer: nn.Module) -> np.ndarray:
    if hasattr(layer, "out_channels"):
        return weight_scale(layer)
    scale = layer.quant_weight().scale.detach().double().reshape(-1).numpy()
    return np.broadcast_to(scale, (layer.out_features,)).copy()


class ConvClassifier(nn.Module):
    """The classifier made fully convolutional (:func:`convert`): scores (N, classes, h, w).

    ``net`` is ``fc_to_conv``'s ``Sequential(features, classifier)``; the other methods are the
    facts ``fcnseg export`` writes into the model card and the exact record.
    """

    def __init__(self, cfg: ClassifierConfig, net: nn.Sequential) -> None:
        super().__init__()
        self.cfg = cfg
        self.output_stride = cfg.output_stride
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def output_scale_bias(self) -> tuple[np.ndarray, np.ndarray]:
        return _scale_bias(self.cfg, self.net.classifier.relu7, self.net.classifier.score)

    def output_cells(self, tile: tuple[int, int]) -> tuple[int, int]:
        """The score map's (rows, columns) on an input of ``tile`` pixels."""
        return map_side(self.cfg, tile[0]), map_side(self.cfg, tile[1])

    def receptive_field(self) -> int:
        return receptive_field(self.cfg)

    def card_facts(self) -> dict[str, Any]:
        """Model-card keys beyond an FCN's: what the host needs to classify with the map."""
        return {"task": TASK, "window": self.cfg.window}

    def exact_net(self):
        """The exact record (:mod:`fcnseg.quantize.exact`) of the converted net."""
        return exact_classifier(self)


def build_classifier(cfg: ClassifierConfig) -> Classifier:
    return Classifier(cfg)


def convert(model: Classifier) -> ConvClassifier:
    """``fc_to_conv`` of a classifier, in eval mode (the classifier is not modified)."""
    from fcnseg.quantize.surgery import fc_to_conv

    return ConvClassifier(model.cfg, fc_to_conv(model)).eval()


# ------------------------------------------------------------------------------ exact record
def exact_classifier(model: ConvClassifier):
    """The :class:`~fcnseg.quantize.exact.record.ExactNet` of a converted quantized classifier:
    the generic walk of a converted classifier's layers (:func:`fcnseg.quantize.own_classifier.
    exact_walk`, every layer's meaning from :mod:`fcnseg.quantize.exact.extract`, checked against
    Brevitas in float64), with our architecture's name. Step names are qualified module names
    (``features.conv1_1``)."""
    from fcnseg.quantize.own_classifier import exact_walk

    if not model.cfg.quantized:
        raise UserError("the float classifier has no exact integer meaning")
    net, _ = exact_walk(model.net)
    return dataclasses.replace(net, arch=ARCH)


# -------------------------------------------------------------------------------- checkpoints
def is_classifier_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True if the checkpoint's JSON sidecar says ``model_config.arch == "classifier"``."""
    from fcnseg.quantize.models.io import sidecar_path

    try:
        meta = json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and (meta.get("model_config") or {}).get("arch") == ARCH


def load_classifier(path: str | os.PathLike[str]) -> tuple[Classifier, dict[str, Any]]:
    """A classifier checkpoint (``io.save_checkpoint``'s two files) -> ``(model.eval(), meta)``,
    loaded by the same rules as an FCN's (:func:`fcnseg.quantize.models.io.load_model`)."""
    from fcnseg.quantize.models.io import load_model

    return load_model(path, ClassifierConfig.from_dict, Classifier)
