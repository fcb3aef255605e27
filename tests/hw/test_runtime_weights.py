"""``fcnseg compile --runtime-weights``: the memory layout, finn's weight files, the record.

The layout (docs/runtime_weights.md, :mod:`fcnseg.hw.runtime_weights`) is checked against
finn-plus's own writer (``make_weight_file(..., "decoupled_runtime", ...)``) on single nodes
with folds that put several lanes in a word and a line across two and three words, and on a
real build: every ``.dat`` of the package decodes to exactly the package's weights and to the
graph's thresholds. The record is then tampered with, consistently re-hashed, and refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fcnseg.errors import UserError
from fcnseg.hw import runtime_weights as rw

TILE = (64, 64)


def _node(op_type: str, **attrs):
    from onnx import helper
    from qonnx.custom_op.registry import getCustomOp

    node = helper.make_node(
        op_type,
        ["inp", "param"],
        ["out"],
        domain="finn.custom_op.fpgadataflow.rtl",
        backend="fpgadataflow",
        name=f"{op_type}_0",
        **attrs,
    )
    return getCustomOp(node)


@pytest.mark.parametrize(
    "pe, simd, wdt, mw, mh",
    [
        (1, 1, "INT4", 6, 4),  # one lane per word
        (2, 3, "INT4", 6, 4),  # 24-bit lines
        (4, 3, "INT4", 6, 8),  # 48-bit lines: two words, a lane across the boundary
        (4, 3, "INT8", 9, 8),  # 96-bit lines: three words padded to four
        (2, 2, "UINT3", 4, 6),  # unsigned, 3-bit lanes
    ],
)
def test_mvau_words_are_finns(tmp_path: Path, pe, simd, wdt, mw, mh) -> None:
    from qonnx.core.datatype import DataType

    inst = _node(
        "MVAU_rtl",
        MW=mw,
        MH=mh,
        PE=pe,
        SIMD=simd,
        inputDataType="UINT4",
        weightDataType=wdt,
        outputDataType="INT32",
        accDataType="INT32",
        noActivation=1,
        mem_mode="internal_decoupled",
        runtime_writeable_weights=1,
    )
    dt = DataType[wdt]
    rng = np.random.default_rng(pe * 10 + simd)
    weights = rng.integers(dt.min(), dt.max() + 1, size=(mw, mh))
    weights[0, 0], weights[-1, -1] = dt.min(), dt.max()  # both ends of the datatype
    inst.make_weight_file(weights.astype(np.float32), "decoupled_runtime", str(tmp_path / "w.dat"))
    finn = rw.read_dat(tmp_path / "w.dat")
    layout = rw._mvau_layout(inst)
    assert layout["words"] == len(finn)
    assert layout["words_per_line"] == {24: 1, 48: 2, 96: 4}.get(layout["line_bits"], 1)
    words = rw.encode_mvau(weights, layout)
    np.testing.assert_array_equal(words, finn)
    np.testing.assert_array_equal(rw.decode_mvau(finn, layout, dt.signed()), weights)
    entry = {**layout, "kind": "MVAU", "dtype": wdt}
    np.testing.assert_array_equal(rw.decode_layer(finn, entry), weights)
    np.testing.assert_array_equal(rw.encode_layer(weights, entry), finn)
    # the bits a memory stores: finn's words of an all-ones tensor (padding words stay 0)
    ones = np.full((mw, mh), -1 if dt.signed() else dt.max(), dtype=np.float32)
    inst.make_weight_file(ones, "decoupled_runtime", str(tmp_path / "ones.dat"))
    np.testing.assert_array_equal(rw.valid_bits(entry), rw.read_dat(tmp_path / "ones.dat"))


@pytest.mark.parametrize(
    "pe, channels, steps, tdt",
    [(1, 4, 15, "INT22"), (3, 6, 15, "INT10"), (2, 4, 3, "UINT9"), (4, 4, 1, "INT5")],
)
def test_threshold_words_are_finns(tmp_path: Path, pe, channels, steps, tdt) -> None:
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    odt = {15: "UINT4", 3: "UINT2", 1: "UINT1"}[steps]
    inst = _node(
        "Thresholding_rtl",
        NumChannels=channels,
        PE=pe,
        numSteps=steps,
        inputDataType="INT12",
        weightDataType=tdt,
        outputDataType=odt,
        runtime_writeable_weights=1,
    )
    dt = DataType[tdt]
    rng = np.random.default_rng(channels + steps)
    t = np.sort(rng.integers(dt.min(), dt.max() + 1, size=(channels, steps)), axis=1)
    t[0, 0], t[-1, -1] = dt.min(), dt.max()
    inst.make_weight_file(t.astype(np.float32), "decoupled_runtime", str(tmp_path / "t.dat"))
    finn = rw.read_dat(tmp_path / "t.dat")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [inst.onnx_node],
        "g",
        [helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1, channels])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, channels])],
    )
    model = ModelWrapper(qonnx_make_model(graph))
    model.set_initializer("param", t.astype(np.float32))
    layout = rw._threshold_layout(inst, model)
    assert layout["words"] == len(finn)
    np.testing.assert_array_equal(rw.encode_thresholds(t, layout), finn)
    np.testing.assert_array_equal(rw.decode_thresholds(finn, layout, dt.signed()), t)
    entry = {**layout, "kind": "Thresholding", "dtype": tdt}
    np.testing.assert_array_equal(rw.decode_layer(finn, entry), t)
    ones = np.full((channels, steps), -1 if dt.signed() else dt.max(), dtype=np.float32)
    inst.make_weight_file(ones, "decoupled_runtime", str(tmp_path / "ones.dat"))
    np.testing.assert_array_equal(rw.valid_bits(entry), rw.read_dat(tmp_path / "ones.dat"))


def test_first_difference_names_the_layer_and_the_values() -> None:
    node = {
        "name": "MVAU_rtl_2",
        "op_type": "MVAU_rtl",
        "attributes": {"PE": 2, "SIMD": 4, "weightDataType": "INT4"},
        "inputs": [{"from": "x", "shape": [1, 8], "datatype": "UINT4"}],
        "outputs": [{"shape": [1, 8], "datatype": "INT12"}],
    }
    old = {"format": rw.FINGERPRINT_FORMAT, "version": 1, "nodes": [node]}
    assert rw.first_difference(old, json.loads(json.dumps(old))) is None
    new = json.loads(json.dumps(old))
    new["nodes"][0]["attributes"]["SIMD"] = 2
    assert rw.first_difference(old, new) == "layer MVAU_rtl_2: SIMD old 4 vs new 2"
    new = json.loads(json.dumps(old))
    new["nodes"][0]["outputs"][0]["datatype"] = "INT13"
    assert rw.first_difference(old, new) == (
        "layer MVAU_rtl_2: output 0 datatype differ old INT12 vs new INT13"
    )
    new = json.loads(json.dumps(old))
    new["nodes"][0]["inputs"].append({"from": "constant", "sha256": "0" * 64})
    assert rw.first_difference(old, new) == "layer MVAU_rtl_2: 1 inputs old vs 2 new"
    new = json.loads(json.dumps(old))
    new["nodes"].append(node)
    assert rw.first_difference(old, new) == "graph: 1 HW layers old vs 2 new"


def test_runtime_weights_need_standalone_thresholds(tmp_path: Path) -> None:
    from fcnseg.hw.boards import get_board
    from fcnseg.hw.build import BuildOptions, compile_export

    opts = BuildOptions(tmp_path, tmp_path / "b", get_board("pynq-z2"), runtime_weights=True)
    with pytest.raises(UserError, match="need standalone thresholds"):
        compile_export(opts)
    assert not (tmp_path / "b").exists()


# --------------------------------------------------------------------------- on a real build


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory):
    """A tiny FCN-32s compiled with --runtime-weights through the CLI (folded at a rate that
    gives PE and SIMD above 1 somewhere, so lines hold several lanes)."""
    import torch

    from fcnseg.cli import main
    from fcnseg.quantize.export import export_checkpoint
    from fcnseg.quantize.models.io import save_checkpoint
    from tests.helpers.fcn_nets import calibrated

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("rw")
    model = calibrated("fcn32s", seed=0, size=TILE)
    export_checkpoint(save_checkpoint(root / "a.safetensors", model, model.cfg), TILE, root / "ex")
    argv = ["compile", str(root / "ex"), "--board", "pynq-z2", "--target-fps", "3000"]
    assert main([*argv, "--no-vivado", "--runtime-weights", "-o", str(root / "build")]) == 0
    return root / "build"


def _folded(build: Path):
    from qonnx.core.modelwrapper import ModelWrapper

    return ModelWrapper(str(build / "intermediate_models" / "step_generate_estimate_reports.onnx"))


def test_every_parameter_layer_is_writable_and_recorded(build: Path) -> None:
    from fcnseg.host.package import load_package

    package = load_package(build / "package")
    record = package.meta["runtime_weights"]
    kinds = [layer.kind for layer in package.layers if layer.kind in rw.WRITABLE_KINDS]
    assert [e["kind"] for e in record["layers"]] == kinds
    assert {e["layer"] for e in record["layers"]} == {
        layer.name for layer in package.layers if layer.kind in rw.WRITABLE_KINDS
    }
    assert record["fingerprint_sha256"] == rw.fingerprint_digest(record["fingerprint"])
    assert record["fingerprint"] == rw.fingerprint(_folded(build))
    for node in record["fingerprint"]["nodes"]:
        if node["op_type"].startswith(rw.WRITABLE_KINDS):
            assert node["attributes"]["runtime_writeable_weights"] == 1
    folds = [e["folding"].get("PE", 1) * e["folding"].get("SIMD", 1) for e in record["layers"]]
    assert max(folds) > 1  # the fixture's promise: some line holds several lanes
    # finn's Floorplan: one writable layer per partition, after idma0 and before odma0
    parts = [e["partition"] for e in record["layers"]]
    assert (
        len(set(parts)) == len(parts) and 0 < min(parts) and max(parts) < record["partitions"] - 1
    )
    for e in record["layers"]:
        assert e["file"] == f"runtime_weights/{e['partition']}_0_{e['node']}.dat"
    offsets = [
        e["predicted_offset"] for e in sorted(record["layers"], key=lambda e: e["partition"])
    ]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert record["axi_base"] == 0x4000_0000  # pynq-z2: Zynq-7000


def test_weight_files_decode_to_the_package(build: Path) -> None:
    from qonnx.custom_op.registry import getCustomOp

    from fcnseg.host.package import load_package

    package = load_package(build / "package")
    layers = {layer.name: layer for layer in package.layers}
    folded = _folded(build)
    nodes = {n.name: n for n in folded.graph.node}
    for entry in package.meta["runtime_weights"]["layers"]:
        words = rw.read_dat(package.path / entry["file"])
        assert len(words) == entry["words"]
        node = nodes[entry["node"]]
        signed = getCustomOp(node).get_input_datatype(1).signed()
        graph_values = folded.get_initializer(node.input[1]).astype(np.int64)
        if entry["kind"] == "MVAU":
            weights = layers[entry["layer"]].arrays["weights"]
            np.testing.assert_array_equal(rw.decode_mvau(words, entry, signed), weights)
            np.testing.assert_array_equal(rw.encode_mvau(weights, entry), words)
        else:
            decoded = rw.decode_thresholds(words, entry, signed)
            np.testing.assert_array_equal(decoded, graph_values)
            # the package's thresholds are the graph's clipped to the proven input range
            p = layers[entry["layer"]].arrays["thresholds"].astype(np.int64)
            np.testing.assert_array_equal(np.clip(decoded, p.min(), p.max()), p)


def _refused(package: Path, tmp_path: Path, edit, needle: str) -> None:
    from fcnseg.host.package import load_package
    from tests.helpers.tamper import copy_package, tamper

    copy = copy_package(package, tmp_path / "copy")
    tamper(copy, json_edit=edit)
    with pytest.raises(UserError) as info:
        load_package(copy)
    message = str(info.value)
    assert needle in message and "\n" not in message, message


def _first(meta):
    return meta["runtime_weights"]["layers"][0]


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda m: [m["runtime_weights"]["fingerprint"]["nodes"].pop()], "not the sha256"),
        (lambda m: _first(m).update(words=_first(m)["words"] + 1), "words must be lines x"),
        (lambda m: _first(m).update(index=3), "index 3 but it is #0"),
        (lambda m: _first(m).update(layer="Pool_0"), "is not the kind of a package layer"),
        (lambda m: _first(m).update(file="elsewhere.dat"), "is not runtime_weights/"),
        (
            lambda m: _first(m).update(partition=0),
            "'StreamingDataflowPartition_2' is not partition 0",
        ),
        (lambda m: m["runtime_weights"].update(partitions=3), "between idma0's 0 and odma0's 2"),
        (lambda m: _first(m).update(interface="s_axilite_1"), "is not s_axilite_0"),
        (lambda m: _first(m).update(address_bits=30), "need"),
        (lambda m: _first(m).update(narrow_weights="yes"), "narrow_weights must be"),
        (lambda m: _first(m).update(dtype="INT3"), "dtype INT3 but the layer declares"),
        (lambda m: _first(m).update(shape=[1, 1]), "shape [1, 1] but the package has"),
        (lambda m: m["runtime_weights"].update(zynq="versal"), "zynq 'versal'"),
    ],
)
def test_a_tampered_record_is_refused(build: Path, tmp_path: Path, edit, needle) -> None:
    _refused(build / "package", tmp_path, edit, needle)


def test_a_short_weight_file_is_refused(build: Path, tmp_path: Path) -> None:
    from fcnseg.host.package import load_package
    from tests.helpers.tamper import copy_package, read_meta, rehash

    copy = copy_package(build / "package", tmp_path / "copy")
    entry = read_meta(copy)["runtime_weights"]["layers"][2]
    path = copy / entry["file"]
    path.write_text("\n".join(path.read_text().split()[:-1]) + "\n")
    rehash(copy)
    with pytest.raises(UserError, match=rf"{entry['file']}: layer .*: {entry['words'] - 1} words"):
        load_package(copy)
