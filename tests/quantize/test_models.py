"""The FCN family: shapes, quantizers, bit widths, fusion wiring, receptive field, checkpoints."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("brevitas")

import numpy as np  # noqa: E402
from brevitas.nn import QuantConv2d, QuantIdentity, QuantReLU  # noqa: E402

from fcnseg.errors import UserError  # noqa: E402
from fcnseg.quantize.models import (  # noqa: E402
    ModelConfig,
    build_model,
    receptive_field,
)
from fcnseg.quantize.models.common import ScoreQuant  # noqa: E402
from fcnseg.quantize.models.io import load_checkpoint, save_checkpoint  # noqa: E402
from tests.helpers.fcn_nets import calibrated, photos, tiny_config  # noqa: E402

ARCHS = ["fcn32s", "fcn16s", "fcn8s"]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def nets():
    return {arch: calibrated(arch) for arch in ARCHS}


@pytest.mark.parametrize("quantized", [True, False])
@pytest.mark.parametrize("arch", ARCHS)
def test_output_is_input_over_stride(arch, quantized):
    model = build_model(tiny_config(arch, quantized=quantized)).eval()
    y = model(torch.randint(0, 256, (2, 3, 64, 96)).float())
    s = model.output_stride
    assert s == {"fcn32s": 32, "fcn16s": 16, "fcn8s": 8}[arch]
    assert tuple(y.shape) == (2, 3, 64 // s, 96 // s)


@pytest.mark.parametrize("arch", ARCHS)
def test_float_twin_has_same_topology_and_names(arch):
    q = build_model(tiny_config(arch))
    f = build_model(tiny_config(arch, quantized=False))
    assert not any(isinstance(m, (QuantConv2d, QuantReLU, QuantIdentity)) for m in f.modules())
    qnames = {n for n, _ in q.named_parameters() if "quant" not in n}
    fnames = {n for n, _ in f.named_parameters()}
    assert qnames == fnames
    # a float checkpoint initialises QAT: weights load by name
    missing = q.load_state_dict(f.state_dict(), strict=False).missing_keys
    assert all("quant" in k for k in missing)


def test_input_quantizer_is_raw_uint8_with_fixed_scale(nets):
    model = nets["fcn8s"]
    pixels = torch.arange(256, dtype=torch.float32).reshape(1, 1, 16, 16).repeat(1, 3, 1, 1)
    q = model.pixels(pixels)
    assert torch.equal(q.int(), pixels.int())
    assert float(q.scale) == pytest.approx(1 / 255, rel=1e-7)
    assert int(q.bit_width) == 8 and not q.signed
    assert not list(model.quant_inp.parameters())  # nothing learned for the input


def test_bit_widths_first_and_last_layers_8bit(nets):
    model = nets["fcn8s"]
    bits = {n: int(m.quant_weight().bit_width) for n, m in model.named_modules()
            if isinstance(m, QuantConv2d)}  # fmt: skip
    assert bits.pop("features.stage1.conv1_1") == 8
    for name in ("score_fr", "score_pool4", "score_pool3"):
        assert bits.pop(name) == 8
    assert set(bits.values()) == {4}
    relus = [m for m in model.modules() if isinstance(m, QuantReLU)]
    assert {int(m.act_quant.bit_width()) for m in relus} == {4}
    for name in ("score_fr", "score_pool4", "score_pool3"):
        conv = getattr(model, name)
        assert conv.bias is not None and conv.bias_quant.is_quant_enabled is False


@pytest.mark.parametrize("arch", ["fcn16s", "fcn8s"])
def test_skip_fusion_shares_one_quantizer_and_upsamples_nearest(arch, nets):
    model = nets[arch]
    fuse = [m for m in model.modules() if isinstance(m, QuantIdentity) and m is not model.quant_inp]
    assert len(fuse) == 1 and fuse[0] is model.quant_fuse
    assert issubclass(model.quant_fuse.act_quant.quant_injector, ScoreQuant)
    ups = [m for m in model.modules() if isinstance(m, torch.nn.Upsample)]
    assert ups and all(m.mode == "nearest" and m.scale_factor == 2 for m in ups)


@pytest.mark.parametrize("arch", ARCHS)
def test_outputs_are_integer_scores_times_scale_plus_bias(arch, nets):
    model = nets[arch]
    with torch.no_grad():
        logits = model(photos()).double().numpy()
    scale, bias = model.output_scale_bias()
    assert scale.shape == bias.shape == (3,) and (scale > 0).all()
    q = (logits - bias.reshape(1, -1, 1, 1)) / scale.reshape(1, -1, 1, 1)
    assert np.abs(q - np.rint(q)).max() < 1e-3
    assert len(np.unique(np.rint(q))) > 5  # not degenerate
    if arch != "fcn32s":
        assert np.abs(q).max() <= 2 * 128  # a sum of two int8 addends


def test_float_twin_scale_bias_are_identity():
    model = build_model(tiny_config("fcn8s", quantized=False))
    scale, bias = model.output_scale_bias()
    assert (scale == 1).all() and (bias == 0).all()


def test_receptive_field_from_topology():
    # tiny: one 3x3 conv per stage, fc6 3x3: 3+1, +4+2, +8+4, +16+8, +32+16, +64 = 158
    assert receptive_field(tiny_config("fcn32s")) == 158
    assert receptive_field(tiny_config("fcn32s", head_kernel=1)) == 94
    # the skip branches' fields nest inside the coarse cell's field they are added to
    assert receptive_field(tiny_config("fcn16s")) == 158
    assert receptive_field(tiny_config("fcn8s")) == 158
    assert receptive_field(ModelConfig(arch="fcn32s")) > 158


def test_receptive_field_matches_gradient_support():
    """The float twin's input-gradient support of one output cell spans the computed field."""
    torch.manual_seed(0)
    cfg = tiny_config("fcn32s", quantized=False)
    model = build_model(cfg).eval()
    for m in model.modules():  # positive weights: no cancellation hides a dependency
        if isinstance(m, torch.nn.Conv2d):
            m.weight.data = m.weight.data.abs() + 0.01
    x = torch.rand(1, 3, 32 * 16, 32 * 16, requires_grad=True)
    with torch.no_grad():
        x.mul_(255)
    model(x)[0, 0, 8, 8].backward()
    cols = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 2))).flatten()
    # max-pool routes gradient to one input per window: support <= field, and close to it
    span = int(cols.max() - cols.min() + 1)
    assert span <= receptive_field(cfg) and span > receptive_field(cfg) - 32


