"""One realistic build: the default FCN-8s configuration at its 256x256 tile for the Pynq-Z2.

Weights are freshly initialised (the flow does not depend on training); what is checked is that
the shipped architecture goes through the flow, fits the board at >= 60 FPS at 100 MHz, and that
its HW graph is still exact against Brevitas on a real photo at full size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.images import photo_tile

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).resolve().parents[2] / "quantize" / "configs" / "default-fcn8s.json"


@pytest.fixture(scope="module")
def default_build(tmp_path_factory):
    import torch

    from fcnseg.hw.boards import get_board
    from fcnseg.hw.build import BuildOptions, compile_export
    from fcnseg.quantize.export import export_model
    from fcnseg.quantize.models import ModelConfig, build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    fields = json.loads(CONFIG.read_text())["model"]
    cfg = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    model = build_model(cfg)
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, 256, 256) * 255)
    model.eval()
    root = tmp_path_factory.mktemp("default")
    card = export_model(model, {}, (256, 256), root / "export")
    result = compile_export(
        BuildOptions(root / "export", root / "build", get_board("pynq-z2"), vivado=False),
        progress=lambda message: None,
    )
    return model, card, result


def test_default_fcn8s_fits_pynq_z2_at_60_fps(default_build):
    _, _, result = default_build
    s = result.summary
    assert s["target_fps"] == 60 and s["clock_mhz"] == pytest.approx(100)
    assert s["fit"]["fits"] and s["estimated_fps"] >= 60
    assert s["frames"]["tile"] == [256, 256]


def test_default_fcn8s_hw_graph_exact_at_full_tile(default_build, monkeypatch):
    import torch
    from finn.core.onnx_exec import execute_onnx
    from qonnx.core.modelwrapper import ModelWrapper

    from fcnseg.quantize.export import integer_scores

    model, card, result = default_build
    x = photo_tile("astronaut", (256, 256))
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
    expected = integer_scores(getattr(logits, "value", logits).numpy(), card).transpose(0, 2, 3, 1)
    monkeypatch.setenv("SANITIZE_QUANT_TENSORS", "0")
    hw = ModelWrapper(str(result.out_dir / "hw_graph.onnx"))
    out = execute_onnx(hw, {hw.graph.input[0].name: x.transpose(0, 2, 3, 1)})
    np.testing.assert_array_equal(out[hw.graph.output[0].name], expected)
