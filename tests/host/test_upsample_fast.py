"""The float32 busy-cell path with its tie check: labels equal the float64 reference always.

Boundaries first: exact ties, near-ties at, just inside and just outside the float32 bound,
scores of the largest magnitude (where float32 alone gets labels wrong), extreme scales and
biases, one class, all classes equal; then random and shift-and-stitch maps.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcnseg.host import upsample as up
from fcnseg.host.upsample import float32_bound, upsample_argmax, upsample_argmax_naive

BIG = 2**31 - 1  # the largest score magnitude the exact path accepts


def both(scores, scale, bias, out, stride, field=None, **kw) -> np.ndarray:
    """float32 labels, asserted equal to float64 and to the naive reference."""
    naive = upsample_argmax_naive(scores, scale, bias, out, stride, field)
    f64 = upsample_argmax(scores, scale, bias, out, stride, field, precision="float64", **kw)
    f32 = upsample_argmax(scores, scale, bias, out, stride, field, precision="float32", **kw)
    np.testing.assert_array_equal(f64, naive)
    np.testing.assert_array_equal(f32, naive)
    return f32


@pytest.fixture
def redone(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many pixels each call of the float32 path sent back to float64."""
    counts: list[int] = []
    exact = up._exact_pixels

    def spy(*args):
        labels = exact(*args)
        counts.append(len(labels))
        return labels

    monkeypatch.setattr(up, "_exact_pixels", spy)
    return counts


def raw_float32(scores, scale, bias, out, stride) -> np.ndarray:
    """Labels of plain float32 bilinear interpolation of the corner logits (no tie check)."""
    logits = (scores * np.asarray(scale) + np.asarray(bias)).astype(np.float32)
    wy = up.axis_weights(out[0], scores.shape[0], stride)
    wx = up.axis_weights(out[1], scores.shape[1], stride)
    d = np.float32(wy.den * wx.den)
    v = (wy.w0[:, None, None] * logits[wy.i0] + wy.w1[:, None, None] * logits[wy.i1]).astype(
        np.float32
    )
    n = wx.w0[None, :, None] * v[:, wx.i0] + wx.w1[None, :, None] * v[:, wx.i1]
    return np.argmax(n.astype(np.float32) / d, axis=2)


def reference_logits(scores, scale, bias, out, stride) -> np.ndarray:
    """``(H, W, C)`` float64 logits by the reference formula (exact integer numerators)."""
    wy = up.axis_weights(out[0], scores.shape[0], stride)
    wx = up.axis_weights(out[1], scores.shape[1], stride)
    s = scores.astype(np.float64)
    v = wy.w0[:, None, None] * s[wy.i0] + wy.w1[:, None, None] * s[wy.i1]
    n = wx.w0[None, :, None] * v[:, wx.i0] + wx.w1[None, :, None] * v[:, wx.i1]
    return up._logits(n, float(wy.den * wx.den), scale, bias)


def test_exact_ties_inside_busy_cells_go_to_the_lowest_class(redone: list[int]) -> None:
    # Class 1 alternates 32, 0 along x, class 0 stays at 1 with scale 2: at stride 8 class 1
    # interpolates to 32 * w1 / 16 = 2 w1, w1 in {1, 3, ..., 15} (or 16 - w1), so it ties class 0
    # exactly on a column of every cell, where class 0 (the lowest index) must win. (Two scales:
    # the general path, not the integer comparison.)
    scores = np.zeros((4, 5, 2), dtype=np.int64)
    scores[..., 0] = 1
    scores[:, ::2, 1] = 32
    scale = np.array([2.0, 1.0])
    labels = both(scores, scale, np.zeros(2), (32, 40), 8)
    logits = reference_logits(scores, scale, np.zeros(2), (32, 40), 8)
    ties = logits[..., 0] == logits[..., 1]
    assert ties.sum() >= 4 * 8 and (labels[ties] == 0).all()
    assert sum(redone) > 0  # the ties were decided by float64, not float32


def test_largest_scores_float32_alone_is_wrong_the_check_is_not(redone: list[int]) -> None:
    # Scores near 2**31 differ by 1: float32 (24-bit mantissa) cannot tell them apart.
    rng = np.random.default_rng(0)
    scores = BIG - rng.integers(0, 3, size=(6, 7, 3))
    out = (48, 56)
    scale, bias = np.ones(3), np.zeros(3)
    reference = upsample_argmax_naive(scores, scale, bias, out, 8)
    assert (raw_float32(scores, scale, bias, out, 8) != reference).any()  # the test can fail
    both(scores, scale, bias, out, 8)
    assert sum(redone) > 0


