"""The FCN family (pytorch-fcn style: one file per net, Caffe layer names).

``build_model(cfg)`` builds FCN-32s/16s/8s (Brevitas, or the float twin with
``cfg.quantized=False``) from a :class:`ModelConfig`; ``io.save_checkpoint``/``io.load_checkpoint``
store them as safetensors + JSON. Importing this package imports torch and brevitas.
"""

from __future__ import annotations

from fcnseg.quantize.models.common import (
    OUTPUT_STRIDES,
    FCNBase,
    ModelConfig,
    receptive_field,
)
from fcnseg.quantize.models.fcn8s import FCN8s
from fcnseg.quantize.models.fcn16s import FCN16s
from fcnseg.quantize.models.fcn32s import FCN32s

#: arch name -> class
ARCHS: dict[str, type[FCNBase]] = {"fcn32s": FCN32s, "fcn16s": FCN16s, "fcn8s": FCN8s}


def build_model(cfg: ModelConfig) -> FCNBase:
    """Build the net ``cfg`` describes (weights freshly initialised)."""
    return ARCHS[cfg.arch](cfg)


__all__ = [
    "ARCHS",
    "FCN8s",
    "FCN16s",
    "FCN32s",
    "FCNBase",
    "ModelConfig",
    "OUTPUT_STRIDES",
    "build_model",
    "receptive_field",
]
