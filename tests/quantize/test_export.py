"""fcnseg export: QONNX + QCDQ + model card; qonnx execute_onnx == Brevitas, integer-exact."""

from __future__ import annotations

import hashlib
import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("brevitas")
pytest.importorskip("qonnx")

import numpy as np  # noqa: E402

from fcnseg.cli import main  # noqa: E402
from fcnseg.quantize.export import export_checkpoint, integer_scores  # noqa: E402
from fcnseg.quantize.models import receptive_field  # noqa: E402
from fcnseg.quantize.models.io import save_checkpoint  # noqa: E402
from tests.helpers.fcn_nets import calibrated, photos  # noqa: E402

ARCHS = ["fcn32s", "fcn16s", "fcn8s"]
TILE = (64, 96)  # non-square on purpose: catches H/W mix-ups
CLASSES = ["background", "cat", "mug"]
PALETTE = [[0, 0, 0], [200, 100, 0], [0, 90, 200]]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """arch -> (model, checkpoint path, export dir, card); fcn8s goes through the CLI."""
    root = tmp_path_factory.mktemp("export")
    result = {}
    for arch in ARCHS:
        model = calibrated(arch, size=TILE)
        ckpt = save_checkpoint(
            root / f"{arch}.safetensors",
            model,
            model.cfg,
            {"classes": CLASSES, "palette": PALETTE, "metrics": {"mean_iu": 0.5}},
        )
        out = root / f"{arch}-export"
        if arch == "fcn8s":
            assert main(["export", str(ckpt), "--tile", *map(str, TILE), "-o", str(out)]) == 0
            card = json.loads((out / "model.json").read_text())
        else:
            card = export_checkpoint(ckpt, TILE, out)
        result[arch] = (model, ckpt, out, card)
    return result


@pytest.mark.parametrize("arch", ARCHS)
def test_qonnx_equals_brevitas_on_photos_integer_exact(arch, exported):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    model, _, out, card = exported[arch]
    wrapper = ModelWrapper(str(out / "model.onnx"))
    x = photos(TILE)  # astronaut, chelsea, coffee
    with torch.no_grad():
        expected = integer_scores(model(x).numpy(), card)
    for i in range(len(x)):
        logits = execute_onnx(wrapper, {"global_in": x[i : i + 1].numpy()})["global_out"]
        got = integer_scores(logits, card)
        np.testing.assert_array_equal(got, expected[i : i + 1])
    assert len(np.unique(expected)) > 5  # not a degenerate all-zero net


@pytest.mark.parametrize("arch", ARCHS)
def test_qonnx_graph_static_uint8_input(arch, exported):
    import onnx
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    _, _, out, card = exported[arch]
    wrapper = ModelWrapper(str(out / "model.onnx"))
    graph = wrapper.graph
    assert [i.name for i in graph.input] == ["global_in"]
    assert [o.name for o in graph.output] == ["global_out"]
    assert wrapper.get_tensor_datatype("global_in") == DataType["UINT8"]
    assert wrapper.get_tensor_shape("global_in") == [1, 3, *TILE]
    s = card["output_stride"]
    assert wrapper.get_tensor_shape("global_out") == [1, 3, TILE[0] // s, TILE[1] // s]
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        assert vi.type.tensor_type.HasField("shape"), vi.name  # scalars have no dims
        assert all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim), vi.name
    ops = [n.op_type for n in graph.node]
    assert "Quant" in ops and "Conv" in ops
    resizes = [n for n in graph.node if n.op_type == "Resize"]
    assert len(resizes) == {"fcn32s": 0, "fcn16s": 1, "fcn8s": 2}[arch]
    for node in resizes:
        mode = next(a for a in node.attribute if a.name == "mode")
        assert onnx.helper.get_attribute_value(mode) == b"nearest"
    assert not list(out.glob("*.data"))  # no dynamo sidecar
    assert sorted(p.name for p in out.iterdir()) == [
        "exact.json", "exact.npz", "model.json", "model.onnx", "model_qcdq.onnx"
    ]  # fmt: skip


@pytest.mark.parametrize("arch", ARCHS)
def test_model_card(arch, exported):
    model, ckpt, out, card = exported[arch]
    assert card == json.loads((out / "model.json").read_text())
    assert card["format"] == "fcnseg-model/1"
    assert card["arch"] == arch and card["classes"] == CLASSES and card["palette"] == PALETTE
    assert card["input"]["dtype"] == "UINT8" and card["input"]["layout"] == "NCHW"
    assert "1/255" in card["input"]["normalisation"]
    assert card["tile"] == list(TILE)
    assert card["output_stride"] == {"fcn32s": 32, "fcn16s": 16, "fcn8s": 8}[arch]
    scale, bias = model.output_scale_bias()
    assert card["output_scale"] == scale.tolist() and card["output_bias"] == bias.tolist()
    assert card["receptive_field"] == receptive_field(model.cfg)
    assert card["model_config"] == model.cfg.to_dict()
    assert card["metrics"] == {"mean_iu": 0.5}
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert card["source_checkpoint"] == {"file": ckpt.name, "sha256": digest}
    assert card["export_seconds"] < 60


@pytest.mark.parametrize("arch", ["fcn32s", "fcn8s"])
def test_qcdq_runs_in_onnxruntime_close_to_brevitas(arch, exported):
    """QCDQ is a speed reference only: close to Brevitas, not promised bit-exact."""
    import onnxruntime as ort

    model, _, out, card = exported[arch]
    session = ort.InferenceSession(str(out / "model_qcdq.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = photos(TILE)
    with torch.no_grad():
        expected = integer_scores(model(x).numpy(), card)
    got = np.concatenate(
        [integer_scores(session.run(None, {name: x[i : i + 1].numpy()})[0], card) for i in range(3)]
    )
    assert got.shape == expected.shape
    mismatch = float((got != expected).mean())
    print(f"\n{arch} QCDQ/onnxruntime vs Brevitas: {mismatch:.1%} of integer scores differ")
    assert mismatch < 0.5


def test_reexport_replaces_atomically_and_failure_keeps_old(exported, tmp_path, monkeypatch):
    import fcnseg.quantize.export as export_module

    _, ckpt, _, _ = exported["fcn32s"]
    out = tmp_path / "exp"
    export_checkpoint(ckpt, (32, 32), out)
    before = (out / "model.json").read_text()
    export_checkpoint(ckpt, (64, 64), out)
    assert json.loads((out / "model.json").read_text())["tile"] == [64, 64]
    assert [p.name for p in tmp_path.iterdir()] == ["exp"]  # no temp dirs left

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_module, "export_qcdq_file", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_checkpoint(ckpt, (32, 32), out)
    assert json.loads((out / "model.json").read_text())["tile"] == [64, 64]
    assert before != (out / "model.json").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["exp"]


def test_cli_user_errors(tmp_path, capsys, exported):
    missing = tmp_path / "nope.safetensors"
    assert main(["export", str(missing), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"fcnseg: error: checkpoint not found: {missing}"
    _, ckpt, _, _ = exported["fcn32s"]
    assert main(["export", str(ckpt), "--tile", "100", "64", "-o", str(tmp_path / "o")]) == 2
    assert "multiples of 32" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
