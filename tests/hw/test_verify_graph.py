"""``fcnseg verify``: the generated hardware of a whole graph, chained, against the simulator.

On the tiny FCN-8s build (64x64, every node kind the FCNs use) every node is generated (finn),
built (g++ / Verilator) and run fed by the generated nodes before it; each node's output and the
final scores must equal the simulator exactly. Nodes the vendored finn-hlslib cannot build
(``Pool_hls``) must be reported *not verified*, never passed. A corrupted node must be found.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fcnseg.errors import UserError
from tests.helpers.toolchain import needs_toolchain, photo_tile


def test_package_graph_reproduces_the_builds_folded_graph(build_fcn8s):
    """A package alone (hw_graph.onnx + part) gives the graph the build generated code from."""
    from qonnx.core.modelwrapper import ModelWrapper

    from fcnseg.hw.verify.generate import (
        FOLDED_MODEL,
        dataflow_child,
        graph_differences,
        resolve_target,
    )

    from_package = resolve_target(build_fcn8s.package_dir)
    from_build = resolve_target(build_fcn8s.out_dir)
    assert (from_package.fpgapart, from_package.clk_ns) == (from_build.fpgapart, from_build.clk_ns)
    folded = dataflow_child(ModelWrapper(str(build_fcn8s.out_dir / FOLDED_MODEL)))
    assert graph_differences(from_package.model(), folded) == []
    # and the comparison can fail: a changed folding is seen
    other = from_package.model()
    from qonnx.custom_op.registry import getCustomOp

    node = next(n for n in other.graph.node if n.op_type.startswith("MVAU"))
    getCustomOp(node).set_nodeattr("SIMD", 1)
    assert graph_differences(other, folded) == [f"{node.name}.SIMD"]


def test_resolve_refuses_what_is_no_build_or_package(tmp_path):
    from fcnseg.hw.verify.generate import resolve_target

    with pytest.raises(UserError, match="neither a build folder"):
        resolve_target(tmp_path)


@pytest.fixture(scope="session")
def tiny_hardware(build_fcn8s, tmp_path_factory):
    """The tiny build's generated hardware folder (finn code generation, once per session)."""
    from fcnseg.hw.verify.generate import generate_hardware, resolve_target

    out = tmp_path_factory.mktemp("hardware") / "hardware"
    return generate_hardware(resolve_target(build_fcn8s.out_dir), out)


@pytest.fixture(scope="session")
def hw_cache(hw_build_cache) -> Path:
    return hw_build_cache


