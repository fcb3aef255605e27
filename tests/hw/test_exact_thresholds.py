"""Exact thresholds from the trained model to the HW graph, proven at every threshold.

For each package built here (FCN-32s/16s/8s at 4 bits with fused thresholds; an FCN-8s at 2 bits
with standalone thresholds and negative batch-norm factors; an FCN-16s at 8 bits, slow):

- every threshold of every MVAU/Thresholding layer equals the exact one solved from the
  export's record (``misplaced`` lists layer, channel and step of any that does not);
- at the boundary: inputs whose accumulators land exactly on every threshold and on T +- 1 give
  the same level in the exact model, the package layer on the simulator, finn-plus's own
  ``execute_node`` of the HW-graph node, and the Brevitas layer in float64;
- the flow refuses a graph whose thresholds were moved by one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.boundary import (
    boundary_cases,
    brevitas_levels,
    exact_levels,
    finn_levels,
    sim_levels,
)


def _compile(export_dir: Path, out: Path, board: str = "pynq-z2", **options) -> Path:
    from fcnseg.hw.boards import get_board
    from fcnseg.hw.build import BuildOptions, compile_export

    opts = BuildOptions(export_dir, out, get_board(board), vivado=False, **options)
    return compile_export(opts, progress=lambda message: None).package_dir


def _stressed_build(tmp_path_factory, arch: str, bits: int, seed: int, **options):
    from fcnseg.quantize.export import export_model
    from tests.helpers.exact_nets import stressed_net

    model = stressed_net(arch, weight_bits=bits, act_bits=bits, seed=seed)
    root = tmp_path_factory.mktemp(f"{arch}-{bits}bit")
    export_model(model, {}, (64, 64), root / "export")
    return model, root / "export", _compile(root / "export", root / "build", **options)


@pytest.fixture(scope="module")
def fcn8s_2bit_standalone(tmp_path_factory):
    return _stressed_build(
        tmp_path_factory, "fcn8s", 2, seed=3, standalone_thresholds=True, target_fps=2000
    )


@pytest.fixture(scope="module")
def fcn16s_8bit(tmp_path_factory):
    return _stressed_build(tmp_path_factory, "fcn16s", 8, seed=5, target_fps=500)


@pytest.fixture
def built(request, exports, build_fcn8s, build_fcn16s, build_fcn32s):
    """(Brevitas model, export dir, package dir) for a parametrised case."""
    name = request.param
    if name in ("fcn32s", "fcn16s", "fcn8s"):
        package = {
            "fcn8s": build_fcn8s.package_dir,
            "fcn16s": build_fcn16s / "package",
            "fcn32s": build_fcn32s / "package",
        }[name]
        return exports[name].model, exports[name].dir, package
    return request.getfixturevalue(name)


CASES = [
    "fcn32s",
    "fcn16s",
    "fcn8s",
    "fcn8s_2bit_standalone",
    pytest.param("fcn16s_8bit", marks=pytest.mark.slow),
]


def _package(package_dir: Path):
    from fcnseg.host.package import load_package

    return load_package(package_dir)


@pytest.mark.parametrize("built", CASES, indirect=True)
def test_every_threshold_is_exact(built) -> None:
    from fcnseg.hw.steps.exact_thresholds import misplaced, targets
    from fcnseg.quantize.exact.record import load_net

    _, export_dir, package_dir = built
    layers = list(_package(package_dir).layers)
    net = load_net(export_dir)
    holding = [layer for layer in layers if "thresholds" in layer.arrays]
    assert len(targets(layers, net)) == len(holding) == len(net.thresholded())
    assert misplaced(layers, net) == []
    report = json.loads((package_dir.parent / "report" / "exact_thresholds.json").read_text())
    assert report["thresholds"] == sum(layer.arrays["thresholds"].size for layer in holding)


@pytest.mark.parametrize("built", CASES, indirect=True)
def test_boundary_inputs_exact_sim_finn_brevitas_agree(built) -> None:
    """Accumulators on every threshold and on T +- 1, layer by layer, four executions.

    Where an accumulator value next to a threshold is reachable by no input, the nearest
    reachable ones on either side are used (within 64); at least 98% of the thresholds must have
    a tested value on both sides (the rest sit where no input reaches, at the range's ends).
    """
    from qonnx.core.modelwrapper import ModelWrapper

    from fcnseg.hw.steps.exact_thresholds import targets
    from fcnseg.quantize.exact.record import load_net

    model, export_dir, package_dir = built
    layers = list(_package(package_dir).layers)
    by_output = {t: layer for layer in layers for t in layer.outputs}
    hw_graph = ModelWrapper(str(package_dir / "hw_graph.onnx"))
    total = hit = 0
    for target in targets(layers, load_net(export_dir)):
        cases = boundary_cases(target, by_output)
        want = exact_levels(target, cases)
        name = f"{target.layer.name} ({target.step.name})"
        np.testing.assert_array_equal(sim_levels(target, cases), want, f"sim, {name}")
        np.testing.assert_array_equal(finn_levels(target, cases, hw_graph), want, f"finn, {name}")
        if "x" in cases or target.step.op == "requant":
            np.testing.assert_array_equal(
                brevitas_levels(target, cases, model), want, f"Brevitas float64, {name}"
            )
        total += cases["thresholds"]
        hit += cases["bracketed"]
    assert total > 0 and hit >= 0.98 * total, f"only {hit} of {total} thresholds bracketed"


def test_a_moved_threshold_is_refused(build_fcn8s, exports) -> None:
    """One threshold moved by one: listed by layer, channel and step; the flow's check refuses;
    the boundary inputs catch it (the random-photo tests did not catch finn's misplaced ones)."""
    from qonnx.core.modelwrapper import ModelWrapper

    from fcnseg.errors import UserError
    from fcnseg.hw.steps.exact_thresholds import check_model, misplaced
    from fcnseg.quantize.exact.record import load_net

    net = load_net(exports["fcn8s"].dir)
    package_dir = build_fcn8s.package_dir
    hw_graph = ModelWrapper(str(package_dir / "hw_graph.onnx"))
    node = next(n for n in hw_graph.graph.node if n.op_type == "MVAU" and len(n.input) > 2)
    t = hw_graph.get_initializer(node.input[2]).copy()
    t[1, 2] += 1
    hw_graph.set_initializer(node.input[2], t)
    with pytest.raises(UserError, match=rf"layer {node.name} .*channel 1 step 2"):
        check_model(hw_graph, net)
    from fcnseg.hw.to_package import layers_from_model

    layers = layers_from_model(hw_graph)[0]
    bad = misplaced(layers, net)
    assert [(b["layer"], b["channel"], b["step"]) for b in bad] == [(node.name, 1, 2)]
    # and the boundary inputs see it: the simulator of the moved layer disagrees there
    from fcnseg.hw.steps.exact_thresholds import targets

    target = next(t for t in targets(layers, net) if t.layer.name == node.name)
    cases = boundary_cases(target, {o: layer for layer in layers for o in layer.outputs})
    differ = sim_levels(target, cases) != exact_levels(target, cases)
    assert differ.sum() == 1 and cases["channel"][differ][0] == 1


def test_compile_refuses_an_export_without_exact_record(exports, tmp_path) -> None:
    import shutil

    from fcnseg.errors import UserError

    export = tmp_path / "export"
    shutil.copytree(exports["fcn32s"].dir, export)
    (export / "exact.json").unlink()
    with pytest.raises(UserError, match="no exact record"):
        _compile(export, tmp_path / "build")
