"""fcnseg.host: the runtime that runs on a PYNQ board and on a PC.

Its import path holds numpy and Pillow only (a PYNQ image has Python 3.10 and numpy 1.x; no torch,
onnx or finn). The board backend imports pynq and finn-plus-driver only when chosen.

``from fcnseg.host import Segmenter`` (or ``Classifier``) is lazy: importing ``fcnseg.host``
imports nothing else.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fcnseg.host.classify import Classification, Classifier
    from fcnseg.host.segmenter import Segmentation, Segmenter

#: public name -> module that defines it
_EXPORTS = {
    "Segmenter": "fcnseg.host.segmenter",
    "Segmentation": "fcnseg.host.segmenter",
    "Classifier": "fcnseg.host.classify",
    "Classification": "fcnseg.host.classify",
}

__all__ = ["Classification", "Classifier", "Segmentation", "Segmenter"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
