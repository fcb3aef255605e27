"""The HW graph is exact: finn-plus ``execute_onnx`` on the graph before SpecializeLayers equals
the Brevitas forward and qonnx ``execute_onnx`` on the QONNX export, in integers, on real photos.

finn runs with ``SANITIZE_QUANT_TENSORS=0`` (6x faster). Sanitizing only rounds float carriers of
integer-annotated tensors back to integers; in the HW graph every tensor is an integer computed
from integers (integer weights, integer thresholds, sums far below 2**24), so there is nothing to
round, and the test asserts the outputs are integer-valued to prove it.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.files import read_json
from tests.helpers.images import PHOTOS, photo_tile


def _brevitas_scores(export, x: np.ndarray) -> np.ndarray:
    import torch

    from fcnseg.quantize.export import integer_scores

    with torch.no_grad():
        y = export.model(torch.from_numpy(x))
    logits = getattr(y, "value", y).numpy()
    q = (logits - np.reshape(export.card["output_bias"], (1, -1, 1, 1))) / np.reshape(
        export.card["output_scale"], (1, -1, 1, 1)
    )
    assert np.abs(q - np.rint(q)).max() < 1e-3  # the card's scale/bias really give integers
    return integer_scores(logits, export.card).transpose(0, 2, 3, 1)


def _qonnx_scores(export, x: np.ndarray) -> np.ndarray:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    from fcnseg.quantize.export import integer_scores

    model = ModelWrapper(str(export.dir / "model.onnx"))
    out = execute_onnx(model, {model.graph.input[0].name: x})[model.graph.output[0].name]
    return integer_scores(out, export.card).transpose(0, 2, 3, 1)


def _finn_scores(hw_graph_path, x: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    from finn.core.onnx_exec import execute_onnx
    from qonnx.core.modelwrapper import ModelWrapper

    monkeypatch.setenv("SANITIZE_QUANT_TENSORS", "0")
    model = ModelWrapper(str(hw_graph_path))
    nhwc = x.transpose(0, 2, 3, 1)
    out = execute_onnx(model, {model.graph.input[0].name: nhwc})[model.graph.output[0].name]
    assert np.array_equal(out, np.rint(out)), "HW graph produced non-integer values"
    return out.astype(np.int64)


@pytest.fixture(scope="module")
def builds(build_fcn8s, build_fcn16s, build_fcn32s):
    return {"fcn8s": build_fcn8s.out_dir, "fcn16s": build_fcn16s, "fcn32s": build_fcn32s}


@pytest.mark.parametrize("photo", PHOTOS)
@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s"])
def test_hw_graph_equals_brevitas_and_qonnx(arch, photo, exports, builds, monkeypatch):
    export = exports[arch]
    x = photo_tile(photo)
    brevitas = _brevitas_scores(export, x)
    qonnx = _qonnx_scores(export, x)
    finn = _finn_scores(builds[arch] / "hw_graph.onnx", x, monkeypatch)
    s = export.card["output_stride"]
    assert finn.shape == (1, x.shape[2] // s, x.shape[3] // s, len(export.card["classes"]))
    np.testing.assert_array_equal(qonnx, brevitas)
    np.testing.assert_array_equal(finn, brevitas)
    assert np.ptp(finn) > 0  # not a constant map


@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s"])
def test_recorded_output_affine_matches_model_card(arch, exports, builds):
    """The float tail cut off the graph is exactly the card's per-class scale and bias."""
    affine = read_json(builds[arch] / "report" / "fcnseg_summary.json")["output_affine"]
    card = exports[arch].card
    np.testing.assert_allclose(affine["scale"], card["output_scale"], rtol=1e-6)
    np.testing.assert_allclose(affine["bias"], card["output_bias"], rtol=1e-6, atol=1e-9)
    assert affine["matches_model_card"] is True
    package = read_json(builds[arch] / "package" / "accelerator.json")
    np.testing.assert_allclose(package["io"]["output"]["scale"], affine["scale"])
    assert package["io"]["output"]["dtype"].startswith("INT")
    assert package["io"]["input"]["dtype"] == "UINT8"


@pytest.mark.parametrize("arch", ["fcn32s", "fcn8s"])
def test_hw_graph_is_before_specialisation_and_integer(arch, builds):
    from qonnx.core.modelwrapper import ModelWrapper

    for path in (builds[arch] / "hw_graph.onnx", builds[arch] / "package" / "hw_graph.onnx"):
        model = ModelWrapper(str(path))
        kinds = {n.op_type for n in model.graph.node}
        assert all(n.domain.startswith("finn.custom_op.fpgadataflow") for n in model.graph.node)
        assert not any(k.endswith(("_hls", "_rtl")) for k in kinds), kinds
        assert "MVAU" in kinds
        out = model.graph.output[0].name
        assert model.get_tensor_datatype(out).is_integer()
        assert model.get_tensor_layout(out) in (None, ["N", "H", "W", "C"])
    if arch != "fcn32s":
        assert {"DuplicateStreams", "ElementwiseAdd", "UpsampleNearestNeighbour"} <= kinds
