"""The exact reference (fcnseg.quantize.exact): its arithmetic, its thresholds, its forward.

The threshold solver is checked against an independent evaluation (Decimal at 60 digits, no
shared code with the solver's rational sign algebra) for every threshold of the shipped model,
and the reference forward against float64 Brevitas on FCN-32s/16s/8s at 2, 4 and 8 bits with
negative batch-norm factors.
"""

from __future__ import annotations

import decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from fcnseg.quantize.exact.levels import Channel, sign_a_minus_b_sqrt_d, thresholds
from fcnseg.quantize.exact.record import Quantizer, Step

ROOT = Path(__file__).resolve().parents[2]
D = decimal.Context(prec=60)


def _dec(x: Fraction) -> decimal.Decimal:
    return D.divide(decimal.Decimal(x.numerator), decimal.Decimal(x.denominator))


def decimal_level(ch: Channel, a: int) -> int:
    """The quantizer's output at accumulator ``a``, evaluated in 60-digit decimals."""
    lhs = _dec(ch.slope * a + ch.offset)
    z = lhs if ch.d is None else D.add(D.divide(lhs, D.sqrt(_dec(ch.d))), _dec(ch.beta))
    v = D.divide(z, _dec(ch.scale))
    q = int(v.to_integral_value(rounding=decimal.ROUND_HALF_EVEN))
    return min(max(q, ch.lo), ch.hi)


def test_sign_of_a_minus_b_sqrt_d_against_decimals() -> None:
    rng = np.random.default_rng(0)
    for _ in range(3000):
        a = Fraction(int(rng.integers(-50, 51)), int(rng.integers(1, 9)))
        b = Fraction(int(rng.integers(-50, 51)), int(rng.integers(1, 9)))
        if rng.random() < 0.3:  # a perfect square: exact equality must come out as 0
            root = Fraction(int(rng.integers(1, 20)), int(rng.integers(1, 9)))
            d = root * root
            if rng.random() < 0.5:
                a = b * root
        else:
            d = Fraction(int(rng.integers(1, 100)), int(rng.integers(1, 9)))
        value = D.subtract(_dec(a), D.multiply(_dec(b), D.sqrt(_dec(d))))
        want = 0 if abs(value) < decimal.Decimal("1e-40") else (1 if value > 0 else -1)
        assert sign_a_minus_b_sqrt_d(a, b, d) == want, (a, b, d)


def test_ties_round_half_to_even() -> None:
    """z = a/2 on integers: a = 1 -> 0.5 -> 0, a = 3 -> 1.5 -> 2; thresholds follow."""
    step = Step(
        op="requant",
        name="halves",
        src="x",
        dst="y",
        in_scale=Fraction(1, 2),
        quant=Quantizer("q", Fraction(1), 0, 4),
    )
    np.testing.assert_array_equal(thresholds(step, (0, 20)), [[2, 3, 6, 7]])
    ch = Channel(Fraction(1, 2), Fraction(0), Fraction(0), None, Fraction(1), 0, 4)
    assert [ch.level(a) for a in range(10)] == [0, 0, 1, 2, 2, 2, 3, 4, 4, 4]


@pytest.fixture(scope="module")
def shipped_net():
    pytest.importorskip("torch")
    from fcnseg.quantize.exact.extract import exact_net
    from fcnseg.quantize.models.io import load_checkpoint

    model, _ = load_checkpoint(ROOT / "models" / "default-fcn8s" / "checkpoint.safetensors")
    return model, exact_net(model)


def test_every_threshold_of_the_shipped_model_against_decimals(shipped_net) -> None:
    """T is the least accumulator reaching its level: q(T) >= k > q(T - 1), in 60 digits."""
    from fcnseg.quantize.exact.forward import tensor_ranges
    from fcnseg.quantize.exact.levels import channels

    _, net = shipped_net
    ranges = tensor_ranges(net)
    checked = 0
    for step in net.thresholded():
        lo, hi = ranges[f"{step.name}.acc"]
        t = thresholds(step, (lo, hi))
        for c, ch in enumerate(channels(step)):
            for j, k in enumerate(range(ch.lo + 1, ch.hi + 1)):
                x = int(t[c, j])
                if x <= hi:
                    assert decimal_level(ch, x) >= k, (step.name, c, k)
                if x > lo:
                    assert decimal_level(ch, x - 1) < k, (step.name, c, k)
                checked += 1
    assert checked == 13830  # 13,575 in the MVAUs + 255 of the skip requantizer


def test_record_round_trip(tmp_path, shipped_net) -> None:
    from fcnseg.quantize.exact.record import load_net, save_net

    _, net = shipped_net
    save_net(net, tmp_path)
    back = load_net(tmp_path)
    assert back.steps == net.steps  # weights are compared below (not part of ==)
    for a, b in zip(back.steps, net.steps, strict=True):
        if a.weight is not None:
            np.testing.assert_array_equal(a.weight, b.weight)


def test_record_refusals(tmp_path, shipped_net) -> None:
    from fcnseg.errors import UserError
    from fcnseg.quantize.exact.record import JSON_FILE, load_net, save_net

    with pytest.raises(UserError, match="no exact record"):
        load_net(tmp_path)
    _, net = shipped_net
    save_net(net, tmp_path)
    text = (tmp_path / JSON_FILE).read_text()
    (tmp_path / JSON_FILE).write_text(text.replace('"op": "pool"', '"op": "blur"', 1))
    with pytest.raises(UserError, match="unknown op 'blur'"):
        load_net(tmp_path)
    (tmp_path / JSON_FILE).write_text(text.replace('"in_scale": "', '"in_scale": "x', 1))
    with pytest.raises(UserError, match="not a rational"):
        load_net(tmp_path)


@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s"])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_reference_forward_equals_float64_brevitas(arch: str, bits: int) -> None:
    pytest.importorskip("torch")
    from fcnseg.quantize.exact.extract import exact_net
    from fcnseg.quantize.exact.forward import ExactForward
    from tests.helpers.exact_nets import brevitas_scores, random_pixels, stressed_net

    model = stressed_net(arch, weight_bits=bits, act_bits=bits, seed=bits)
    forward = ExactForward(exact_net(model))
    pixels = random_pixels((2, 96, 128, 3), seed=bits)
    np.testing.assert_array_equal(forward.run(pixels), brevitas_scores(model, pixels))


def test_demo_photos_whole_size(shipped_net) -> None:
    """The shipped checkpoint: exact reference == float64 Brevitas on every sample photo."""
    from PIL import Image

    from fcnseg.quantize.exact.forward import ExactForward
    from tests.helpers.exact_nets import brevitas_scores

    model, net = shipped_net
    forward = ExactForward(net)
    for path in sorted((ROOT / "samples").glob("*.jpg")):
        img = np.asarray(Image.open(path).convert("RGB"))
        h, w = img.shape[0] // 32 * 32, img.shape[1] // 32 * 32
        img = np.ascontiguousarray(img[None, :h, :w])
        np.testing.assert_array_equal(forward.run(img), brevitas_scores(model, img), path.name)