def test_hardware_folder_is_wired_like_the_graph(tiny_hardware, build_fcn8s):
    from fcnseg.host.package import load_package
    from fcnseg.hw.verify.chain import HardwareGraph
    from fcnseg.hw.verify.generate import resolve_target

    model = resolve_target(build_fcn8s.out_dir).model()
    assert [n.name for n in tiny_hardware.nodes] == [n.name for n in model.graph.node]
    kinds = {n.kind for n in tiny_hardware.nodes}
    assert {"MVAU_hls", "Pool_hls", "ConvolutionInputGenerator_rtl", "FMPadding_rtl"} <= kinds
    assert len(tiny_hardware.nodes) == len(load_package(build_fcn8s.package_dir).layers)
    again = HardwareGraph.load(tiny_hardware.root)
    assert again.to_json() == tiny_hardware.to_json()
    data = json.loads((tiny_hardware.root / "graph.json").read_text())
    data["nodes"][3]["inputs"] = ["no-such-tensor"]
    broken = tiny_hardware.root.parent / "broken"
    shutil.copytree(tiny_hardware.root, broken)
    (broken / "graph.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="reads no-such-tensor before it is made"):
        HardwareGraph.load(broken)


@needs_toolchain
def test_whole_tiny_graph_chained_is_exact(build_fcn8s, tiny_hardware, hw_cache):
    """Every node, chained, equals the simulator; Pool_hls is not verified with the vendored
    library (and is the only kind that may be); the final scores are equal."""
    from fcnseg.hw.verify.run import Tile, verify

    tile = Tile("astronaut crop", photo_tile((64, 64)))
    report = verify(
        build_fcn8s.out_dir,
        [tile],
        cache=hw_cache,
        jobs=2,
        work_dir=tiny_hardware.root.parent / "verify-work",
    )
    assert report.final_output_equal is True and report.ok
    by_status: dict[str, set[str]] = {}
    for n in report.nodes:
        by_status.setdefault(n.status, set()).add(n.kind)
        if n.status == "not verified":
            assert n.reason.startswith("library version")
    assert "mismatch" not in by_status
    assert by_status.get("not verified", set()) <= {"Pool_hls"}
    assert {"MVAU_hls", "ConvolutionInputGenerator_rtl", "FMPadding_rtl", "Thresholding_rtl"} <= (
        by_status["exact"]
    )
    assert {"DuplicateStreams_hls", "UpsampleNearestNeighbour_hls", "ElementwiseAdd_hls"} <= (
        by_status["exact"]
    )
    rtl = [n for n in report.nodes if n.backend == "rtl"]
    assert all(n.cycles and n.cycles > 0 for n in rtl)
    record = report.verification_record()
    assert record["result"] == "exact" and record["nodes"]["total"] == len(report.nodes)

    # a second run only runs: every build comes from the cache
    again = verify(build_fcn8s.out_dir, [tile], cache=hw_cache, jobs=2)
    assert all(n.cached for n in again.nodes if n.status != "not verified")
    assert again.ok


@needs_toolchain
def test_a_corrupted_node_is_found_and_blamed(build_fcn8s, tiny_hardware, hw_cache, tmp_path):
    """Negate one weight row of the first MVAU's generated code: its output differs, it is the node
    blamed (alone on the simulator's inputs it is still wrong), and verify fails."""
    from fcnseg.hw.verify.chain import HardwareGraph
    from fcnseg.hw.verify.run import Tile, verify

    bad = tmp_path / "hardware"
    shutil.copytree(tiny_hardware.root, bad)
    graph = HardwareGraph.load(bad)
    mvau = next(n for n in graph.nodes if n.kind == "MVAU_hls")
    generated = graph.generated(mvau)
    weights_file = bad / mvau.folder / next(iter(generated.static_inputs.values()))
    w = np.load(weights_file, allow_pickle=False)
    rows = w.reshape(-1, w.shape[-1])
    rows[0] = -rows[0]  # one output channel's weights negated (a +-1 may cross no threshold)
    np.save(weights_file, w)
    from fcnseg.host.hardware import ARCHIVE_NAME, pack
    from fcnseg.host.package import add_package_files

    package = tmp_path / "package"
    shutil.copytree(build_fcn8s.package_dir, package)
    # a package whose hardware differs from its layers (carried hardware is used as is)
    add_package_files(package, {ARCHIVE_NAME: pack(bad)})
    tile = Tile("astronaut crop", photo_tile((64, 64)))
    report = verify(package, [tile], cache=hw_cache, jobs=2)
    assert not report.ok
    first = next(n for n in report.nodes if n.status == "mismatch")
    assert first.name == mvau.name and first.isolated_equal is False
    assert first.mismatch["count"] >= 1


@needs_toolchain
def test_cli_verifies_a_package_records_it_and_info_shows_it(build_fcn8s, hw_cache, tmp_path):
    from fcnseg.cli import main
    from fcnseg.host.package import load_package

    package = tmp_path / "package"
    shutil.copytree(build_fcn8s.package_dir, package)
    report = tmp_path / "report.json"
    argv = ["verify", str(package), "--cache", str(hw_cache), "--record", "--report", str(report)]
    assert main(argv) == 0
    full = json.loads(report.read_text())
    assert full["ok"] is True and len(full["nodes"]) == len(load_package(package).layers)
    record = json.loads((package / "verification.json").read_text())
    assert record["result"] == "exact" and record["level"] == "chained"
    load_package(package)  # still a valid package: verification.json is listed and hashed


def test_cli_errors_are_one_line(tmp_path, capsys):
    from fcnseg.cli import main

    assert main(["verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "neither a build folder" in err[0]
