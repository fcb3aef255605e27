"""Test-suite wide markers and skips.

- ``vivado``: needs Vivado/Vitis HLS; skipped unless ``XILINX_VIVADO`` is set.
- ``board``: needs a real PYNQ board; skipped unless ``/dev/xclmgmt*`` or a Zynq ``/dev/uio`` +
  ``/sys/class/fpga_manager`` is present (what pynq's own device probes look for).
- ``slow``: runs by default; deselect with ``-m "not slow"``.
"""

from __future__ import annotations

import glob
import os

import pytest


def _on_board() -> bool:
    return bool(glob.glob("/sys/class/fpga_manager/fpga*")) or bool(glob.glob("/dev/xclmgmt*"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_vivado = pytest.mark.skip(reason="needs Vivado: set XILINX_VIVADO")
    skip_board = pytest.mark.skip(reason="needs a PYNQ board")
    has_vivado = bool(os.environ.get("XILINX_VIVADO"))
    on_board = _on_board()
    for item in items:
        if item.get_closest_marker("vivado") and not has_vivado:
            item.add_marker(skip_vivado)
        if item.get_closest_marker("board") and not on_board:
            item.add_marker(skip_board)


@pytest.fixture(scope="session")
def hw_build_cache(tmp_path_factory: pytest.TempPathFactory):
    """Where the generated-hardware tests build (``<root>/cppsim``, ``<root>/verilator``,
    ``<root>/hardware``, as ``fcnseg verify --cache``): ``$FCNSEG_TEST_HW_CACHE`` when set —
    ``make test`` sets it so both environments and later runs share builds, which are keyed by
    content (compiler versions, flags, every source) — else a fresh folder for this session."""
    from pathlib import Path

    env = os.environ.get("FCNSEG_TEST_HW_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("hw-build-cache")
