"""A user's own Brevitas classifier made exportable: fc_to_conv, its geometry, its exact record.

``fcnseg export`` knows our classifier (:mod:`fcnseg.quantize.models.classifier`) by its layer
names. This module takes any classifier built from the layers below, in either layout that
:func:`fcnseg.quantize.surgery.fc_to_conv` converts (an ``nn.Sequential`` with an ``nn.Flatten``,
or ``features`` + ``classifier`` children), and derives everything the export and the hardware
flow need from the layers themselves::

    card = export_classifier(model, window=224, tile=(384, 384), out_dir="my-export")

The converted net is walked module by module, in order (nested ``nn.Sequential`` are entered):

1. the input side: parameterless modules that multiply the raw pixels 0..255 by 1/255
   (:class:`PixelScale`), then an unsigned 8-bit quantizer with the fixed scale 1/255
   (``QuantIdentity(act_quant=PixelQuant, bit_width=8, return_quant_tensor=True)``): the
   accelerator takes raw UINT8 pixels, so the integer this quantizer makes must be the pixel
   (checked on all 256 values);
2. then ``QuantConv2d`` (stride 1, no padding, no dilation or groups, float or no bias, no
   input/output quantizer of its own), optionally one ``BatchNorm2d``, then one ``QuantReLU`` or
   ``QuantIdentity``; ``nn.MaxPool2d`` with kernel = stride; ``nn.Dropout*`` / ``nn.Identity``
   (identities in eval mode) are skipped;
3. the last layer is a convolution without activation (the converted score Linear): its raw
   integer accumulator ``q`` is what the accelerator outputs, ``logits = q * output_scale[c] +
   output_bias[c]``.

Each layer's exact meaning comes from :mod:`fcnseg.quantize.exact.extract`, which checks it
against Brevitas in float64 and refuses a quantizer it does not know. Anything else is refused in
one :class:`~fcnseg.errors.UserError` line naming the layer by its qualified module name.

Why these rules (the crop equality, cell ``(i, j)`` of the map on a larger image = the classifier
on the window-sized crop at ``(s i, s j)``, ``s`` the product of the pools' strides):

- no padding: with padding a crop sees zeros at its border where the one pass sees pixels;
- stride-1 convs and k = s pools: a crop offset by a multiple of ``s`` then meets every pool on
  the same grid as the whole image, provided every pool's input side is a multiple of its stride
  at the window (else a row is dropped, and the crop and the one pass drop different rows); at a
  tile of ``window + m s`` each pool's input grows by a multiple of its stride, so it holds there
  too (both are checked);
- the window must give the first Linear's ``K x K`` map exactly (its ``in_features = C K K``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from torch import nn

from fcnseg.errors import UserError
from fcnseg.quantize.models.classifier import TASK, PixelScale
from fcnseg.quantize.models.common import PixelQuant

__all__ = [
    "ARCH",
    "ConvertedClassifier",
    "Layer",
    "OwnClassifierConfig",
    "PixelQuant",
    "PixelScale",
    "convert_classifier",
    "export_classifier",
    "exact_walk",
]

#: the ``arch`` of the model card and exact record of a user's classifier.
ARCH = "own-classifier"
#: layers that are the identity in eval mode (skipped by the walk).
SKIPPED = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.FeatureAlphaDropout)
#: Brevitas activation quantizers the walk accepts after a conv (or as the input quantizer).
ACT_QUANTS = ("QuantReLU", "QuantIdentity")


@dataclass(frozen=True)
class Layer:
    """One row of the geometry table: a conv (``k`` its kernel) or a pool (``k`` = its stride)."""

    name: str
    op: str  #: "conv" or "pool"
    k: int


@dataclass(frozen=True)
class OwnClassifierConfig:
    """The facts :func:`fcnseg.quantize.export.export_model` reads from ``model.cfg``, derived
    from the layers (written into the card's ``model_config``)."""

    num_classes: int
    window: int
    #: product of the pools' strides: pixels between cells, and the tile's granularity
    net_stride: int
    #: K: the first Linear's map side (its converted kernel)
    head_kernel: int
    layers: tuple[Layer, ...]
    arch: str = ARCH
    io_bits: int = 8
    quantized: bool = True

    @property
    def output_stride(self) -> int:
        return self.net_stride

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "num_classes": self.num_classes,
            "window": self.window,
            "net_stride": self.net_stride,
            "head_kernel": self.head_kernel,
            "io_bits": self.io_bits,
            "quantized": self.quantized,
            "layers": [[layer.name, layer.op, layer.k] for layer in self.layers],
        }


