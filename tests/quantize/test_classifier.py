"""The quantized classifier and its fully convolutional twin, in exact integers.

The claim (the seed, issue 18): ``fc_to_conv`` of the classifier, run once on a 384x384 image,
gives a 6x6 map whose cell ``(i, j)`` is the classifier on the 224x224 crop at ``(32 i, 32 j)``.
The reference is the quantized model computed exactly (:mod:`fcnseg.quantize.exact`: integer
convolutions, thresholds solved in rationals) on the converted net's record; it is held against
Brevitas in float64 on the *unconverted* classifier, crop by crop (integer scores
``round((logits - bias) / scale)``), on real photos and on boundary inputs (black, white, 0/255
checkerboards and stripes: the largest accumulators and the sharpest edges).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("brevitas")

from PIL import Image  # noqa: E402

from fcnseg.config import ConfigError  # noqa: E402
from fcnseg.errors import UserError  # noqa: E402
from fcnseg.quantize.data.dominant import NO_LABEL, SHAPE_CLASSES, dominant_class  # noqa: E402
from fcnseg.quantize.models.classifier import (  # noqa: E402
    Classifier,
    ClassifierConfig,
    convert,
    feature_side,
    map_side,
    receptive_field,
)

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "samples").glob("*.jpg"))
WINDOW, IMAGE, STRIDE = 224, 384, 32
CELLS = (IMAGE - WINDOW) // STRIDE + 1  # 6
#: small enough for a fast test, wide enough that the scores vary
SMALL = ClassifierConfig(widths=(4, 6, 8, 8, 8), fc_width=16)


@pytest.fixture(scope="module")
def model() -> Classifier:
    """A small quantized classifier, activation scales calibrated on real photos, BN statistics
    moved off their defaults (so every exact parameter is a non-trivial rational)."""
    from fcnseg.quantize.calibrate import calibrate

    torch.manual_seed(0)
    net = Classifier(SMALL)
    photos = [photo_tile(p, WINDOW) for p in SAMPLES[:4]]
    x = torch.from_numpy(np.stack(photos).transpose(0, 3, 1, 2).copy()).float()
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # running statistics = the calibration batch's own
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.uniform_(0.0, 0.5, generator=gen)
    calibrate(net, [x])
    net.eval()
    with torch.no_grad():
        net(x[:1])  # Brevitas caches the eval-mode activation scales on a forward
    return net


def photo_tile(path: Path, side: int) -> np.ndarray:
    """A sample photo resized to ``side`` x ``side`` (uint8 HWC)."""
    img = Image.open(path).convert("RGB").resize((side, side), Image.BILINEAR)
    return np.ascontiguousarray(np.asarray(img))


def boundary_images() -> list[np.ndarray]:
    """Black, white, 0/255 checkerboards (1 px and 32 px) and stripes, 384x384x3 uint8."""
    yy, xx = np.mgrid[:IMAGE, :IMAGE]
    fields = [
        np.zeros((IMAGE, IMAGE), bool),
        np.ones((IMAGE, IMAGE), bool),
        (yy + xx) % 2 == 0,
        (yy // 32 + xx // 32) % 2 == 0,
        xx % 3 == 0,
    ]
    return [np.repeat((f * 255).astype(np.uint8)[..., None], 3, axis=2) for f in fields]


def brevitas_crop_scores(model: Classifier, image: np.ndarray) -> np.ndarray:
    """The unconverted classifier in float64 on the 36 crops -> integer scores (6, 6, classes)."""
    from fcnseg.quantize.exact.extract import float64_copy

    m = float64_copy(model)
    scale, bias = model.output_scale_bias()
    x = torch.from_numpy(image.transpose(2, 0, 1).copy()).double()[None]
    crops = torch.cat(
        [
            x[:, :, STRIDE * i : STRIDE * i + WINDOW, STRIDE * j : STRIDE * j + WINDOW]
            for i in range(CELLS)
            for j in range(CELLS)
        ]
    )
    with torch.no_grad():
        logits = m(crops).numpy()
    q = (logits - bias) / scale
    ints = np.rint(q)
    assert np.abs(q - ints).max() < 1e-3  # on the integer grid (the card's scale is float32's)
    return ints.astype(np.int64).reshape(CELLS, CELLS, -1)


@pytest.fixture(scope="module")
def exact(model):
    from fcnseg.quantize.exact.forward import ExactForward

    return ExactForward(convert(model).exact_net())


# ------------------------------------------------------------------------------------ geometry
def test_geometry_of_the_unpadded_backbone():
    cfg = ClassifierConfig()
    assert cfg.head_kernel == feature_side(cfg.depths, WINDOW) == 5
    assert map_side(cfg, IMAGE) == CELLS
    assert map_side(cfg, WINDOW) == 1
    assert receptive_field(cfg) == WINDOW  # every pool input is even: no pixel falls off
    assert [map_side(cfg, 224 + 32 * k) for k in range(4)] == [1, 2, 3, 4]


def test_configs_that_would_drop_pixels_or_have_no_map_are_refused():
    with pytest.raises(ConfigError, match="pool2 a 109-px map; it must be even"):
        ClassifierConfig(depths=(1, 1, 1, 1, 1))
    with pytest.raises(ConfigError, match="window must be a multiple of 32"):
        ClassifierConfig(window=230)
    with pytest.raises(ConfigError, match="ClassifierConfig.arch must be 'classifier'"):
        ClassifierConfig.from_dict({"arch": "fcn32s"})
    with pytest.raises(UserError, match="smaller than the 224-px window"):
        map_side(ClassifierConfig(), 192)


# ---------------------------------------------------------------------------------- conversion
def test_fc_to_conv_turns_the_quant_linears_into_convs_with_the_same_integers(model):
    from brevitas.nn import QuantConv2d, QuantLinear

    conv = convert(model)
    head, old = conv.net.classifier, model.classifier
    assert not any(isinstance(m, (QuantLinear, torch.nn.Flatten)) for m in conv.modules())
    for name, kernel in (("fc6", 5), ("fc7", 1), ("score", 1)):
        new, linear = getattr(head, name), getattr(old, name)
        assert isinstance(new, QuantConv2d) and new.kernel_size == (kernel, kernel)
        assert new.padding == (0, 0)
        assert int(new.quant_weight().bit_width) == int(linear.quant_weight().bit_width)
        want = linear.quant_weight().int().reshape(new.weight.shape)
        assert torch.equal(new.quant_weight().int(), want)
        assert torch.equal(new.bias, linear.bias)
    assert (
        int(head.score.quant_weight().bit_width) == 8
        and int(head.fc6.quant_weight().bit_width) == 4
    )
    assert torch.equal(head.relu7.act_quant.scale(), old.relu7.act_quant.scale())
    np.testing.assert_array_equal(conv.output_scale_bias()[0], model.output_scale_bias()[0])


def test_converted_net_at_the_window_is_the_classifier_exactly(model, exact):
    """At 224x224 the converted net is the classifier: exact record == Brevitas float64, both
    the unconverted classifier and the converted net, on every sample photo."""
    from fcnseg.quantize.exact.extract import float64_copy

    conv64 = float64_copy(convert(model))
    scale, bias = model.output_scale_bias()
    for path in SAMPLES:
        img = photo_tile(path, WINDOW)
        want = exact.run(img[None])  # (1, 1, 1, classes)
        assert want.shape == (1, 1, 1, SMALL.num_classes)
        crop = brevitas_crop_scores(model, np.pad(img, ((0, 160), (0, 160), (0, 0))))[0, 0]
        x = torch.from_numpy(img.transpose(2, 0, 1).copy()).double()[None]
        with torch.no_grad():
            logits = conv64(x).numpy()[0, :, 0, 0]
        np.testing.assert_array_equal(want[0, 0, 0], crop)
        np.testing.assert_array_equal(np.rint((logits - bias) / scale).astype(np.int64), crop)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_one_pass_on_384_is_the_36_crops_on_photos(model, exact, path):
    img = photo_tile(path, IMAGE)
    one_pass = exact.run(img[None])[0]
    assert one_pass.shape == (CELLS, CELLS, SMALL.num_classes)
    np.testing.assert_array_equal(one_pass, brevitas_crop_scores(model, img))
    assert len(np.unique(one_pass)) > 20  # the scores move across the photo


def test_one_pass_on_384_is_the_36_crops_on_boundary_inputs(model, exact):
    for img in boundary_images():
        np.testing.assert_array_equal(exact.run(img[None])[0], brevitas_crop_scores(model, img))


# ------------------------------------------------------------------------------------- export
def test_export_at_384_writes_a_classification_card(model, tmp_path):
    from fcnseg.host.card import ModelCard
    from fcnseg.quantize.exact.forward import ExactForward
    from fcnseg.quantize.exact.record import load_net
    from fcnseg.quantize.export import export_model

    classes = list(SHAPE_CLASSES)
    card = export_model(convert(model), {"classes": classes}, (IMAGE, IMAGE), tmp_path / "export")
    saved = json.loads((tmp_path / "export" / "model.json").read_text())
    assert saved["task"] == "classification" and saved["window"] == WINDOW
    assert saved["output"]["shape"] == [1, 6, CELLS, CELLS]
    parsed = ModelCard.from_json(saved)
    assert (parsed.output_stride, parsed.net_stride, parsed.receptive_field) == (32, 32, 224)
    assert parsed.tile == (IMAGE, IMAGE) and card["arch"] == "classifier"
    img = photo_tile(SAMPLES[0], IMAGE)
    record = ExactForward(load_net(tmp_path / "export"))
    np.testing.assert_array_equal(record.run(img[None])[0], brevitas_crop_scores(model, img))


def test_export_refuses_a_tile_below_the_window(model, tmp_path):
    from fcnseg.quantize.export import export_checkpoint
    from fcnseg.quantize.models.io import save_checkpoint

    path = save_checkpoint(
        tmp_path / "c.safetensors", model, SMALL, {"classes": list(SHAPE_CLASSES)}
    )
    with pytest.raises(UserError, match="input side of 192 px is smaller than the 224-px window"):
        export_checkpoint(path, (192, 192), tmp_path / "export")
    assert not (tmp_path / "export").exists()


# ---------------------------------------------------------------------------------- the task
def test_dominant_class_counts_visible_shape_pixels():
    label = np.zeros((4, 4), np.uint8)
    assert dominant_class(label) == NO_LABEL  # background only
    label[0, :3] = 5  # ring: 3 px
    label[1, :2] = 2  # square: 2 px
    assert SHAPE_CLASSES[dominant_class(label)] == "ring"
    label[2, :1] = 2  # square: 3 px, a tie: the lower index wins
    assert SHAPE_CLASSES[dominant_class(label)] == "square"


# ------------------------------------------------------------------------- the shipped artifacts
SHIPPED = ROOT / "models" / "classifier"
PACKAGE = ROOT / "host" / "packages" / "classifier-pynq-z2"
#: every shipped classifier package (``make rebuild-classifier``: one per board)
PACKAGES = sorted((ROOT / "host" / "packages").glob("classifier-*"))


def test_a_classifier_package_is_shipped_per_board():
    assert [p.name for p in PACKAGES] == ["classifier-pynq-z2", "classifier-zcu104"]
    for path in PACKAGES:
        card = json.loads((path / "accelerator.json").read_text())
        assert card["estimates"]["board"]["name"] == path.name.removeprefix("classifier-")
        assert card["estimates"]["fit"]["fits"] is True
        size = sum(f.stat().st_size for f in path.iterdir())
        assert size < 700_000, f"{path.name}: {size} bytes"


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_shipped_package_on_the_simulator_is_the_36_exact_crops(package):
    """host/packages/classifier-* (compiled from models/classifier/export) on the simulator:
    its raw integer 6x6 map equals the exact record and the shipped checkpoint's classifier on
    the 36 crops (Brevitas float64), on sample photos and boundary inputs."""
    from fcnseg.host.package import load_package
    from fcnseg.host.sim.engine import SimEngine
    from fcnseg.quantize.exact.forward import ExactForward
    from fcnseg.quantize.exact.record import load_net
    from fcnseg.quantize.models.classifier import load_classifier

    model, meta = load_classifier(SHIPPED / "checkpoint.safetensors")
    engine = SimEngine(load_package(package))
    reference = ExactForward(load_net(SHIPPED / "export"))
    card = json.loads((package / "accelerator.json").read_text())["model_card"]
    assert (card["task"], card["window"], card["tile"]) == ("classification", WINDOW, [384, 384])
    assert card["classes"] == meta["classes"] == list(SHAPE_CLASSES)
    images = [photo_tile(p, IMAGE) for p in SAMPLES[:2]] + boundary_images()[:2]
    for img in images:
        have = engine.run(img[None])[0]
        assert have.shape == (CELLS, CELLS, len(SHAPE_CLASSES))
        np.testing.assert_array_equal(have, reference.run(img[None])[0])
        np.testing.assert_array_equal(have, brevitas_crop_scores(model, img))


def test_check_classifier_passes_on_the_shipped_package(capsys):
    """``make rebuild-classifier``'s last step on the shipped package and checkpoint."""
    from fcnseg.quantize.check_classifier import main

    assert main([str(PACKAGE), str(SHIPPED / "checkpoint.safetensors"), str(SAMPLES[0])]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and all("6x6 cells == the crops" in line for line in out[:3])


def test_check_classifier_refuses_a_checkpoint_the_card_does_not_name(tmp_path, capsys):
    from fcnseg.quantize.check_classifier import main

    other = tmp_path / "checkpoint.safetensors"
    other.write_bytes((SHIPPED / "checkpoint.safetensors").read_bytes() + b" ")
    assert main([str(PACKAGE), str(other)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "names checkpoint sha256" in line and str(other) in line


def test_check_classifier_names_the_cell_that_differs(monkeypatch):
    from fcnseg.host.classify import Classifier as HostClassifier
    from fcnseg.quantize.check_classifier import check_package

    real = HostClassifier.score_map

    def off_by_one(self, *args, **kwargs):
        scores = np.array(real(self, *args, **kwargs))
        scores[2, 3, 1] += 1
        return scores

    monkeypatch.setattr(HostClassifier, "score_map", off_by_one)
    with pytest.raises(UserError, match=r"cell \(2, 3\) .* crop at \(64, 96\) .*\(1 of 36 cells"):
        check_package(PACKAGE, SHIPPED / "checkpoint.safetensors", [])
