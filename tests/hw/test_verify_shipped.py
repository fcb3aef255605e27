"""The shipped package's generated hardware at full size (256x256), from the archive it carries.

A few layers of every kind alone on the simulator's tensors run in every CI run; the whole
chained graph (45 layers) is the slow test. The package's ``verification.json`` must say what
a verification of it says now, on the tile it names.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.toolchain import needs_toolchain

SHIPPED = Path(__file__).resolve().parents[2] / "host" / "packages" / "fcn8s-pynq-z2"
#: one layer of every kind of the shipped net but Pool_hls (the depthwise window feeds a pool)
FEW = [
    "FMPadding_rtl_0",
    "ConvolutionInputGenerator_rtl_0",
    "ConvolutionInputGenerator_rtl_1",
    "MVAU_hls_0",
    "DuplicateStreams_hls_0",
    "UpsampleNearestNeighbour_hls_0",
    "ElementwiseAdd_hls_0",
    "Thresholding_rtl_0",
]


def test_the_shipped_package_carries_its_hardware_and_verification():
    from fcnseg.host.package import load_package
    from fcnseg.hw.verify.run import default_tiles

    package = load_package(SHIPPED)
    assert package.hardware is not None
    assert len(package.hardware["nodes"]) == len(package.layers) == 45
    record = package.verification
    assert record is not None and record["result"] == "exact"
    assert record["nodes"]["exact"] == 40 and set(record["nodes"]["not_verified"]) == {
        f"Pool_hls_{i}" for i in range(5)
    }
    assert all("library version" in why for why in record["nodes"]["not_verified"].values())
    assert all("/" not in why.split(":", 1)[0] for why in record["nodes"]["not_verified"].values())
    assert record["tiles"][0]["sha256"] == default_tiles(package.tile)[0].sha256


@needs_toolchain
def test_a_few_shipped_layers_at_full_size_are_exact(hw_build_cache):
    from fcnseg.hw.verify.run import verify

    report = verify(SHIPPED, nodes=FEW, cache=hw_build_cache, jobs=2)
    assert report.level == "isolated" and report.final_output_equal is None
    assert {n.name for n in report.nodes} == set(FEW)
    for n in report.nodes:
        assert n.status == "exact" and n.isolated_equal, (n.name, n.mismatch)
    rtl = {n.name: n for n in report.nodes if n.backend == "rtl"}
    assert abs(rtl["FMPadding_rtl_0"].cycles - rtl["FMPadding_rtl_0"].expected_cycles) <= 2


@needs_toolchain
@pytest.mark.slow  # 45 layers: ~2 min of cold builds on 2 cores, then ~17 s per tile
def test_the_whole_shipped_graph_chained_equals_its_record(hw_build_cache):
    from fcnseg.host.package import load_package
    from fcnseg.hw.verify.libraries import finn_hlslib
    from fcnseg.hw.verify.run import verify

    report = verify(SHIPPED, cache=hw_build_cache, jobs=2)
    assert report.ok and report.final_output_equal is True
    record = report.verification_record()
    if finn_hlslib().pinned:  # the pinned library builds every layer, Pool_hls too
        assert record["nodes"]["exact"] == record["nodes"]["total"] == 45
        return
    shipped = load_package(SHIPPED).verification
    for key in ("level", "tiles", "result", "by_kind", "final_output_equal", "nodes"):
        assert record[key] == shipped[key], key