@pytest.mark.parametrize("seed", range(3))
def test_large_scores_with_gaps_near_float32_rounding(seed: int) -> None:
    """Scores near 2**30 whose classes differ by up to a few hundred: float32 rounds the
    interpolated values by ~64-128, so its own top-two order is wrong at some pixels with a
    computed gap well above zero; only a threshold of the full bound sends all of those back."""
    rng = np.random.default_rng(seed)
    scores = 2**30 + rng.integers(-300, 301, size=(8, 10, 3))
    scale, bias = np.array([1.0, 1.0, 1.0]), np.array([0.0, 0.5, -0.25])  # not one order
    out = (64, 80)
    reference = upsample_argmax_naive(scores, scale, bias, out, 8)
    assert (raw_float32(scores, scale, bias, out, 8) != reference).sum() > 10
    both(scores, scale, bias, out, 8)


def test_negative_largest_scores() -> None:
    rng = np.random.default_rng(1)
    scores = -BIG + rng.integers(0, 3, size=(5, 6, 4))
    both(scores, np.ones(4), np.zeros(4), (40, 48), 8)


K = 256  #: class 1 is class 0 + K at even columns, - K at odd ones


def near_tie_map(delta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Busy cells everywhere: along x, class 1 minus class 0 interpolates to ``K * m / 8``
    (``m`` odd, -7..7: the weights are odd sixteenths at stride 8), plus ``delta`` (bias 1);
    class 2 far below (never a candidate). Scores near 3e6: float32 rounding is ~0.2."""
    scores = np.full((6, 8, 3), 3_000_000, dtype=np.int64)
    scores[:, 0::2, 1] += K
    scores[:, 1::2, 1] -= K
    scores[..., 2] -= 1_000_000
    return scores, np.ones(3), np.array([0.0, delta, 0.0])


def check_threshold(scores, scale, bias) -> float:
    """The threshold ``2 (B + E)`` of the module docstring for these scores."""
    s = scores.astype(np.float64)
    return 2 * (float32_bound(s, scale, bias, 256.0) + up._rounding_bound(s, scale, bias))


@pytest.mark.parametrize("factor", [-4.0, -1.01, -1.0, -0.5, 0.0, 0.5, 0.99, 1.0, 4.0])
def test_near_ties_around_the_bound(factor: float, redone: list[int]) -> None:
    """The closest pixels (one column in eight) have a real gap of ``factor * 2(B + E)``,
    the others are ``K / 4`` further: only the closest can be redone."""
    base, scale, bias = near_tie_map(0.0)
    gap = check_threshold(base, scale, bias)
    assert 0.5 < gap < 4 < K / 4  # the map's scale puts float32 rounding where it matters
    scores, scale, bias = near_tie_map(factor * gap - K / 8)
    out = (48, 64)
    labels = both(scores, scale, bias, out, 8)
    logits = reference_logits(scores, scale, bias, out, 8)
    closest = np.abs(logits[..., 1] - logits[..., 0] - factor * gap) < 1e-6
    assert closest.sum() >= 48 * 7  # a column in most cells
    expect = 1 if factor > 0 else 0  # an exact tie (0) goes to class 0
    assert (labels[closest] == expect).all()
    if factor == 0.0:  # exact ties: redone, always
        assert sum(redone) >= closest.sum()
    if abs(factor) >= 4.0:  # float32's gap >= 3 * 2(B + E): beyond the widened check
        assert sum(redone) == 0
    assert sum(redone) <= closest.sum()  # nothing else is close


def test_one_scale_no_bias_compares_integers_with_no_float64(redone: list[int]) -> None:
    """The shipped packages' case (one scale, zero bias, INT9 scores): exact ties between the
    integer numerators go to the lowest class and nothing is redone."""
    rng = np.random.default_rng(3)
    scores = rng.integers(-256, 256, size=(8, 8, 7))
    scores[..., 3] = scores[..., 1]  # exact ties everywhere between classes 1 and 3
    scores[:, ::2, 5] = 255
    scores[:, 1::2, 5] = -256
    scale, bias = np.full(7, 0.06603125482797623), np.zeros(7)
    labels = both(scores, scale, bias, (64, 64), 8)
    assert not (labels == 3).any() and (labels == 1).any()
    assert sum(redone) == 0
    assert up._integer_order(scores.astype(float), scale, bias, 256.0)


@pytest.mark.parametrize("stride,field", [(3, None), (5, 10), (8, 32), (2, 8)])
def test_one_scale_no_bias_at_other_strides(stride: int, field) -> None:
    """The integer analysis (no rounding margin) for strides whose weights are not exact in
    float32 (3, 5: the busy cells go the general float32 way) and shift-and-stitch fields;
    scores with many exact ties."""
    rng = np.random.default_rng(stride)
    scores = rng.integers(-3, 4, size=(7, 9, 4)) * 1000
    scale, bias = np.full(4, 0.3), np.zeros(4)
    assert up._monotone(scores.astype(float), scale, bias, float(4 * stride * stride))
    both(scores, scale, bias, (7 * stride - 1, 9 * stride - 2), stride, field, chunk_cells=4)


@pytest.mark.parametrize(
    "scale,bias",
    [
        (0.5, 1e20),  # one bias, but it absorbs every difference: all classes tie
        (-0.5, 0.0),  # one scale, but negative: the order flips
        (0.5, 0.0),  # fine, but scores too large for exact float32 numerators (below)
    ],
)
def test_one_scale_cases_that_are_not_integer_order(scale: float, bias: float) -> None:
    rng = np.random.default_rng(4)
    scores = rng.integers(-300, 300, size=(6, 6, 4))
    if bias == 0.0 and scale > 0:
        scores *= 2**16  # max|s| * 256 >= 2**24
    s, b = np.full(4, scale), np.full(4, bias)
    assert not up._integer_order(scores.astype(float), s, b, 256.0)
    labels = both(scores, s, b, (48, 48), 8)
    if bias:
        assert (labels == 0).all()


@pytest.mark.parametrize(
    "scale,bias",
    [
        (1e-30, 0.0),  # tiny logits
        (1e-42, 0.0),  # subnormal in float32
        (1e-300, 0.0),  # zero in float32
        (1e25, 0.0),  # A near 2**100: float32 still (3A+1 fits)
        (1e40, 0.0),  # beyond float32: the float64 path
        (1e-6, 1e6),  # the bias dominates
        (-3.0, 0.5),  # negative scales
        (0.0, 0.25),  # no scores at all: the biases decide
    ],
)
def test_extreme_scales_and_biases(scale: float, bias: float) -> None:
    rng = np.random.default_rng(7)
    scores = rng.integers(-5, 6, size=(5, 6, 4)) * 1000
    s = np.array([scale, scale * 1.5, scale, scale * 0.75])
    b = np.array([bias, bias, bias * 0.5, bias])
    both(scores, s, b, (40, 48), 8)


def test_all_classes_equal_and_one_class() -> None:
    scores = np.full((4, 4, 5), 12345, dtype=np.int64)
    labels = both(scores, np.full(5, 0.1), np.full(5, -2.0), (32, 32), 8)
    assert (labels == 0).all()
    one = np.random.default_rng(2).integers(-BIG, BIG, size=(4, 4, 1))
    assert (both(one, np.ones(1), np.zeros(1), (32, 32), 8) == 0).all()


def test_rejects_unknown_precision() -> None:
    with pytest.raises(ValueError, match="precision"):
        upsample_argmax(np.zeros((2, 2, 2), int), np.ones(2), np.zeros(2), (4, 4), 2, precision="x")


def test_bound_is_what_the_docstring_says() -> None:
    s = np.array([[[1000.0, -3000.0]]])
    u = 2.0**-24
    a = 2.0 * 3000 + 1.0
    bound = float32_bound(s, np.array([2.0, 0.5]), np.array([1.0, -0.5]), 256.0)
    assert 5 * u * a < bound < 5.01 * u * a
    # a denominator that is not a power of two adds the rounding of the weights
    assert float32_bound(s, np.array([2.0, 0.5]), np.array([1.0, -0.5]), 36.0) > bound + u * a


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("stride,field", [(8, None), (4, 8), (2, 8), (3, None), (16, 32)])
def test_random_maps_and_shift_and_stitch_fields(seed: int, stride: int, field) -> None:
    rng = np.random.default_rng(seed * 31 + stride)
    classes = int(rng.integers(2, 22))
    scores = rng.integers(-400, 400, size=(9, 11, classes))
    scale = rng.uniform(0.001, 0.1, size=classes)
    bias = rng.uniform(-1, 1, size=classes)
    out = (9 * stride - int(rng.integers(0, stride)), 11 * stride - int(rng.integers(0, stride)))
    both(scores, scale, bias, out, stride, field, chunk_cells=5)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    classes=st.integers(1, 6),
    stride=st.sampled_from([1, 2, 3, 4, 8]),
    field_mult=st.sampled_from([1, 2, 4]),
    magnitude=st.sampled_from([2, 1000, BIG]),
    seed=st.integers(0, 2**16),
)
def test_float32_equals_reference_property(h, w, classes, stride, field_mult, magnitude, seed):
    rng = np.random.default_rng(seed)
    centre = int(rng.integers(-magnitude, magnitude))
    low, high = max(-BIG, centre - 3), min(BIG, centre + 3)
    scores = rng.integers(low, high + 1, size=(h, w, classes))
    scale = rng.choice([0.1, 0.25, 1.0, 3.0, 1e-7], size=classes)
    bias = rng.choice([0.0, 0.5, -0.3, 1e-9], size=classes)
    out = (h * stride, w * stride)
    both(scores, scale, bias, out, stride, stride * field_mult, chunk_cells=3)