# ------------------------------------------------------------------------------------ geometry
def map_side(layers: Sequence[Layer], side: int, at: str, stop: str | None = None) -> int:
    """The map side after ``layers`` (up to, not including, the layer named ``stop``) on an input
    of ``side`` px; a pool whose input is not a multiple of its stride, or a map smaller than a
    kernel, is a one-line :class:`UserError` (``at`` says where: "at the 224-px window")."""
    for layer in layers:
        if layer.name == stop:
            break
        if layer.op == "conv":
            if side < layer.k:
                raise UserError(
                    f"{layer.name}: its input is {side} px {at}, smaller than its {layer.k}x"
                    f"{layer.k} kernel"
                )
            side -= layer.k - 1
        else:
            if side % layer.k:
                raise UserError(
                    f"{layer.name}: its input is {side} px {at}, not a multiple of its stride "
                    f"{layer.k}: the pool drops rows, and a crop and the one pass would drop "
                    "different ones (change a conv or the window so every pool's input divides)"
                )
            side //= layer.k
    return side


def receptive_field(layers: Sequence[Layer]) -> int:
    """Input pixels per axis one score cell depends on: walked back from one cell, a ``k x k``
    conv needs ``n + k - 1`` inputs for ``n`` outputs, a pool ``k n``."""
    n = 1
    for layer in reversed(layers):
        n = n + layer.k - 1 if layer.op == "conv" else n * layer.k
    return n


