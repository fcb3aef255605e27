"""fc_to_conv: the seed's claim on its own numbers (224-input classifier, 384x384 image, 6x6 map).

Exactness strategy: float64 with integer-valued weights and inputs, so every partial sum is an
integer below 2**53 and summation order (Linear matmul vs conv) cannot change a single bit; then
``torch.equal``. A second check with random real weights measures the float64 associativity error.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("brevitas")

from torch import nn  # noqa: E402

from fcnseg.errors import UserError  # noqa: E402
from fcnseg.quantize import fc_to_conv  # noqa: E402

torch.set_num_threads(1)
CROP, IMAGE, STRIDE = 224, 384, 32
CELLS = (IMAGE - CROP) // STRIDE + 1  # 6


def crops(image: torch.Tensor):
    """The 36 crops of a 384x384 image at stride 32, row-major, as (i, j, crop)."""
    for i in range(CELLS):
        for j in range(CELLS):
            y, x = STRIDE * i, STRIDE * j
            yield i, j, image[:, :, y : y + CROP, x : x + CROP]


def crop_scores(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The classifier on every crop -> (N, classes, 6, 6)."""
    out = None
    with torch.no_grad():
        for i, j, crop in crops(image):
            y = model(crop)
            y = y.value if hasattr(y, "value") else y
            if out is None:
                out = torch.zeros(y.shape[0], y.shape[1], CELLS, CELLS, dtype=y.dtype)
            out[:, :, i, j] = y
    return out


