"""``fcnseg swap-weights``: a retrained checkpoint on a runtime-weights package's bitfile.

One tiny FCN-32s package is built with ``--runtime-weights`` (with a stand-in bitfile, .hwh and
driver settings added, so sharing them is visible). A compatible retrain (same architecture,
other weights and scales) is accepted and the new package's simulator equals float64 Brevitas
of the *new* checkpoint exactly, where the old package's does not; each kind of incompatibility
is refused with its one line and nothing is written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fcnseg.errors import UserError

# one build (12 s), one swap (7 s) and two refused rebuilds (10 s each) on 2 shared cores
pytestmark = pytest.mark.slow

TILE = (64, 64)
FAKE_FILES = {
    "bitfile/top.bit": b"\x00\x09bitstream stand-in",
    "bitfile/top.hwh": b"<hwh stand-in/>",
    "driver/settings.json": b'{"driver_information": {"runtime_weights": true}}',
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import torch

    from fcnseg.host.package import add_package_files
    from fcnseg.hw.boards import get_board
    from fcnseg.hw.build import BuildOptions, compile_export
    from fcnseg.quantize.export import export_checkpoint
    from fcnseg.quantize.models.io import save_checkpoint
    from tests.helpers.fcn_nets import calibrated
    from tests.helpers.packages import tiny_package

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("swap")
    models = {
        "old": calibrated("fcn32s", seed=0, size=TILE),
        "retrained": calibrated("fcn32s", seed=1, size=TILE),
        "wider": calibrated("fcn32s", seed=0, size=TILE, head_width=8),
        "8bit": calibrated("fcn32s", seed=0, size=TILE, weight_bits=8),
    }
    ckpts = {k: save_checkpoint(root / f"{k}.safetensors", m, m.cfg) for k, m in models.items()}
    export_checkpoint(ckpts["old"], TILE, root / "export")
    opts = BuildOptions(
        root / "export",
        root / "build",
        get_board("pynq-z2"),
        target_fps=3000,
        vivado=False,
        hardware_sources=False,
        standalone_thresholds=True,
        runtime_weights=True,
    )
    runtime = compile_export(opts, progress=lambda message: None).package_dir
    add_package_files(runtime, FAKE_FILES)
    fixed = tiny_package(root / "fixed")  # any package without runtime weights
    return {"root": root, "models": models, "ckpts": ckpts, "runtime": runtime, "fixed": fixed}


@pytest.fixture(scope="module")
def swapped(setup: dict) -> Path:
    from fcnseg.hw.swap_weights import swap_weights

    out = setup["root"] / "swapped"
    result = swap_weights(setup["runtime"], setup["ckpts"]["retrained"], out, lambda m: None)
    assert result.package_dir == out and result.changed_layers == result.layers > 0
    return out


def _scores(package_dir: Path, pixels: np.ndarray) -> np.ndarray:
    from fcnseg.host.package import load_package
    from fcnseg.host.sim.engine import SimEngine

    return SimEngine(load_package(package_dir)).run(pixels)


def test_a_compatible_retrain_runs_exactly_on_the_old_bitfile(setup: dict, swapped: Path) -> None:
    from tests.helpers.exact_nets import brevitas_scores, random_pixels
    from tests.helpers.images import photo_tile

    pixels = np.concatenate(
        [
            random_pixels((2, *TILE, 3), seed=5),
            photo_tile("coffee", TILE).transpose(0, 2, 3, 1).astype(np.uint8),
        ]
    )
    new = brevitas_scores(setup["models"]["retrained"], pixels)
    np.testing.assert_array_equal(_scores(swapped, pixels), new)
    # the old package computes the old net: the comparison above could fail
    assert not np.array_equal(_scores(setup["runtime"], pixels), new)


def test_the_new_package_keeps_the_hardware_and_carries_new_weight_files(
    setup: dict, swapped: Path
) -> None:
    from fcnseg.host.package import load_package

    old, new = load_package(setup["runtime"]), load_package(swapped)
    for rel, data in FAKE_FILES.items():
        assert (swapped / rel).read_bytes() == data
    assert new.estimates == old.estimates
    old_rec, new_rec = old.meta["runtime_weights"], new.meta["runtime_weights"]
    assert new_rec["fingerprint_sha256"] == old_rec["fingerprint_sha256"]
    assert new_rec["swapped_from"]["manifest_sha256"] == old.meta["manifest_sha256"]
    for a, b in zip(old_rec["layers"], new_rec["layers"], strict=True):
        assert a == b  # the same layout, on the same interfaces
        assert (swapped / b["file"]).read_bytes() != (setup["runtime"] / a["file"]).read_bytes()


def _refused(setup: dict, package: Path, ckpt: str, capsys, *needles: str) -> str:
    from fcnseg.cli import main

    out = setup["root"] / f"refused-{ckpt}"
    code = main(["swap-weights", str(package), str(setup["ckpts"][ckpt]), "-o", str(out)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("fcnseg: error:")]
    assert code == 2 and len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists()  # nothing written
    return lines[0]


def test_another_shape_is_refused_with_the_layer(setup: dict, capsys) -> None:
    _refused(
        setup, setup["runtime"], "wider", capsys, "does not fit the bitfile", "MH old 16 vs new 8"
    )


def test_another_weight_datatype_is_refused(setup: dict, capsys) -> None:
    _refused(setup, setup["runtime"], "8bit", capsys, "does not fit the bitfile", "INT4", "INT8")


def test_a_package_without_runtime_weights_is_refused(setup: dict, capsys) -> None:
    _refused(setup, setup["fixed"], "retrained", capsys, "not built with runtime-writable")


def _folded_and_record(setup: dict):
    from qonnx.core.modelwrapper import ModelWrapper

    from fcnseg.host.package import load_package

    build = setup["runtime"].parent
    step = build / "intermediate_models" / "step_generate_estimate_reports.onnx"
    return ModelWrapper(str(step)), load_package(setup["runtime"]).meta["runtime_weights"]


def test_a_minimum_weight_in_a_narrow_layer_is_refused(setup: dict) -> None:
    from fcnseg.hw.swap_weights import check_parameters

    folded, record = _folded_and_record(setup)
    entry = next(e for e in record["layers"] if e["kind"] == "MVAU" and e["dtype"] == "INT4")
    assert entry["narrow_weights"] is True  # Brevitas's narrow-range weights: no -8
    node = next(n for n in folded.graph.node if n.name == entry["node"])
    weights = folded.get_initializer(node.input[1]).copy()
    check_parameters(folded, record, "here")  # as built: accepted
    weights[0, 0] = -8
    folded.set_initializer(node.input[1], weights)
    with pytest.raises(UserError, match=rf"here: layer {entry['layer']}: weight -8 is the INT4"):
        check_parameters(folded, record, "here")
    # a bitfile built with a -8 (not narrow) takes one
    wide = {**record, "layers": [{**e, "narrow_weights": False} for e in record["layers"]]}
    check_parameters(folded, wide, "here")
    weights[0, 0] = 8
    folded.set_initializer(node.input[1], weights)
    with pytest.raises(UserError, match=r"weights span \[-?\d+, 8\], outside INT4 \[-8, 7\]"):
        check_parameters(folded, wide, "here")
