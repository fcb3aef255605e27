"""Backends: where the accelerator's integer layers run. An explicit registry, name -> module.

Like finn-plus-driver's ``DRIVER_TYPES``: the registry holds module *names*, and a backend module
is imported only when it is chosen, so ``fcnseg segment --backend sim`` never imports pynq (and
``fcnseg.host`` imports on any machine). Every backend module provides::

    open_engine(package: Package, **options) -> Engine

where an *Engine* has ``run(x: uint8 (N, H, W, 3)) -> int64 (N, H/s, W/s, C)`` and, when it
knows it, ``net_stride`` (the multiple every input size must be): the interface of
``docs/contracts.md``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from fcnseg.errors import ParameterError

if TYPE_CHECKING:
    from fcnseg.host.package import Package

#: backend name -> module implementing ``open_engine``.
BACKENDS: dict[str, str] = {
    "sim": "fcnseg.host.backends.sim",  # bit-accurate numpy simulator (any machine)
    "pynq": "fcnseg.host.backends.pynq",  # the FPGA through pynq + finn-plus-driver (a board)
}


class Engine(Protocol):
    """What the host needs from a backend."""

    def run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        """Integer scores ``(N, H/s, W/s, C)`` of uint8 NHWC ``x``."""
        ...


def get_backend(name: str) -> ModuleType:
    """Import and return the backend module registered as ``name``."""
    if name not in BACKENDS:
        raise ParameterError(f"{{backend}} is not one of {', '.join(BACKENDS)}", backend=name)
    try:
        return importlib.import_module(BACKENDS[name])
    except ModuleNotFoundError as error:
        if error.name == BACKENDS[name]:
            raise ParameterError(
                "{backend} is not implemented in this version", backend=name
            ) from None
        raise ParameterError(
            f"{{backend}} needs {error.name!r}, not installed here", backend=name
        ) from None


def open_engine(name: str, package: Package, **options: Any) -> Engine:
    """Open an engine for ``package`` on backend ``name``."""
    return get_backend(name).open_engine(package, **options)
