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
identical; anything else in the head (ReLU, QuantReLU, Dropout, QuantIdentity, ...) is kept as is.
Flatten order: ``nn.Flatten`` on NCHW yields index ``c*K*K + h*K + w``, so a Linear weight
``(out, C*K*K)`` is exactly ``weight.view(out, C, K, K)``.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

from torch import nn


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
            raise ValueError("fc_to_conv: no nn.Flatten in the Sequential to split features/head")
        features = [(n, copy.deepcopy(m)) for n, m in children[:split]]
        head = _convert_head(children[split + 1 :], in_channels or _channels(features))
        return nn.Sequential(OrderedDict(features + head))
    if hasattr(model, "features") and hasattr(model, "classifier"):
        features = copy.deepcopy(model.features)
        feature_list = (
            list(features.named_children()) if isinstance(features, nn.Sequential) else []
        )
        c = in_channels or _channels(feature_list)
        head_children = list(model.classifier.named_children())
        head_children = [(n, m) for n, m in head_children if not isinstance(m, nn.Flatten)]
        head = nn.Sequential(OrderedDict(_convert_head(head_children, c)))
        return nn.Sequential(OrderedDict([("features", features), ("classifier", head)]))
    raise TypeError(
        "fc_to_conv supports an nn.Sequential with an nn.Flatten, or a module with `features` "
        f"and `classifier`; got {type(model).__name__}"
    )


def _channels(features: list[tuple[str, nn.Module]]) -> int:
    for _, module in reversed(features):
        for m in reversed(list(module.modules())):
            for attr in ("out_channels", "num_features"):
                if isinstance(getattr(m, attr, None), int):
                    return getattr(m, attr)
    raise ValueError("fc_to_conv: cannot infer the feature channels; pass in_channels=")


def _convert_head(children: list[tuple[str, nn.Module]], channels: int) -> list:
    out = []
    first = True
    for name, module in children:
        if _is_linear(module):
            if first:
                k2, rem = divmod(module.in_features, channels)
                k = math.isqrt(k2)
                if rem or k * k != k2:
                    raise ValueError(
                        f"fc_to_conv: {name} has {module.in_features} inputs, not C*K*K for "
                        f"C={channels}"
                    )
                out.append((name, linear_to_conv(module, channels, k)))
                first = False
            else:
                out.append((name, linear_to_conv(module, module.in_features, 1)))
        elif isinstance(module, nn.Flatten):
            continue
        else:
            out.append((name, copy.deepcopy(module)))
    if first:
        raise ValueError("fc_to_conv: the head has no Linear layer")
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
            raise ValueError(f"fc_to_conv: {key} has {value.numel()} values, conv needs another")
        state[key] = value.reshape(target[key].shape) if key in target else value
    result = conv.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"fc_to_conv: no place for {result.unexpected_keys} in the conv")
    conv.train(linear.training)
    return conv


def _is_quant(module: nn.Module) -> bool:
    return hasattr(module, "weight_quant") and hasattr(module, "quant_weight")
