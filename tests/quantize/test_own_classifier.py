"""A user's own Brevitas classifier (not ours) through fc_to_conv, export, compile and classify.

Issue 18's check: "I hold my own classifier (not yours) through ``fc_to_conv`` and your
export/compile path and compare 36 crops with one pass in integers". Two classifiers are written
here directly from Brevitas layers, neither from ``fcnseg.quantize.models``:

- ``sequential_classifier``: an ``nn.Sequential`` with ``nn.Flatten``, four pools (stride 16),
  1x1, 3x3 and 2x2 unpadded convs with float biases and no batch norm, 224 px -> a 7x7 map (the
  issue's K), 8-bit first conv and score layer, 4-bit elsewhere, Brevitas's default per-tensor
  weight quantizer; at 384 px it gives 11x11 cells;
- ``VGGLayout``: the torchvision ``features`` / ``avgpool`` / ``classifier`` layout with batch
  norm, 3-bit activations, five pools, 160 px -> 3x3 (K = 3), five classes; at 320 px: 6x6
  cells, the 36 crops.

For each, on sample photos and boundary inputs (all 0, all 255, 0/255 checkerboards): the exact
record run on every window-sized crop equals Brevitas float64 of the *unconverted* classifier on
it, and the record run once on the tile gives a map whose cell (i, j) is the crop at (s i, s j).
Then the VGG-layout one is compiled (``fcnseg compile --board pynq-z2``), its package on the
simulator gives those crops' integers, and ``fcnseg classify`` runs on a photo. Each refusal of
:mod:`fcnseg.quantize.own_classifier` has its test and its line.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("brevitas")

from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from fcnseg.errors import UserError  # noqa: E402
from fcnseg.quantize.own_classifier import (  # noqa: E402
    PixelQuant,
    PixelScale,
    convert_classifier,
    export_classifier,
)

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "samples").glob("*.jpg"))
DOC = ROOT / "docs" / "own_classifier.md"


# ------------------------------------------------------------------------ two user classifiers
def _pixels() -> list[nn.Module]:
    return [
        PixelScale(),
        QuantIdentity(act_quant=PixelQuant, bit_width=8, return_quant_tensor=True),
    ]


def sequential_classifier(classes: int = 4) -> nn.Sequential:
    """Sequential + Flatten, stride 16: 224 -> 112 | 110 108 -> 54 | 52 -> 26 | 24 -> 12 |
    10 8 7 (1x1, 3x3 and 2x2 unpadded convs with float biases, no batch norm)."""

    def conv(cin: int, cout: int, k: int, bits: int = 4) -> list[nn.Module]:
        layer = QuantConv2d(cin, cout, k, bias=True, weight_bit_width=bits)
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        nn.init.uniform_(layer.bias, 0.0, 0.2)
        return [layer, QuantReLU(bit_width=4, return_quant_tensor=True)]

    layers = _pixels() + conv(3, 6, 1, bits=8) + [nn.MaxPool2d(2)]
    layers += conv(6, 8, 3) + conv(8, 8, 3) + [nn.MaxPool2d(2)]
    layers += conv(8, 8, 3) + [nn.MaxPool2d(2)]
    layers += conv(8, 10, 3) + [nn.MaxPool2d(2)]
    layers += conv(10, 10, 3) + conv(10, 12, 3) + conv(12, 12, 2)
    layers += [
        nn.Flatten(),
        QuantLinear(12 * 7 * 7, 16, bias=True, weight_bit_width=4),
        QuantReLU(bit_width=4, return_quant_tensor=True),
        nn.Dropout(0.5),
        QuantLinear(16, 16, bias=True, weight_bit_width=4),
        QuantReLU(bit_width=4, return_quant_tensor=True),
        QuantLinear(16, classes, bias=True, weight_bit_width=8),
    ]
    return nn.Sequential(*layers)


class VGGLayout(nn.Module):
    """torchvision's layout: ``classifier(flatten(avgpool(features(x))))``, batch norm, five
    pools: 160 -> 156 -> 78 | 76 -> 38 | 36 -> 18 | 16 -> 8 | 6 -> 3."""

    def __init__(self, classes: int = 5, pad: int = 0) -> None:
        super().__init__()

        def block(cin: int, cout: int, bits: int = 4) -> list[nn.Module]:
            conv = QuantConv2d(cin, cout, 3, padding=pad, bias=False, weight_bit_width=bits)
            return [conv, nn.BatchNorm2d(cout), QuantReLU(bit_width=3, return_quant_tensor=True)]

        layers = _pixels() + block(3, 5, bits=8) + block(5, 7) + [nn.MaxPool2d(2)]
        for cin, cout in ((7, 9), (9, 11), (11, 13), (13, 13)):
            layers += block(cin, cout) + [nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((3, 3))
        self.classifier = nn.Sequential(
            QuantLinear(13 * 3 * 3, 24, bias=True, weight_bit_width=4),
            QuantReLU(bit_width=3, return_quant_tensor=True),
            QuantLinear(24, 20, bias=True, weight_bit_width=4),
            QuantReLU(bit_width=3, return_quant_tensor=True),
            QuantLinear(20, classes, bias=True, weight_bit_width=8),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def photo(path: Path, side: int) -> np.ndarray:
    img = Image.open(path).convert("RGB").resize((side, side), Image.BILINEAR)
    return np.ascontiguousarray(np.asarray(img))


def calibrated(model: nn.Module, window: int) -> nn.Module:
    """Activation scales from Brevitas's calibration on four photos, batch-norm statistics of
    the same batch (moved off their defaults), then eval mode."""
    from fcnseg.quantize.calibrate import calibrate

    x = np.stack([photo(p, window) for p in SAMPLES[:4]]).transpose(0, 3, 1, 2)
    x = torch.from_numpy(x.copy()).float()
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.uniform_(0.0, 0.5, generator=gen)
    calibrate(model, [x])
    model.eval()
    with torch.no_grad():
        model(x[:1])
    return model


NETS = {
    # name: (builder, window, tile, stride, K, classes)
    "sequential": (sequential_classifier, 224, 384, 16, 7, 4),
    "vgg-layout": (VGGLayout, 160, 320, 32, 3, 5),
}


@pytest.fixture(scope="module")
def nets():
    """name -> (calibrated classifier, its converted net, the record's ExactForward)."""
    from fcnseg.quantize.exact.forward import ExactForward

    out = {}
    for name, (build, window, *_) in NETS.items():
        torch.manual_seed(0)
        model = calibrated(build(), window)
        converted = convert_classifier(model, window=window)
        out[name] = (model, converted, ExactForward(converted.exact_net()))
    return out


def boundary_images(side: int) -> list[np.ndarray]:
    """All 0, all 255, 0/255 checkerboards of 1 px and of 16 px (side x side x 3 uint8)."""
    yy, xx = np.mgrid[:side, :side]
    fields = [
        np.zeros((side, side), bool),
        np.ones((side, side), bool),
        (yy + xx) % 2 == 0,
        (yy // 16 + xx // 16) % 2 == 0,
    ]
    return [np.repeat((f * 255).astype(np.uint8)[..., None], 3, axis=2) for f in fields]


def crops(image: np.ndarray, window: int, stride: int) -> np.ndarray:
    """Every window-sized crop at a multiple of ``stride`` (row-major), (n, window, window, 3)."""
    n = (image.shape[0] - window) // stride + 1
    return np.stack(
        [
            image[stride * i : stride * i + window, stride * j : stride * j + window]
            for i in range(n)
            for j in range(n)
        ]
    )


def brevitas_scores(model: nn.Module, converted, batch: np.ndarray) -> np.ndarray:
    """The unconverted classifier in float64 on ``batch`` (n, w, w, 3) -> integer scores."""
    from fcnseg.quantize.exact.extract import float64_copy

    m = float64_copy(model)
    scale, bias = converted.output_scale_bias()
    x = torch.from_numpy(batch.transpose(0, 3, 1, 2).copy()).double()
    with torch.no_grad():
        logits = torch.cat([m(x[k : k + 16]) for k in range(0, len(x), 16)]).numpy()
    q = (logits - bias) / scale
    ints = np.rint(q)
    assert np.abs(q - ints).max() < 1e-6  # on the integer grid of the card's scale
    return ints.astype(np.int64)


def images(tile: int, photos: int) -> list[tuple[str, np.ndarray]]:
    named = [(p.name, photo(p, tile)) for p in SAMPLES[:photos]]
    names = ("zeros", "255", "checker-1px", "checker-16px")
    return named + list(zip(names, boundary_images(tile), strict=True))


# ------------------------------------------------------------------------------------ geometry
@pytest.mark.parametrize("name", NETS)
def test_the_geometry_comes_from_the_layers(nets, name):
    _, window, tile, stride, k, classes = NETS[name]
    cfg = nets[name][1].cfg
    assert (cfg.net_stride, cfg.output_stride, cfg.head_kernel, cfg.num_classes) == (
        stride,
        stride,
        k,
        classes,
    )
    cells = (tile - window) // stride + 1
    assert nets[name][1].output_cells((tile, tile)) == (cells, cells)
    assert nets[name][1].output_cells((window, window + stride)) == (1, 2)
    assert nets[name][1].receptive_field() == window


# ------------------------------------------------------------------------- the crop equality
def _check_crops_and_one_pass(nets, name: str, photos: int, boundary: slice = slice(None)) -> None:
    model, converted, exact = nets[name]
    _, window, tile, stride, _, classes = NETS[name]
    cells = (tile - window) // stride + 1
    chosen = images(tile, photos)
    for label, img in chosen[:photos] + chosen[photos:][boundary]:
        batch = crops(img, window, stride)
        per_crop = exact.run(batch)  # (cells**2, 1, 1, classes): the record at the window
        assert per_crop.shape == (cells * cells, 1, 1, classes), label
        np.testing.assert_array_equal(
            per_crop[:, 0, 0], brevitas_scores(model, converted, batch), err_msg=label
        )
        one_pass = exact.run(img[None])[0]
        assert one_pass.shape == (cells, cells, classes), label
        np.testing.assert_array_equal(
            one_pass, per_crop.reshape(cells, cells, classes), err_msg=label
        )
        if label.endswith(".jpg"):
            assert min(len(np.unique(one_pass[..., c])) for c in range(classes)) > 10, label


def test_vgg_layout_one_pass_is_its_36_crops(nets):
    """One photo and the 1-px checkerboard (the fast part of the slow test below)."""
    _check_crops_and_one_pass(nets, "vgg-layout", photos=1, boundary=slice(2, 3))


@pytest.mark.slow
def test_vgg_layout_one_pass_is_its_36_crops_on_every_photo_and_boundary(nets):
    _check_crops_and_one_pass(nets, "vgg-layout", photos=len(SAMPLES))


@pytest.mark.slow
def test_sequential_one_pass_is_its_121_crops(nets):
    _check_crops_and_one_pass(nets, "sequential", photos=2)


def test_sequential_one_pass_is_its_crops_on_one_photo(nets):
    """The fast version of the above: one photo, its 11x11 map against the crops' record and
    Brevitas on the crops of one row and one column."""
    model, converted, exact = nets["sequential"]
    img = photo(SAMPLES[0], 384)
    one_pass = exact.run(img[None])[0]
    batch = np.stack(
        [img[16 * i : 16 * i + 224, 16 * (10 - i) : 16 * (10 - i) + 224] for i in range(11)]
    )
    want = brevitas_scores(model, converted, batch)
    np.testing.assert_array_equal(one_pass[np.arange(11), 10 - np.arange(11)], want)
    np.testing.assert_array_equal(exact.run(batch)[:, 0, 0], want)


# ------------------------------------------------------------------------------------- export
def test_export_writes_a_classification_card_and_the_record(nets, tmp_path):
    from fcnseg.host.card import ModelCard
    from fcnseg.quantize.exact.forward import ExactForward
    from fcnseg.quantize.exact.record import load_net

    model, converted, exact = nets["vgg-layout"]
    card = export_classifier(
        model, window=160, tile=(320, 320), out_dir=tmp_path / "e", classes=list("vwxyz")
    )
    saved = json.loads((tmp_path / "e" / "model.json").read_text())
    assert saved == {**card, "export_seconds": saved["export_seconds"]}
    parsed = ModelCard.from_json(saved)
    assert (saved["task"], saved["window"], saved["arch"]) == (
        "classification",
        160,
        "own-classifier",
    )
    assert saved["output"]["shape"] == [1, 5, 6, 6] and parsed.classes == tuple("vwxyz")
    assert (parsed.output_stride, parsed.net_stride, parsed.receptive_field) == (32, 32, 160)
    np.testing.assert_array_equal(parsed.output_scale, converted.output_scale_bias()[0])
    img = photo(SAMPLES[1], 320)
    record = ExactForward(load_net(tmp_path / "e"))
    np.testing.assert_array_equal(record.run(img[None]), exact.run(img[None]))


# ---------------------------------------------------------------- compile, simulator, classify
def compile_net(model: nn.Module, name: str, root: Path, classes: list[str] | None = None):
    """``export_classifier`` of one of :data:`NETS` at its tile, then ``fcnseg compile`` for
    pynq-z2 (estimates only; about 20 s); returns the package folder."""
    from fcnseg.cli import main

    _, window, tile, *_ = NETS[name]
    export = root / f"{name}-export"
    export_classifier(model, window=window, tile=(tile, tile), out_dir=export, classes=classes)
    argv = ["compile", str(export), "--board", "pynq-z2", "--no-vivado"]
    assert main([*argv, "-o", str(root / f"{name}-build")]) == 0
    return root / f"{name}-build" / "package"


@pytest.fixture(scope="module")
def package(nets, tmp_path_factory):
    """The VGG-layout classifier exported at 320 and compiled for pynq-z2."""
    pytest.importorskip("finn")
    root = tmp_path_factory.mktemp("own-classifier")
    return compile_net(
        nets["vgg-layout"][0], "vgg-layout", root, ["ant", "bee", "cat", "dog", "eel"]
    )


@pytest.mark.slow
def test_the_compiled_package_on_the_simulator_is_the_36_crops(nets, package):
    from fcnseg.host.classify import Classifier
    from fcnseg.host.package import load_package
    from fcnseg.host.sim.engine import SimEngine

    model, converted, exact = nets["vgg-layout"]
    engine = SimEngine(load_package(package))
    for label, img in images(320, photos=2):
        have = engine.run(img[None])[0]
        assert have.shape == (6, 6, 5), label
        want = brevitas_scores(model, converted, crops(img, 160, 32)).reshape(6, 6, 5)
        np.testing.assert_array_equal(have, want, err_msg=label)
    # the Python API, tiling a larger image over the 320-px tile: the one-pass map of it
    clf = Classifier.load(package)
    big = photo(SAMPLES[2], 416)[:, :384]
    np.testing.assert_array_equal(clf.score_map(big), exact.run(big[None])[0])


@pytest.mark.slow
def test_the_stride_16_classifier_compiles_and_its_package_is_the_121_crops(nets, tmp_path):
    """The Sequential classifier (four pools: stride 16, 11x11 cells at 384) through the same
    flow: the simulator's map is the record's, the record's cells are Brevitas's crops (checked
    on one diagonal here; every cell in the slow crop test), and finer strides are offered."""
    pytest.importorskip("finn")
    from fcnseg.host.classify import Classifier
    from fcnseg.host.package import load_package
    from fcnseg.host.sim.engine import SimEngine

    model, converted, exact = nets["sequential"]
    package = compile_net(model, "sequential", tmp_path)
    engine = SimEngine(load_package(package))
    for label, img in images(384, photos=1):
        have = engine.run(img[None])[0]
        assert have.shape == (11, 11, 4), label
        np.testing.assert_array_equal(have, exact.run(img[None])[0], err_msg=label)
    img = photo(SAMPLES[0], 384)
    diagonal = np.stack([img[16 * i : 16 * i + 224, 16 * i : 16 * i + 224] for i in range(11)])
    want = brevitas_scores(model, converted, diagonal)
    np.testing.assert_array_equal(engine.run(img[None])[0][np.arange(11), np.arange(11)], want)
    clf = Classifier.load(package)
    assert clf.strides() == (16, 8, 4)
    wide = photo(SAMPLES[1], 512)[:320]  # 320x512: two tiles across, stitched
    np.testing.assert_array_equal(clf.score_map(wide), exact.run(wide[None])[0])


@pytest.mark.slow
def test_fcnseg_classify_runs_the_package_at_a_size_of_mine(nets, package, tmp_path, capsys):
    from fcnseg.cli import main
    from fcnseg.host.classify import resize, softmax

    _, converted, exact = nets["vgg-layout"]
    image = tmp_path / "cat.jpg"
    shutil.copy(SAMPLES[1], image)
    args = ["classify", str(image), "--package", str(package), "--size", "288", "352"]
    assert main([*args, "--top", "3", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    rgb = resize(np.asarray(Image.open(image).convert("RGB")), (288, 352))
    scores = exact.run(rgb[None])[0]  # (5, 7, 5): the one pass at 288x352
    scale, bias = converted.output_scale_bias()
    logits = (scores.reshape(-1, 5) * scale + bias).mean(axis=0)
    probs = softmax(logits)
    names = ["ant", "bee", "cat", "dog", "eel"]
    top = np.argsort(-probs, kind="stable")[:3]
    assert f"{image}: 5x7 cells at 288x352 (stride 32, mean)" in out
    for rank, c in enumerate(top, start=1):
        assert re.search(rf"{rank}\. {names[c]}\s+{probs[c]:.4f}", out), out
    report = json.loads((tmp_path / "r.json").read_text())["images"][0]
    assert [t["class"] for t in report["top"]] == [names[c] for c in top]
    np.testing.assert_allclose([t["probability"] for t in report["top"]], probs[top], rtol=1e-6)


# ------------------------------------------------------------------------------------ refusals
def tiny(**changes: nn.Module) -> nn.Sequential:
    """A small Sequential classifier (window 10, stride 2, K 4); ``changes`` replace layers by
    name (``None`` drops one)."""
    layers: OrderedDict[str, nn.Module | None] = OrderedDict(
        scale=PixelScale(),
        quant=QuantIdentity(act_quant=PixelQuant, bit_width=8, return_quant_tensor=True),
        conv1=QuantConv2d(3, 4, 3, bias=False, weight_bit_width=8),
        bn1=nn.BatchNorm2d(4),
        relu1=QuantReLU(bit_width=4, return_quant_tensor=True),
        pool1=nn.MaxPool2d(2),
        conv2=QuantConv2d(4, 4, 1, bias=False, weight_bit_width=4),
        relu2=QuantReLU(bit_width=4, return_quant_tensor=True),
        flatten=nn.Flatten(),
        fc=QuantLinear(4 * 4 * 4, 8, bias=True, weight_bit_width=4),
        relu3=QuantReLU(bit_width=4, return_quant_tensor=True),
        score=QuantLinear(8, 3, bias=True, weight_bit_width=8),
    )
    layers.update(changes)
    model = nn.Sequential(OrderedDict((k, v) for k, v in layers.items() if v is not None))
    model.train()
    with torch.no_grad():
        try:
            model(torch.rand(2, 3, 10, 10) * 255)
        except RuntimeError:
            pass  # a variant that cannot even run at 10 px is refused by the walk, by name
    return model.eval()


def _wide_weights() -> type:
    from brevitas.quant import Int8WeightPerTensorFloat

    class WideWeights(Int8WeightPerTensorFloat):
        """Weights with the full signed range (-128..127): not in the exact record's rules."""

        narrow_range = False

    return WideWeights


def _conv(k: int = 3, **kw) -> nn.Module:
    return QuantConv2d(3, 4, k, bias=False, weight_bit_width=8, **kw)


#: case -> (layer changes of :func:`tiny`, window, the refusal's text)
REFUSALS = {
    "padding": (
        dict(conv1=_conv(padding=1)),
        10,
        "conv1 (QuantConv2d) pads by (1, 1): padding is not supported, a crop would see zeros",
    ),
    "conv-stride": (
        dict(conv1=_conv(stride=2)),
        10,
        "conv1 (QuantConv2d) has stride (2, 2): only stride-1 convs are supported",
    ),
    "odd-pool": (
        dict(conv1=_conv(k=2)),
        10,
        "pool1: its input is 9 px at the 10-px window, not a multiple of its stride 2",
    ),
    "overlapping-pool": (
        dict(pool1=nn.MaxPool2d(3, stride=2)),
        10,
        "pool1 (MaxPool2d) has kernel (3, 3) and stride (2, 2)",
    ),
    "weight-quantizer": (
        dict(conv1=_conv(weight_quant=_wide_weights())),
        10,
        "conv1: no exact meaning known (conv1: weights must be signed narrow-range)",
    ),
    "no-input-quantizer": (
        dict(quant=None),
        10,
        "conv1 (QuantConv2d) comes before any input quantizer; begin the classifier with "
        "PixelScale() and QuantIdentity(act_quant=PixelQuant, bit_width=8",
    ),
    "signed-input-quantizer": (
        dict(quant=QuantIdentity(bit_width=8, return_quant_tensor=True)),
        10,
        "quant: input quantizer must be UINT8 with scale 1/255, got 8 bits",
    ),
    "no-pixel-scale": (
        dict(scale=None),
        10,
        "quant: the input side does not give the pixel itself as its integer",
    ),
    "float-conv": (dict(conv2=nn.Conv2d(4, 4, 1)), 10, "conv2 (Conv2d) is not quantized"),
    "lone-activation": (
        dict(pool1=QuantReLU(bit_width=4)),
        10,
        "pool1 (QuantReLU) does not directly follow a QuantConv2d (+ BatchNorm2d)",
    ),
    "conv-without-activation": (
        dict(relu2=None),
        10,
        "conv2 has no activation before fc (QuantConv2d): only the last conv",
    ),
    "softmax": (
        dict(soft=nn.Softmax(dim=1)),
        10,
        "soft (Softmax): end the classifier with the score Linear, without softmax",
    ),
    "window-not-K": (
        dict(),
        12,
        "fc: the 12-px window gives a 5x5 map at the first Linear, whose inputs are a 4x4 map "
        "(C*K*K with K=4); the window for K=4 is 10",
    ),
    "window-off-the-stride": (
        dict(),
        11,
        "window 11 must be a positive multiple of the stride 2",
    ),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_name_the_layer_in_one_line(case, tmp_path):
    changes, window, message = REFUSALS[case]
    model = tiny(**changes)
    with pytest.raises(UserError) as info:
        export_classifier(
            model, window=window, tile=(2 * window, 2 * window), out_dir=tmp_path / "e"
        )
    text = str(info.value)
    assert "\n" not in text and message in text, text
    assert not (tmp_path / "e").exists()


def test_a_batch_norm_after_the_score_conv_is_refused():
    """fc_to_conv refuses a BatchNorm in the head; a hand-converted net given to the walk
    itself has its batch norm after the scores refused too."""
    from fcnseg.quantize.own_classifier import exact_walk

    net = tiny()[:8]  # up to relu2: conv2 then
    net.add_module("score", QuantConv2d(4, 3, 4, bias=True))
    net.add_module("bn9", nn.BatchNorm2d(3))
    with pytest.raises(UserError, match=r"^bn9 \(BatchNorm2d\) follows the score layer score"):
        exact_walk(net.eval())


def test_a_padded_conv_in_the_torchvision_layout_is_named_by_its_qualified_name():
    model = calibrated(VGGLayout(pad=1), 160)
    with pytest.raises(UserError, match=r"^features\.2 \(QuantConv2d\) pads by \(1, 1\)"):
        convert_classifier(model, window=160)


@pytest.mark.parametrize(
    ("tile", "message"),
    [
        ((8, 20), "tile side 8 must be the 10-px window plus a multiple of the stride 2"),
        ((10, 13), "tile side 13 must be the 10-px window plus a multiple of the stride 2"),
    ],
)
def test_tiles_below_the_window_or_off_its_grid_are_refused(tile, message, tmp_path):
    with pytest.raises(UserError, match=re.escape(message)):
        export_classifier(tiny(), window=10, tile=tile, out_dir=tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_the_tiny_classifier_itself_is_accepted(tmp_path):
    """The refusals above are refusals of their change, not of the base net."""
    card = export_classifier(tiny(), window=10, tile=(14, 12), out_dir=tmp_path / "e")
    assert card["output"]["shape"] == [1, 3, 3, 2] and card["net_stride"] == 2


# ---------------------------------------------------------------------- the documented example
def _blocks(text: str) -> list[tuple[str, str]]:
    """The fenced ``python`` and ``bash`` blocks of a Markdown text, in order."""
    return re.findall(r"```(python|bash)\n(.*?)```", text, flags=re.S)


def _run_doc(tmp_path: Path, monkeypatch, compiled: bool) -> dict:
    """Run docs/own_classifier.md's blocks as written in a scratch folder holding a photo:
    python blocks with ``exec`` in one namespace, ``fcnseg ...`` lines through the CLI's
    ``main``; without ``compiled``, only the blocks that need no build."""
    from fcnseg.cli import main

    shutil.copy(SAMPLES[0], tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("XILINX_VIVADO", raising=False)  # the estimate-only flow
    namespace: dict = {"__name__": "__main__"}
    ran = []
    for lang, code in _blocks(DOC.read_text()):
        if not compiled and (lang == "bash" or "my-build" in code):
            continue
        if lang == "python":
            exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102
        else:
            for line in code.splitlines():
                if line.startswith("fcnseg "):
                    assert main(shlex.split(line)[1:]) == 0, line
        ran.append(lang)
    assert ran.count("python") == (3 if compiled else 2) and ran.count("bash") == compiled
    return namespace


def test_the_documented_example_runs_and_its_36_crops_hold(tmp_path, monkeypatch):
    ns = _run_doc(tmp_path, monkeypatch, compiled=False)
    assert (tmp_path / "my-export" / "model.json").is_file()
    assert ns["one_pass"].shape == (6, 6, 3)
    np.testing.assert_array_equal(ns["one_pass"], ns["crop_scores"])
    assert min(len(np.unique(ns["one_pass"][..., c])) for c in range(3)) > 5  # not constant


@pytest.mark.slow
def test_the_documented_example_compiles_and_classifies(tmp_path, monkeypatch, capsys):
    pytest.importorskip("finn")
    ns = _run_doc(tmp_path, monkeypatch, compiled=True)
    np.testing.assert_array_equal(ns["clf"].score_map(ns["photo"]), ns["crop_scores"])
    out = capsys.readouterr().out
    assert "photo.jpg: 3x5 cells at 288x352 (stride 32, mean)" in out
    # the CLI's top 3 are the Python API's on the same file at the same size
    want = ns["clf"](tmp_path / "photo.jpg", scales=[(288, 352)]).top(3)
    lines = re.findall(r"^  ([123])\. (\w+) +(0\.\d{4})$", out, flags=re.M)
    assert lines == [(str(r), name, f"{p:.4f}") for r, (_, name, p) in enumerate(want, 1)]


# ------------------------------------------------------------------------ our own classifier too
def test_our_classifier_through_the_generic_path_has_its_geometry():
    """Our classifier (``models.classifier``, whose exact record is this module's walk too)
    through :func:`convert_classifier`: the geometry and output scale derived from the layers
    are the ones its config gives, and the record is ours but for the architecture's name."""
    from fcnseg.quantize.models.classifier import Classifier, ClassifierConfig, convert

    torch.manual_seed(0)
    ours = calibrated(Classifier(ClassifierConfig(widths=(4, 6, 8, 8, 8), fc_width=16)), 224)
    walked, dedicated = convert_classifier(ours, window=224), convert(ours)
    a, b = walked.exact_net(), dedicated.exact_net()
    assert (a.arch, b.arch) == ("own-classifier", "classifier")
    assert [s.op for s in a.steps] == [s.op for s in b.steps] and len(a.steps) == 6 + 5 + 3
    assert walked.output_cells((384, 384)) == dedicated.output_cells((384, 384)) == (6, 6)
    assert walked.receptive_field() == dedicated.receptive_field() == 224
    np.testing.assert_allclose(
        walked.output_scale_bias()[0], dedicated.output_scale_bias()[0], rtol=1e-6
    )
    np.testing.assert_array_equal(walked.output_scale_bias()[1], dedicated.output_scale_bias()[1])


def test_other_accepted_layers_keep_the_crop_equality():
    """Per-channel weights, a signed QuantIdentity activation, dropout and a nested Sequential
    in :func:`tiny`: the record on a 16x14 image is Brevitas float64 on every 10-px crop."""
    from fcnseg.quantize.exact.forward import ExactForward
    from fcnseg.quantize.models.common import WeightQuant

    torch.manual_seed(3)
    nested = nn.Sequential(
        OrderedDict(
            conv2=QuantConv2d(4, 4, 1, bias=True, weight_quant=WeightQuant, weight_bit_width=4),
            drop=nn.Dropout2d(0.1),
            relu2=QuantIdentity(bit_width=4, return_quant_tensor=True),
        )
    )
    model = tiny(conv2=nested, relu2=None)
    converted = convert_classifier(model, window=10)
    assert converted.exact_net().step("conv2.conv2").quant.lo == -8  # signed 4-bit
    exact = ExactForward(converted.exact_net())
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(16, 14, 3), dtype=np.uint8)
    one_pass = exact.run(img[None])[0]
    assert one_pass.shape == (4, 3, 3)
    batch = np.stack(
        [img[2 * i : 2 * i + 10, 2 * j : 2 * j + 10] for i in range(4) for j in range(3)]
    )
    np.testing.assert_array_equal(one_pass.reshape(-1, 3), brevitas_scores(model, converted, batch))
    assert len(np.unique(one_pass)) > 5