def test_config_roundtrip_and_validation():
    cfg = tiny_config("fcn16s", weight_bits=3)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError):
        ModelConfig(arch="fcn4s")
    with pytest.raises(ValueError):
        ModelConfig(head_kernel=2)
    with pytest.raises(ValueError):
        ModelConfig(widths=(1, 2, 3))


def test_checkpoint_roundtrip(tmp_path, nets):
    model = nets["fcn8s"]
    path = save_checkpoint(
        tmp_path / "m.safetensors", model, model.cfg, {"classes": ["a", "b", "c"]}
    )
    loaded, meta = load_checkpoint(path)
    assert meta["classes"] == ["a", "b", "c"] and meta["model_config"] == model.cfg.to_dict()
    x = photos()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert np.array_equal(loaded.output_scale_bias()[0], model.output_scale_bias()[0])
    assert not list(tmp_path.glob(".*"))  # no temp files left
    # uncalibrated nets (scales still at init) load too
    fresh = build_model(tiny_config("fcn32s"))
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "f.safetensors", fresh, fresh.cfg))


def test_bad_checkpoints_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    model = build_model(tiny_config("fcn32s"))
    path = save_checkpoint(tmp_path / "m.safetensors", model, model.cfg)
    side = path.with_suffix(".json")
    side.write_text(side.read_text().replace('"num_classes": 3', '"num_classes": 4'))
    with pytest.raises(UserError, match="does not match"):
        load_checkpoint(path)
    side.write_text("{not json")
    with pytest.raises(UserError, match="bad checkpoint sidecar"):
        load_checkpoint(path)