def unpadded_classifier(c: int = 6) -> nn.Sequential:
    """Stride 32, no padding anywhere: 224 -> 56 -> 28 -> 14 -> 7, then three Linears."""
    return nn.Sequential(
        nn.Conv2d(3, c, 4, stride=4),
        nn.ReLU(),
        nn.Conv2d(c, c, 1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 1/8
        nn.Conv2d(c, c, 2, stride=2),  # 1/16
        nn.ReLU(),
        nn.MaxPool2d(2),  # 1/32
        nn.Flatten(),
        nn.Linear(c * 7 * 7, 16),  # fc6
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(16, 16),  # fc7
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(16, 5),  # score
    )


class VGGLike(nn.Module):
    """torchvision layout: ``features`` (3x3 same-padded convs, 5 pools) + ``classifier``."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for _ in range(5):
            layers += [nn.Conv2d(cin, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            cin = c
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(c * 7 * 7, 16), nn.ReLU(), nn.Dropout(), nn.Linear(16, 5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def integer_weights(model: nn.Module, low: int = -1, high: int = 2) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.data = torch.randint(low, high, p.shape, generator=gen).to(p.dtype)
    return model


def test_unpadded_net_equals_36_crops_exactly():
    model = integer_weights(unpadded_classifier().double()).eval()
    image = torch.randint(0, 16, (2, 3, IMAGE, IMAGE), generator=torch.Generator().manual_seed(1))
    image = image.double()
    conv = fc_to_conv(model).eval()
    assert not any(isinstance(m, (nn.Linear, nn.Flatten)) for m in conv.modules())
    with torch.no_grad():
        full = conv(image)
    assert tuple(full.shape) == (2, 5, 6, 6)
    expected = crop_scores(model, image)
    assert expected.abs().max() > 0 and expected.abs().max() < 2**53
    assert torch.equal(full, expected)
    # the original is untouched and still a classifier
    assert isinstance(model[9], nn.Linear)


def test_unpadded_net_real_weights_differ_only_by_float_associativity():
    torch.manual_seed(0)
    model = unpadded_classifier().double().eval()
    image = torch.rand(1, 3, IMAGE, IMAGE, dtype=torch.float64) * 255
    with torch.no_grad():
        full = fc_to_conv(model).eval()(image)
    diff = (full - crop_scores(model, image)).abs().max().item()
    print(f"\nunpadded float64 random weights: max |one pass - crops| = {diff:.3g}")
    assert diff < 1e-10 * full.abs().max().item()


def test_flatten_order_is_c_h_w():
    """Linear weight (out, C*K*K) in C,H,W order -> conv weight (out, C, K, K)."""
    lin = nn.Linear(2 * 3 * 3, 1, bias=False)
    model = nn.Sequential(nn.Identity(), nn.Flatten(), lin)
    conv = fc_to_conv(model, in_channels=2)
    weight = conv[1].weight
    assert tuple(weight.shape) == (1, 2, 3, 3)
    x = torch.arange(18.0).reshape(1, 2, 3, 3)
    assert torch.equal(conv(x).flatten(), model(x).flatten())


def test_padded_vgg_differs_from_crops_only_near_crop_borders():
    model = integer_weights(VGGLike().double()).eval()
    image = torch.randint(0, 16, (1, 3, IMAGE, IMAGE), generator=torch.Generator().manual_seed(2))
    image = image.double()
    conv = fc_to_conv(model).eval()
    assert list(conv._modules) == ["features", "classifier"]
    with torch.no_grad():
        full = conv(image)
        full_features = conv.features(image)  # (1, C, 12, 12)
    expected = crop_scores(model, image)
    assert tuple(full.shape) == tuple(expected.shape) == (1, 5, 6, 6)

    # Features: a crop's 7x7 pool5 cell (a, b) is one-pass cell (i + a, j + b). Cells whose
    # receptive field (94 px here) lies inside the crop match bit for bit; the outer ring, which
    # sees the crop's zero padding, differs.
    interior_equal = border_equal = border_total = 0
    with torch.no_grad():
        for i, j, crop in crops(image):
            f = model.features(crop)[0]
            g = full_features[0, :, i : i + 7, j : j + 7]
            same = (f == g).all(dim=0)
            assert same[1:6, 1:6].all(), f"crop {(i, j)}: interior feature cells differ"
            interior_equal += int(same[1:6, 1:6].sum())
            ring = torch.ones(7, 7, dtype=torch.bool)
            ring[1:6, 1:6] = False
            border_equal += int(same[ring].sum())
            border_total += int(ring.sum())
    assert border_equal < border_total  # the border ring is where they differ
    # Scores: fc6 sees every cell of the crop, border ring included, so every score differs a bit.
    diff = (full - expected).abs()
    rel = (diff.max() / expected.abs().max()).item()
    print(
        f"\npadded VGG-like: interior feature cells equal {interior_equal}/{36 * 25}; border-ring "
        f"cells equal {border_equal}/{border_total}; scores: max |one pass - crops| = "
        f"{diff.max().item():.4g} ({rel:.1%} of max |score|), mean {diff.mean().item():.4g}"
    )
    assert diff.max() > 0

    # The same measurement with ordinary (default-initialised, real) weights and a real photo.
    torch.manual_seed(0)
    real = VGGLike().double().eval()
    photo = _photo()
    with torch.no_grad():
        full = fc_to_conv(real).eval()(photo)
    diff = (full - crop_scores(real, photo)).abs()
    scale = full.abs().max().item()
    print(
        f"padded VGG-like, default init, astronaut photo: max |one pass - crops| = "
        f"{diff.max().item():.4g} = {diff.max().item() / scale:.1%} of max |score|, "
        f"mean {diff.mean().item() / scale:.1%}"
    )
    assert 0 < diff.max().item() < scale


def _photo() -> torch.Tensor:
    from skimage import data

    img = data.astronaut()[:IMAGE, :IMAGE]
    return torch.from_numpy(img).permute(2, 0, 1)[None].double()


def test_quant_linear_keeps_quantizers_and_integer_outputs():
    from brevitas.graph.calibrate import calibration_mode
    from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
    from brevitas.quant import Int8ActPerTensorFloat

    def relu() -> nn.Module:
        return QuantReLU(bit_width=4, return_quant_tensor=True)

    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(
            [
                ("quant_inp", QuantIdentity(bit_width=8, return_quant_tensor=True)),
                ("conv1", QuantConv2d(3, 8, 4, stride=4, weight_bit_width=4)),
                ("relu1", relu()),
                ("conv2", QuantConv2d(8, 8, 2, stride=2, weight_bit_width=4)),
                ("relu2", relu()),
                ("pool2", nn.MaxPool2d(2)),
                ("conv3", QuantConv2d(8, 8, 2, stride=2, weight_bit_width=4)),
                ("relu3", relu()),  # 1/32, 7x7 at 224
                ("flatten", nn.Flatten()),
                ("fc6", QuantLinear(8 * 49, 32, bias=True, weight_bit_width=4)),
                ("relu6", relu()),
                ("drop6", nn.Dropout(0.5)),
                ("fc7", QuantLinear(32, 10, bias=False, weight_bit_width=8,
                                    output_quant=Int8ActPerTensorFloat,
                                    return_quant_tensor=True)),
            ]
        )
    )  # fmt: skip
    calib = torch.rand(4, 3, CROP, CROP)
    with torch.no_grad(), calibration_mode(model):
        model(calib)
    model.eval()
    conv = fc_to_conv(model).eval()
    assert isinstance(conv.fc6, QuantConv2d) and isinstance(conv.fc7, QuantConv2d)
    assert tuple(conv.fc6.weight.shape) == (32, 8, 7, 7)
    assert int(conv.fc6.quant_weight().bit_width) == 4
    assert int(conv.fc7.quant_weight().bit_width) == 8
    assert torch.equal(conv.fc7.output_quant.scale(), model.fc7.output_quant.scale())
    image = torch.rand(1, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = conv(image)
        ints = torch.zeros(10, CELLS, CELLS, dtype=torch.int64)
        for i, j, crop in crops(image):
            ints[:, i, j] = model(crop).int()[0].long()
    assert full.value.shape == (1, 10, 6, 6)
    assert torch.equal(full.int()[0].long(), ints)
    assert len(ints.unique()) > 10


def test_unsupported_inputs():
    with pytest.raises(UserError, match="Flatten"):
        fc_to_conv(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 2)))
    with pytest.raises(UserError, match="features` and `classifier`; got Linear"):
        fc_to_conv(nn.Linear(3, 3))
    with pytest.raises(UserError, match="has no Linear"):
        fc_to_conv(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.ReLU()))


def refused(model: nn.Module) -> str:
    """fc_to_conv's one-line refusal of ``model``, which it must leave untouched."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError) as caught:
        fc_to_conv(model)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("fc_to_conv: ")
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    return message


def named(model: nn.Module, name: str) -> nn.Module:
    """The module ``name`` (qualified) of ``model``: the message names a real layer."""
    return dict(model.named_modules())[name]


def with_head(*head: nn.Module, c: int = 4) -> VGGLike:
    model = VGGLike(c)
    model.classifier = nn.Sequential(*head)
    return model


def test_batchnorm1d_in_the_head_is_refused_by_its_name():
    # Sequential layout: fc6 (child 9), relu (10), then the BatchNorm1d as child 11.
    layers = list(unpadded_classifier())
    model = nn.Sequential(*layers[:11], nn.BatchNorm1d(16), *layers[11:])
    message = refused(model)
    assert message.startswith("fc_to_conv: cannot convert 11 (BatchNorm1d): ")
    assert isinstance(named(model, "11"), nn.BatchNorm1d)
    # features/classifier layout, BatchNorm1d straight after the first Linear.
    model = with_head(nn.Linear(4 * 49, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 5))
    assert refused(model).startswith("fc_to_conv: cannot convert classifier.1 (BatchNorm1d): ")
    assert isinstance(named(model, "classifier.1"), nn.BatchNorm1d)
    # ... and before it (it would see the flattened C*K*K vector, per feature).
    model = with_head(nn.BatchNorm1d(4 * 49), nn.Linear(4 * 49, 5))
    assert refused(model).startswith("fc_to_conv: cannot convert classifier.0 (BatchNorm1d): ")


def test_other_non_elementwise_layers_are_refused():
    model = with_head(nn.Linear(4 * 49, 16), nn.LayerNorm(16), nn.Linear(16, 5))
    assert refused(model).startswith("fc_to_conv: cannot convert classifier.1 (LayerNorm): ")
    # Softmax over the last axis is the features of (N, F) but the width of a map.
    model = with_head(nn.Linear(4 * 49, 5), nn.Softmax(dim=-1))
    assert refused(model).startswith("fc_to_conv: cannot convert classifier.1 (Softmax): ")


def test_linear_in_a_nested_sequential_is_refused_by_its_name():
    inner = nn.Sequential(nn.Dropout(), nn.Linear(4 * 49, 16), nn.ReLU())
    model = with_head(inner, nn.Linear(16, 5))
    message = refused(model)
    assert message.startswith(
        "fc_to_conv: classifier.0.1 is a Linear inside a nested Sequential (classifier.0)"
    )
    assert isinstance(named(model, "classifier.0.1"), nn.Linear)
    # In the Sequential layout the first Linear nested one level down: child 9, its child 0.
    layers = list(unpadded_classifier())
    model = nn.Sequential(*layers[:9], nn.Sequential(layers[9], layers[10]), *layers[11:])
    assert refused(model).startswith("fc_to_conv: 9.0 is a Linear inside a nested Sequential (9)")
    assert isinstance(named(model, "9.0"), nn.Linear)


def test_linear_sizes_that_do_not_chain_are_refused_by_name():
    # C = 6 feature channels (the last conv): 6*7*7 = 294 fits, 4*5 = 20 and 6*7*7 + 6 do not.
    message = refused(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 5, 2)))
    assert message.startswith("fc_to_conv: 2 (Linear) has 20 inputs, not C*K*K for the C=4 ")
    layers = list(unpadded_classifier())
    model = nn.Sequential(*layers[:9], nn.Linear(6 * 49 + 6, 16), *layers[10:])
    assert refused(model).startswith("fc_to_conv: 9 (Linear) has 300 inputs, not C*K*K for the C=6")
    model = with_head(nn.Linear(4 * 48, 5))  # 4 * 48: divisible by C, 48 not a square
    assert refused(model).startswith("fc_to_conv: classifier.0 (Linear) has 192 inputs, not C*K*K")
    model = with_head(nn.Linear(4 * 49, 16), nn.ReLU(), nn.Linear(15, 5))
    assert refused(model).startswith(
        "fc_to_conv: classifier.2 (Linear) takes 15 inputs but the Linear before it gives 16"
    )


