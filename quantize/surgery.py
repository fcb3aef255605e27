"""FC -> conv surgery (the seed): make a fixed-size classifier fully convolutional.

A classifier whose last feature map is ``K x K x C`` and whose head is Linear layers computes, on a
``K*S``-pixel input (``S`` = total stride), exactly what a net with the first Linear reshaped into a
``K x K`` convolution and the later Linears into ``1 x 1`` convolutions computes at one position.
The converted net slides over any larger image in one pass: a 224-input net with stride 32 on a
384x384 image gives a 6x6 score map, the classifier's scores on the 36 crops at stride 32 (exact
for a net whose convolutions do not pad; with padding, crops see zeros at their borders where the
one pass sees real pixels, so the two differ there).

Supported classifiers (:func:`fc_to_conv` returns a new module; the input is not modified):

1. an ``nn.Sequential`` ``[features..., nn.Flatten(), Linear, (act/dropout)*, Linear, ...]``: the
   first ``nn.Flatten`` separates features from head; returns ``nn.Sequential`` of the features
   followed by the converted head (same child names, the ``Flatten`` dropped);
2. a module with ``features`` and ``classifier`` children (torchvision VGG/AlexNet layout, forward
   ``classifier(flatten(features(x)))``; an ``avgpool`` child is dropped, which is only the
   identity when the feature map is already K x K, as it is at the classifier's input size):
   returns ``nn.Sequential(features=..., classifier=<converted>)``.

Head layers: ``nn.Linear`` -> ``nn.Conv2d``; Brevitas ``QuantLinear`` -> ``QuantConv2d`` with the
same weight/bias/input/output quantizers (and their learned state), so quantized outputs stay
identical. Only layers known to act on each value (or, ``Softmax(dim=1)``, on each position's
feature vector) are kept as they are: element-wise activations (ReLU, QuantReLU, ...), Dropout,
Identity / QuantIdentity. Anything else in the head -- ``BatchNorm1d`` (it would meet a 4-D map),
``LayerNorm``, a nested container, a custom module -- is refused before anything is converted,
with one :class:`~fcnseg.errors.UserError` line naming the layer by its qualified module name
(``classifier.1``), as are Linears whose sizes do not chain (the first not ``C*K*K``, a later one
not taking the previous one's outputs). Refusing is the point: converting such a head anyway
gave a net that failed at its first forward, with an error naming some other layer.
Flatten order: ``nn.Flatten`` on NCHW yields index ``c*K*K + h*K + w``, so a Linear weight
``(out, C*K*K)`` is exactly ``weight.view(out, C, K, K)``.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

from torch import nn

from fcnseg.errors import UserError

#: Head layers that act on each value independently (so on each position of a map as on a vector).
ELEMENTWISE = (
    nn.Identity, nn.Dropout, nn.AlphaDropout, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU,
    nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Softplus,
)  # fmt: skip
#: Brevitas activations / identities kept as they are (per-tensor quantizers in a head).
QUANT_ELEMENTWISE = ("QuantIdentity", "QuantReLU", "QuantHardTanh", "QuantSigmoid", "QuantTanh")


def fc_to_conv(model: nn.Module, in_channels: int | None = None) -> nn.Sequential:
    """Return the fully convolutional equivalent of ``model`` (see the module docstring).

    ``in_channels`` is the channel count C of the last feature map; by default it is taken from
    the last module in the features that has ``out_channels`` (a conv) or ``num_features`` (a BN).
    ``K = sqrt(in_features / C)`` of the first Linear must be an integer.
    """
    if isinstance(model, nn.Sequential):
        children = list(model.named_children())
        split = next((i for i, (_, m) in enumerate(children) if isinstance(m, nn.Flatten)), None)
        if split is None:
            raise UserError("fc_to_conv: no nn.Flatten in the Sequential to split features/head")
        # A later Flatten is a no-op on the head's (N, F) vectors; on a map it would not be.
        head_children = [(n, m) for n, m in children[split + 1 :] if not isinstance(m, nn.Flatten)]
        c = in_channels or _channels(children[:split])
        _check_head(head_children, c, prefix="")
        features = [(n, copy.deepcopy(m)) for n, m in children[:split]]
        return nn.Sequential(OrderedDict(features + _convert_head(head_children, c)))
    if hasattr(model, "features") and hasattr(model, "classifier"):
        feature_list = (
            list(model.features.named_children())
            if isinstance(model.features, nn.Sequential)
            else []
        )
        c = in_channels or _channels(feature_list)
        classifier = model.classifier
        head_children = (
            list(classifier.named_children())
            if isinstance(classifier, nn.Sequential)
            else [("", classifier)]
        )
        head_children = [(n, m) for n, m in head_children if not isinstance(m, nn.Flatten)]
        _check_head(head_children, c, prefix="classifier")
        head = nn.Sequential(OrderedDict(_convert_head(head_children, c)))
        features = copy.deepcopy(model.features)
        return nn.Sequential(OrderedDict([("features", features), ("classifier", head)]))
    raise UserError(
        "fc_to_conv supports an nn.Sequential with an nn.Flatten, or a module with `features` "
        f"and `classifier`; got {type(model).__name__}"
    )


def _channels(features: list[tuple[str, nn.Module]]) -> int:
    for _, module in reversed(features):
        for m in reversed(list(module.modules())):
            for attr in ("out_channels", "num_features"):
                if isinstance(getattr(m, attr, None), int):
                    return getattr(m, attr)
    raise UserError("fc_to_conv: cannot infer the feature channels; pass in_channels=")


def _qualified(prefix: str, name: str) -> str:
    return ".".join(part for part in (prefix, name) if part) or "classifier"


def _kept(module: nn.Module) -> bool:
    """True for a head layer that acts on each value (or each position's vector) alone."""
    if isinstance(module, (nn.Softmax, nn.LogSoftmax)):
        return module.dim == 1  # the feature axis of (N, F) and the channel axis of (N, C, H, W)
    if isinstance(module, ELEMENTWISE):
        return True
    return type(module).__name__ in QUANT_ELEMENTWISE and type(module).__module__.startswith(
        "brevitas."
    )


def _check_head(children: list[tuple[str, nn.Module]], channels: int, prefix: str) -> None:
    """Refuse a head :func:`_convert_head` cannot convert exactly, naming the layer (one line)."""
    features = None  # the previous Linear's outputs; None before the first Linear
    for name, module in children:
        where = _qualified(prefix, name)
        if _is_linear(module):
            if features is None:
                k2, rem = divmod(module.in_features, channels)
                k = math.isqrt(k2)
                if rem or k < 1 or k * k != k2:
                    raise UserError(
                        f"fc_to_conv: {where} ({type(module).__name__}) has "
                        f"{module.in_features} inputs, not C*K*K for the C={channels} feature "
                        "channels (pass in_channels= if that is not the channel count)"
                    )
            elif module.in_features != features:
                raise UserError(
                    f"fc_to_conv: {where} ({type(module).__name__}) takes {module.in_features} "
                    f"inputs but the Linear before it gives {features}"
                )
            features = module.out_features
            continue
        inner = next((n for n, m in module.named_modules() if n and _is_linear(m)), None)
        if inner is not None:
            raise UserError(
                f"fc_to_conv: {_qualified(where, inner)} is a Linear inside a nested "
                f"{type(module).__name__} ({where}); the head's Linears must be direct children"
            )
        if not _kept(module):
            raise UserError(
                f"fc_to_conv: cannot convert {where} ({type(module).__name__}): only Linears and "
                "element-wise layers (activations, dropout, identity, Softmax(dim=1)) may follow "
                "the features"
            )
    if features is None:
        raise UserError(f"fc_to_conv: the head ({prefix or 'after the Flatten'}) has no Linear")


def _convert_head(children: list[tuple[str, nn.Module]], channels: int) -> list:
    """The converted head of ``children`` (already accepted by :func:`_check_head`)."""
    out = []
    first = True
    for name, module in children:
        if _is_linear(module):
            if first:
                k = math.isqrt(module.in_features // channels)
                out.append((name or "0", linear_to_conv(module, channels, k)))
                first = False
            else:
                out.append((name or "0", linear_to_conv(module, module.in_features, 1)))
        else:
            out.append((name, copy.deepcopy(module)))
    return out


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear)  # QuantLinear subclasses nn.Linear


def linear_to_conv(linear: nn.Linear, channels: int, kernel: int) -> nn.Conv2d:
    """One Linear ``(out, channels*kernel*kernel)`` -> an unpadded ``kernel x kernel`` conv.

    A Brevitas ``QuantLinear`` becomes a ``QuantConv2d`` built from the same quantizer injectors
    (bit widths included) and loaded with the linear's quantizer state, reshaped where needed.
    """
    bias = linear.bias is not None
    if _is_quant(linear):
        from brevitas.nn import QuantConv2d

        conv = QuantConv2d(
            channels,
            linear.out_features,
            kernel,
            bias=bias,
            weight_quant=linear.weight_quant.quant_injector,
            bias_quant=linear.bias_quant.quant_injector,
            input_quant=linear.input_quant.quant_injector,
            output_quant=linear.output_quant.quant_injector,
            return_quant_tensor=linear.return_quant_tensor,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )
    else:
        conv = nn.Conv2d(
            channels,
            linear.out_features,
            kernel,
            bias=bias,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )
    # Same parameter/quantizer names on both sides; only the weight changes shape. Activation
    # scales that Brevitas has not initialised yet are absent from the conv's state dict until
    # loaded, so they are passed through unshaped.
    target = conv.state_dict()
    state = {}
    for key, value in linear.state_dict().items():
        if key in target and value.numel() != target[key].numel():
            raise UserError(f"fc_to_conv: {key} has {value.numel()} values, conv needs another")
        state[key] = value.reshape(target[key].shape) if key in target else value
    result = conv.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise UserError(f"fc_to_conv: no place for {result.unexpected_keys} in the conv")
    conv.train(linear.training)
    return conv


def _is_quant(module: nn.Module) -> bool:
    return hasattr(module, "weight_quant") and hasattr(module, "quant_weight")
