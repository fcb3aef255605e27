"""Upsample + argmax: exact against the naive computation and against torch's interpolate."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcnseg.host.upsample import (
    analyse_cells,
    axis_weights,
    upsample_argmax,
    upsample_argmax_naive,
)


def blobby_scores(h: int, w: int, classes: int, seed: int, noise: int = 3) -> np.ndarray:
    """Integer scores like a real net's: a few regions, one class high in each, some noise."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, size=(classes, 2)) * (h, w)
    yy, xx = np.mgrid[0:h, 0:w]
    dist = (yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2
    owner = np.argmin(dist, axis=2)
    scores = rng.integers(-noise, noise + 1, size=(h, w, classes))
    scores[yy, xx, owner] += 40
    return scores.astype(np.int64)


@pytest.mark.parametrize("stride,field", [(8, None), (16, None), (32, None), (16, 32), (8, 32)])
@pytest.mark.parametrize("shape", [(5, 7), (1, 1), (1, 6), (9, 2)])
def test_fast_equals_naive_random_with_ties(shape: tuple[int, int], stride: int, field) -> None:
    rng = np.random.default_rng(hash((shape, stride, field)) % 2**32)
    # A tiny value range makes ties everywhere (corner ties and interior ties).
    scores = rng.integers(-2, 3, size=(*shape, 4))
    scale = np.ones(4)
    bias = np.zeros(4)
    for out in [(shape[0] * stride, shape[1] * stride), (shape[0] * stride - 3, 5)]:
        out = (max(out[0], 1), max(out[1], 1))
        fast = upsample_argmax(scores, scale, bias, out, stride, field)
        naive = upsample_argmax_naive(scores, scale, bias, out, stride, field)
        np.testing.assert_array_equal(fast, naive)


@pytest.mark.parametrize("seed", range(3))
def test_fast_equals_naive_dequantized(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = blobby_scores(12, 17, 6, seed)
    scale = rng.uniform(0.01, 0.2, size=6)
    bias = rng.uniform(-1, 1, size=6)
    out = (12 * 8 - 5, 17 * 8 - 11)
    fast = upsample_argmax(scores, scale, bias, out, 8)
    naive = upsample_argmax_naive(scores, scale, bias, out, 8, rows_per_chunk=7)
    np.testing.assert_array_equal(fast, naive)
    uniform = analyse_cells(scores.astype(float), scale, bias).uniform
    assert 0.2 < uniform.mean() < 1.0  # the test exercises both paths


def test_tie_goes_to_lowest_class() -> None:
    scores = np.zeros((2, 2, 3), dtype=np.int64)
    scores[..., 1] = 5
    scores[..., 2] = 5
    labels = upsample_argmax(scores, np.ones(3), np.zeros(3), (16, 16), 8)
    assert (labels == 1).all()
    # A tie made by the scale: class 2 at 10 * 0.5 == class 1 at 5 * 1.
    scores[..., 2] = 10
    labels = upsample_argmax(scores, np.array([1.0, 1.0, 0.5]), np.zeros(3), (16, 16), 8)
    assert (labels == 1).all()


def test_axis_weights_match_torch_source_index() -> None:
    w = axis_weights(64, 4, 16)
    src = np.maximum((np.arange(64) + 0.5) / 16 - 0.5, 0)
    expect_i0 = np.minimum(np.floor(src), 3).astype(int)
    np.testing.assert_array_equal(w.i0, expect_i0)
    lam = np.where(expect_i0 < 3, src - expect_i0, 0)
    np.testing.assert_array_equal(w.w1 / w.den, lam)


@pytest.mark.parametrize("classes,noise", [(3, 1), (21, 20)])
@pytest.mark.parametrize("stride", [8, 32])
def test_matches_torch_interpolate(classes: int, noise: int, stride: int) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(classes + stride)
    scores = blobby_scores(7, 9, classes, classes, noise=noise)
    scores[2, 3] = 0  # a corner with all classes tied
    # Power-of-two scales and dyadic biases: torch's float64 arithmetic is then exact too, so the
    # labels must agree everywhere, ties included.
    scale = 2.0 ** rng.integers(-4, 1, size=classes)
    bias = rng.integers(-8, 8, size=classes) / 4
    logits = torch.from_numpy((scores * scale + bias).transpose(2, 0, 1)[None])
    up = torch.nn.functional.interpolate(
        logits, size=(7 * stride, 9 * stride), mode="bilinear", align_corners=False
    )
    h, w = 7 * stride - 5, 9 * stride - 3  # the canvas crop
    expect = up[0, :, :h, :w].argmax(dim=0).numpy()
    # torch.argmax returns the first maximum too (documented for CPU)
    got = upsample_argmax(scores, scale, bias, (h, w), stride)
    np.testing.assert_array_equal(got, expect)


def test_matches_torch_on_real_scale_within_rounding() -> None:
    """Arbitrary float scales: labels agree except where torch's float32 top-2 gap is tiny."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    scores = blobby_scores(16, 16, 21, 3, noise=30)
    scale = rng.uniform(0.01, 0.1, size=21)
    bias = rng.uniform(-0.5, 0.5, size=21)
    logits = torch.from_numpy((scores * scale + bias).transpose(2, 0, 1)[None].astype(np.float32))
    up = torch.nn.functional.interpolate(logits, scale_factor=8, mode="bilinear")[0]
    top2 = up.topk(2, dim=0).values
    clear = (top2[0] - top2[1]).numpy() > 1e-4
    expect = up.argmax(dim=0).numpy()
    got = upsample_argmax(scores, scale, bias, (128, 128), 8)
    np.testing.assert_array_equal(got[clear], expect[clear])
    assert clear.mean() > 0.99


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="integers"):
        upsample_argmax(np.zeros((2, 2, 3)), np.ones(3), np.zeros(3), (4, 4), 2)
    with pytest.raises(ValueError, match="one entry per class"):
        upsample_argmax(np.zeros((2, 2, 3), int), np.ones(2), np.zeros(3), (4, 4), 2)


@pytest.mark.parametrize("arch,stride", [("fcn8s", 8), ("fcn32s", 32)])
def test_real_score_maps(arch: str, stride: int) -> None:
    """An integer FCN's scores on a real photo: fast == naive == torch (exact here)."""
    from tests.helpers.images import image
    from tests.helpers.toy_engine import ToyEngine

    img = image(160, 224, seed=1)
    scores = ToyEngine(arch, classes=3).run(img[None])[0]
    scale = np.array([0.5, 0.25, 0.125])  # dyadic: torch's float64 is exact on these too
    bias = np.array([0.0, 1.0, -0.5])
    fast = upsample_argmax(scores, scale, bias, (157, 221), stride)
    np.testing.assert_array_equal(
        fast, upsample_argmax_naive(scores, scale, bias, (157, 221), stride)
    )
    assert np.unique(fast).size > 1
    torch = pytest.importorskip("torch")
    logits = torch.from_numpy((scores * scale + bias).transpose(2, 0, 1)[None])
    up = torch.nn.functional.interpolate(logits, scale_factor=stride, mode="bilinear")
    np.testing.assert_array_equal(fast, up[0, :, :157, :221].argmax(dim=0).numpy())


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    classes=st.integers(1, 5),
    stride=st.sampled_from([1, 2, 3, 4, 8, 16]),
    field_mult=st.sampled_from([1, 2, 4]),
    crop=st.tuples(st.integers(0, 7), st.integers(0, 7)),
    spread=st.integers(0, 6),
    seed=st.integers(0, 2**16),
)
def test_fast_equals_naive_property(h, w, classes, stride, field_mult, crop, spread, seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(-spread, spread + 1, size=(h, w, classes))
    scale = rng.choice([0.1, 0.25, 1.0, 3.0], size=classes)
    bias = rng.choice([0.0, 0.5, -0.3], size=classes)
    out = (max(1, h * stride - crop[0]), max(1, w * stride - crop[1]))
    field = stride * field_mult
    fast = upsample_argmax(scores, scale, bias, out, stride, field, chunk_cells=3)
    np.testing.assert_array_equal(
        fast, upsample_argmax_naive(scores, scale, bias, out, stride, field)
    )