def test_bare_linear_classifier_and_softmax_over_classes_convert_exactly():
    """A classifier that is one Linear, and a head ending in Softmax(dim=1): crops equal."""
    model = integer_weights(unpadded_classifier().double()).eval()
    features = nn.Sequential(*list(model)[:8])
    image = torch.randint(0, 16, (1, 3, IMAGE, IMAGE), generator=torch.Generator().manual_seed(4))
    image = image.double()

    class Bare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = features
            self.classifier = nn.Linear(6 * 49, 5).double()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(torch.flatten(self.features(x), 1))

    bare = integer_weights(Bare()).eval()
    conv = fc_to_conv(bare).eval()
    assert isinstance(conv.classifier[0], nn.Conv2d)
    with torch.no_grad():
        assert torch.equal(conv(image), crop_scores(bare, image))
    # Softmax(dim=1): scores scaled by 2**-14 (exact) so it does not saturate to 0/1. The scores
    # are bit-equal (above); torch's softmax over a map's channels and over a vector may round
    # differently, by at most an ulp or so.
    with torch.no_grad():
        model[-1].weight *= 2.0**-14
        model[-1].bias *= 2.0**-14
    soft = nn.Sequential(*model, nn.Softmax(dim=1)).eval()
    with torch.no_grad():
        full, crops_ = fc_to_conv(soft).eval()(image), crop_scores(soft, image)
    assert 0.01 < full.min() and full.max() < 0.99
    eps = torch.finfo(torch.float64).eps
    assert torch.allclose(full, crops_, rtol=2 * eps, atol=0)
