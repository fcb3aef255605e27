"""The Vivado part of the flow: IP, stitched IP, bitfile and PYNQ driver into the package.

Marked ``vivado``: skipped unless ``XILINX_VIVADO`` is set (tests/conftest.py). Real tests: they
run the whole flow on the tiny FCN-32s and check the package a board would load.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.files import read_json

pytestmark = [pytest.mark.vivado, pytest.mark.slow]


@pytest.fixture(scope="module")
def vivado_build(exports, tmp_path_factory):
    from fcnseg.hw.boards import get_board
    from fcnseg.hw.build import BuildOptions, compile_export

    out = tmp_path_factory.mktemp("vivado") / "fcn32s-pynq-z2"
    return compile_export(
        BuildOptions(exports["fcn32s"].dir, out, get_board("pynq-z2"), target_fps=100, vivado=True)
    )


def test_bitfile_and_driver_reach_the_package(vivado_build):
    package = vivado_build.package_dir
    assert vivado_build.vivado_ran
    assert list((package / "bitfile").glob("*.bit")) and list((package / "bitfile").glob("*.hwh"))
    assert (package / "driver" / "settings.json").exists()
    files = read_json(package / "accelerator.json")["files"]
    assert any(name.startswith("bitfile/") and name.endswith(".bit") for name in files)
    assert "driver/settings.json" in files


def test_driver_settings_io_agrees_with_accelerator_json(vivado_build):
    package = vivado_build.package_dir
    accel = read_json(package / "accelerator.json")
    settings = read_json(package / "driver" / "settings.json")
    info = settings.get("driver_information", settings)
    io = info["io_shape_dict"]
    assert list(io["ishape_normal"][0]) == accel["io"]["input"]["shape"]
    assert list(io["oshape_normal"][0]) == accel["io"]["output"]["shape"]
    assert f"'{accel['io']['input']['dtype']}'" in str(io["idt"][0])  # "DataType['UINT8']"
    assert f"'{accel['io']['output']['dtype']}'" in str(io["odt"][0])
    assert info["platform"] == "zynq-iodma"
    assert float(info["fclk_mhz"]) == pytest.approx(1e3 / vivado_build.summary["clock_ns"])
    assert np.prod(io["ishape_normal"][0]) == np.prod(io["ishape_folded"][0])