# ---------------------------------------------------------------------------- the converted net
class ConvertedClassifier(nn.Module):
    """A user's classifier after ``fc_to_conv``, with what ``export_model`` needs (its facts are
    derived from the layers by :func:`convert_classifier`); ``forward`` gives the score map."""

    def __init__(self, cfg: OwnClassifierConfig, net: nn.Sequential, record: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.output_stride = cfg.output_stride
        self.net = net
        self._record = record

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def output_scale_bias(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-class ``(scale, bias)`` (float64) of the score layer: ``logits = q * scale +
        bias``, ``scale`` the score conv's input scale (the activation before it) times its
        weight scales, ``bias`` its float bias (zeros without one)."""
        score = self._record.steps[-1]
        scale = np.array([float(score.in_scale * w) for w in score.weight_scale])
        if score.bias is None:
            return scale, np.zeros(len(scale))
        return scale, np.array([float(b) for b in score.bias])

    def output_cells(self, tile: tuple[int, int]) -> tuple[int, int]:
        """The score map's (rows, columns) at ``tile``; a tile that is not the window plus a
        multiple of the stride is refused (its cells would not be the crops at stride s)."""
        cfg = self.cfg
        cells = []
        for side in tile:
            if side < cfg.window or (side - cfg.window) % cfg.net_stride:
                raise UserError(
                    f"tile side {side} must be the {cfg.window}-px window plus a multiple of the "
                    f"stride {cfg.net_stride} (e.g. {cfg.window + 5 * cfg.net_stride})"
                )
            n = map_side(cfg.layers, side, f"at the {side}-px tile")
            assert n == (side - cfg.window) // cfg.net_stride + 1, "geometry disagrees"
            cells.append(n)
        return cells[0], cells[1]

    def receptive_field(self) -> int:
        return receptive_field(self.cfg.layers)

    def card_facts(self) -> dict[str, Any]:
        """Model-card keys beyond an FCN's: what the host needs to classify with the map."""
        return {"task": TASK, "window": self.cfg.window}

    def exact_net(self) -> Any:
        """The exact record (:class:`~fcnseg.quantize.exact.record.ExactNet`) of the net."""
        return self._record


def convert_classifier(model: nn.Module, *, window: int) -> ConvertedClassifier:
    """``fc_to_conv`` of ``model`` (not modified), checked layer by layer for an exact record at
    ``window`` (the classifier's input side); returns the converted net in eval mode."""
    from fcnseg.quantize.surgery import fc_to_conv

    window = int(window)
    first_linear = _first_linear(model)
    net = fc_to_conv(model).eval()
    record, layers = exact_walk(net)
    names = [layer.name for layer in layers]
    assert first_linear in names, f"fc_to_conv named the first Linear {first_linear!r}"
    stride = math.prod(layer.k for layer in layers if layer.op == "pool")
    if window < stride or window % stride:
        raise UserError(
            f"window {window} must be a positive multiple of the stride {stride} (the product "
            "of the pools' strides): tiles and the host's canvas advance in strides"
        )
    k = layers[names.index(first_linear)].k
    side = map_side(layers, window, f"at the {window}-px window", stop=first_linear)
    if side != k:
        hint = _window_for(layers, first_linear, k, stride)
        raise UserError(
            f"{first_linear}: the {window}-px window gives a {side}x{side} map at the first "
            f"Linear, whose inputs are a {k}x{k} map (C*K*K with K={k})"
            + (f"; the window for K={k} is {hint}" if hint else "")
        )
    # the head after the K x K conv is 1 x 1 convs, and no pool drops a row: one cell that
    # sees the whole window (the backward walk inverts the forward one exactly)
    assert map_side(layers, window, "") == 1 and receptive_field(layers) == window
    cfg = OwnClassifierConfig(
        num_classes=int(record.steps[-1].channels),
        window=window,
        net_stride=stride,
        head_kernel=k,
        layers=tuple(layers),
    )
    return ConvertedClassifier(cfg, net, record)


def export_classifier(
    model: nn.Module,
    *,
    window: int,
    tile: tuple[int, int],
    out_dir: str | os.PathLike[str],
    classes: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Convert ``model`` (:func:`convert_classifier`) and export it at ``tile`` into ``out_dir``
    (:func:`fcnseg.quantize.export.export_model`: QONNX, the exact record, the model card, which
    is returned); ``classes`` / ``palette`` default to ``class0..`` and the VOC colours."""
    from fcnseg.quantize.export import export_model

    converted = convert_classifier(model, window=window)
    tile = (int(tile[0]), int(tile[1]))
    converted.output_cells(tile)  # refused by name before anything is written
    meta: dict[str, Any] = {}
    if classes is not None:
        meta["classes"] = list(classes)
    if palette is not None:
        meta["palette"] = [list(map(int, c)) for c in palette]
    return export_model(converted, meta, tile, out_dir)


def _window_for(layers: Sequence[Layer], first_linear: str, k: int, stride: int) -> int | None:
    """The smallest window (a multiple of ``stride``, at most 4096 px) that gives the first
    Linear its ``k x k`` map with every pool's input dividing, for the refusal's hint."""
    for window in range(stride, 4097, stride):
        try:
            side = map_side(layers, window, "", stop=first_linear)
        except UserError:
            continue
        if side == k:
            return window
        if side > k:
            return None
    return None


# ------------------------------------------------------------------------------------ the walk
def _first_linear(model: nn.Module) -> str:
    """The qualified name the first head Linear has once ``fc_to_conv`` converted ``model``."""
    if isinstance(model, nn.Sequential):
        flat = False
        for name, module in model.named_children():
            flat = flat or isinstance(module, nn.Flatten)
            if flat and isinstance(module, nn.Linear):
                return name
    elif isinstance(getattr(model, "classifier", None), nn.Linear):
        return "classifier.0"
    elif isinstance(getattr(model, "classifier", None), nn.Module):
        for name, module in model.classifier.named_children():
            if isinstance(module, nn.Linear):
                return f"classifier.{name}"
    return ""  # fc_to_conv refuses such a model, naming why


def _leaves(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """The layers of a (nested) ``nn.Sequential`` in execution order, by qualified name."""
    for name, child in module.named_children():
        qualified = f"{prefix}.{name}" if prefix else name
        if isinstance(child, nn.Sequential):
            yield from _leaves(child, qualified)
        else:
            yield qualified, child


def _brevitas(module: nn.Module, names: Sequence[str]) -> bool:
    return type(module).__name__ in names and type(module).__module__.startswith("brevitas.")


def _is_quant_conv(module: nn.Module) -> bool:
    return _brevitas(module, ("QuantConv2d",))


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


_INPUT_HOW = (
    "begin the classifier with PixelScale() and QuantIdentity(act_quant=PixelQuant, "
    "bit_width=8, return_quant_tensor=True) (fcnseg.quantize.own_classifier): the accelerator "
    "takes raw 0..255 pixels"
)


def _check_input(name: str, prefix: list[nn.Module], quant: nn.Module) -> None:
    """The input side must turn every pixel value 0..255 into the integer it is (UINT8, 1/255)."""
    from fcnseg.quantize.exact.extract import UnsupportedQuantizer, check_pixel_quant

    if not _brevitas(quant, ("QuantIdentity",)):
        raise UserError(f"{name} ({type(quant).__name__}) is no input quantizer; {_INPUT_HOW}")
    try:
        check_pixel_quant(quant)
    except UnsupportedQuantizer as error:
        raise UserError(f"{name}: {_one_line(error)}; {_INPUT_HOW}") from None
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randperm(256 * 3, generator=gen).remainder(256).double().reshape(1, 3, 16, 16)
    x = pixels
    for module in prefix:
        x = module(x)
    y = quant(x)
    value = getattr(y, "value", y)
    scale = float(quant.act_quant.scale().reshape(-1)[0])
    if not torch.allclose(value / scale, pixels, rtol=0, atol=1e-6):
        raise UserError(
            f"{name}: the input side does not give the pixel itself as its integer (does it "
            f"multiply by 1/255 before the quantizer?); {_INPUT_HOW}"
        )


def _check_conv(name: str, conv: nn.Module) -> None:
    """A convolution the record and the crop equality can hold, or a one-line refusal."""
    kind = type(conv).__name__
    padding = (0, 0) if conv.padding == "valid" else tuple(conv.padding)
    if padding != (0, 0):
        raise UserError(
            f"{name} ({kind}) pads by {padding}: padding is not supported, a crop would see zeros "
            "at its border where the one pass sees pixels (use padding=0)"
        )
    if tuple(conv.stride) != (1, 1):
        raise UserError(
            f"{name} ({kind}) has stride {tuple(conv.stride)}: only stride-1 convs are supported "
            "(downsample with MaxPool2d(k, stride=k))"
        )
    if tuple(conv.dilation) != (1, 1) or conv.groups != 1:
        raise UserError(f"{name} ({kind}): dilation and groups are not supported")
    kh, kw = conv.kernel_size
    if kh != kw:
        raise UserError(f"{name} ({kind}): its {kh}x{kw} kernel is not square")
    for role in ("input_quant", "output_quant", "bias_quant"):
        if getattr(conv, role).is_quant_enabled:
            raise UserError(
                f"{name} ({kind}) has its own {role}: not supported (quantize activations with "
                "a QuantReLU/QuantIdentity after the conv; biases stay float, bias_quant=None)"
            )


def _check_pool(name: str, pool: nn.MaxPool2d) -> int:
    """The stride of a ``k x k / k`` max-pool, or a one-line refusal."""
    pair = nn.modules.utils._pair
    k = pair(pool.kernel_size)
    s = pair(pool.stride) if pool.stride is not None else k
    if k != s or k[0] != k[1]:
        raise UserError(
            f"{name} (MaxPool2d) has kernel {k} and stride {s}: only square pools with kernel = "
            "stride are supported (overlapping windows are not in the exact record)"
        )
    if pair(pool.padding) != (0, 0) or pair(pool.dilation) != (1, 1):
        raise UserError(f"{name} (MaxPool2d): padding and dilation are not supported")
    return int(k[0])


def exact_walk(net: nn.Sequential) -> tuple[Any, list[Layer]]:
    """The exact record and geometry table of a converted classifier (module docstring).

    Returns ``(ExactNet, layers)``; the net is not modified (the walk reads a float64 copy).
    """
    from fcnseg.quantize.exact.extract import (
        UnsupportedQuantizer,
        act_quantizer,
        batch_norm,
        float64_copy,
        weight_integers,
    )
    from fcnseg.quantize.exact.record import ExactNet, Step

    m = float64_copy(net)
    leaves = list(_leaves(m))
    steps: list[Step] = []
    layers: list[Layer] = []
    prefix: list[nn.Module] = []
    start = None
    for i, (name, module) in enumerate(leaves):
        if _brevitas(module, ACT_QUANTS):
            with torch.no_grad():
                _check_input(name, prefix, module)
            start = i + 1
            break
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.BatchNorm2d)) or any(
            True for _ in module.parameters()
        ):
            raise UserError(
                f"{name} ({type(module).__name__}) comes before any input quantizer; {_INPUT_HOW}"
            )
        prefix.append(module)
    if start is None:
        raise UserError(f"the classifier has no input quantizer; {_INPUT_HOW}")

    src, scale = "pixels", Fraction(1, 255)
    pending: list[Any] = []  # [name, conv, bn_name, bn] of a conv awaiting its activation

    def fr(t: torch.Tensor | None) -> tuple[Fraction, ...] | None:
        if t is None:
            return None
        return tuple(Fraction(float(v)) for v in t.detach().double().reshape(-1).tolist())

    def emit(quant_name: str, quant_module: nn.Module | None) -> None:
        nonlocal src, scale
        name, conv, bn_name, bn = pending
        label = name
        try:
            ints, wscale = weight_integers(conv, name)
            label = bn_name
            norm = None if bn is None else batch_norm(bn)
            label = quant_name
            quant = None if quant_module is None else act_quantizer(quant_name, quant_module)
        except (UnsupportedQuantizer, AttributeError, RuntimeError) as error:
            raise UserError(f"{label}: no exact meaning known ({_one_line(error)})") from None
        dst = name if quant is not None else "scores"
        steps.append(
            Step(op="conv", name=name, src=src, dst=dst, weight=ints, padding=0, in_scale=scale,
                 weight_scale=wscale, bias=fr(conv.bias), bn=norm, quant=quant)
        )  # fmt: skip
        if quant is not None:
            scale = quant.scale
        src = dst
        pending.clear()

    def refuse_pending(name: str, module: nn.Module) -> None:
        if pending:
            raise UserError(
                f"{pending[0]} has no activation before {name} ({type(module).__name__}): only "
                "the last conv (the scores) may lack a QuantReLU/QuantIdentity"
            )

    with torch.no_grad():
        for name, module in leaves[start:]:
            kind = type(module).__name__
            if isinstance(module, SKIPPED):
                continue
            if _is_quant_conv(module):
                refuse_pending(name, module)
                _check_conv(name, module)
                pending[:] = [name, module, "", None]
                layers.append(Layer(name, "conv", int(module.kernel_size[0])))
            elif isinstance(module, nn.BatchNorm2d):
                if not pending or pending[3] is not None:
                    raise UserError(f"{name} (BatchNorm2d) must directly follow a QuantConv2d")
                if not module.affine or not module.track_running_stats:
                    raise UserError(f"{name} (BatchNorm2d) needs affine=True and running stats")
                pending[2:] = [name, module]
            elif _brevitas(module, ACT_QUANTS):
                if not pending:
                    raise UserError(
                        f"{name} ({kind}) does not directly follow a QuantConv2d (+ BatchNorm2d): "
                        "a requantization on its own is not supported"
                    )
                emit(name, module)
            elif isinstance(module, nn.MaxPool2d):
                refuse_pending(name, module)
                k = _check_pool(name, module)
                steps.append(Step(op="pool", name=name, src=src, dst=name, k=k))
                src = name
                layers.append(Layer(name, "pool", k))
            elif isinstance(module, (nn.Softmax, nn.LogSoftmax)):
                raise UserError(
                    f"{name} ({kind}): end the classifier with the score Linear, without "
                    "softmax (the accelerator outputs the scores; fcnseg classify applies softmax)"
                )
            elif isinstance(module, (nn.Conv2d, nn.ReLU)):
                raise UserError(
                    f"{name} ({kind}) is not quantized: use brevitas.nn.QuantConv2d / QuantReLU "
                    "(QuantLinear in the head)"
                )
            else:
                raise UserError(
                    f"{name} ({kind}) is not supported: the classifier may hold QuantConv2d, "
                    "BatchNorm2d, QuantReLU/QuantIdentity, MaxPool2d, Dropout and QuantLinear "
                    "after a Flatten"
                )
        if not pending:
            last = leaves[-1][0] if leaves else "the classifier"
            raise UserError(
                f"{last}: the classifier must end in the score layer, a QuantLinear without "
                "activation after it (its raw integer scores are the accelerator's output)"
            )
        if pending[3] is not None:
            raise UserError(
                f"{pending[2]} (BatchNorm2d) follows the score layer {pending[0]}: not "
                "supported (the scores must be its raw accumulator, bias aside)"
            )
        emit("", None)
    return ExactNet(ARCH, tuple(steps)), layers
