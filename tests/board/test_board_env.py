"""The board environment is the truth of a PYNQ image: pynq 4.0.0, numpy 1.x, no torch.

These tests run where pynq is installed (``.venv-board``) and skip elsewhere.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest

pytest.importorskip("pynq")


def test_numpy_is_1x() -> None:
    import numpy

    assert int(numpy.__version__.split(".")[0]) == 1


def test_pynq_is_pinned() -> None:
    assert importlib.metadata.version("pynq") == "4.0.0"


def test_no_training_or_compile_stack() -> None:
    for name in ("torch", "brevitas", "finn"):
        assert importlib.util.find_spec(name) is None, f"{name} must not be in the board env"


def test_finn_plus_driver_is_installed() -> None:
    assert importlib.metadata.version("finn-plus-driver") == "1.6.1"
