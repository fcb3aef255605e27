"""fcnseg.quantize: the training stage (torch + Brevitas).

Quantized FCN-32s/16s/8s models, the FC->conv surgery, datasets, metrics, QAT training and the
QONNX export. Heavy libraries (torch, brevitas) are imported lazily: ``import fcnseg.quantize``
itself is cheap, and the numpy-only parts (metrics, dataset readers) serve the host on a board too.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> module that defines it (imported on first access, like finn-plus-driver).
_LAZY: dict[str, str] = {
    "fc_to_conv": "fcnseg.quantize.surgery",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
