"""The classifier API (host/classify.py): a valid-conv classifier slid over images, exactly.

The oracle is the toy classifier's integer layers evaluated directly (numpy int64: windows,
dot products, threshold counts, max-pools; :func:`reference`) on each crop one by one — not
the simulator — so the tiled map, the shifted passes and the interleave are checked cell by
cell against "the classifier on the crop at (i d, j d)". The simulator's one pass of a
big-tile package over the whole image is the second reference (the tiling's claim).
numpy-only (runs in the board environment too).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fcnseg.errors import ParameterError, UserError
from fcnseg.host.backends import open_engine
from fcnseg.host.classify import (
    Classification,
    Classifier,
    plan_axis,
    pool_logits,
    resize,
    scale_size,
    softmax,
)
from fcnseg.host.package import Layer, load_package
from fcnseg.host.shift_stitch import interleave, plan_shifts
from tests.helpers.packages import CLS_STRIDE, CLS_WINDOW, classifier_package, tiny_package

W, S = CLS_WINDOW, CLS_STRIDE


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("classify")


@pytest.fixture(scope="module")
def small(folder: Path) -> Classifier:
    """The toy classifier at a 24-px tile (3x3 cells a tile): most images take many tiles."""
    return Classifier.load(classifier_package(folder / "t24", tile=24), batch=3)


@pytest.fixture(scope="module")
def big(folder: Path):
    """The same net (same seed) at a 128-px tile: its simulator runs any image in one pass."""
    return open_engine("sim", load_package(classifier_package(folder / "t128", tile=128)))


def _window(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """``(oh, ow, k, k, C)`` windows of ``x`` (no padding)."""
    h, w = (x.shape[0] - k) // s + 1, (x.shape[1] - k) // s + 1
    if h < 1 or w < 1:
        return np.zeros((max(h, 0), max(w, 0), k, k, x.shape[2]), x.dtype)
    return np.stack(
        [np.stack([x[i * s : i * s + k, j * s : j * s + k] for j in range(w)]) for i in range(h)]
    )


def reference(layers: list[Layer], crop: np.ndarray) -> np.ndarray:
    """The integer scores of the toy classifier's layers on ``crop`` (int64, every cell).

    Each window layer is read with the layer after it: a dense one feeds an MVAU (the
    patch's ``(ky, kx, c)`` values times the weight matrix, then ``#{t : acc >= t}`` per
    threshold row, or the raw accumulator), a depthwise one feeds a max-pool per channel."""
    x = crop.astype(np.int64)
    it = iter(layers)
    for layer in it:
        if layer.kind == "MVAU":  # a 1x1 convolution: no window layer in front
            windows, consumer = x[:, :, None, None, :], layer
        else:
            k, s = layer.attributes["ConvKernelDim"][0], layer.attributes["Stride"][0]
            windows, consumer = _window(x, k, s), next(it)
        if consumer.kind == "Pool":
            x = windows.max(axis=(2, 3))
            continue
        weights = consumer.arrays["weights"].astype(np.int64)
        acc = windows.reshape(*windows.shape[:2], int(np.prod(windows.shape[2:]))) @ weights
        thresholds = consumer.arrays.get("thresholds")
        if thresholds is None:
            x = acc
        else:
            x = (acc[..., None] >= thresholds.astype(np.int64)).sum(axis=-1)
    return x


def crops_map(layers: list[Layer], image: np.ndarray, d: int) -> np.ndarray:
    """The reference on every ``W x W`` crop of ``image`` at stride ``d``, one by one."""
    ny, nx = (image.shape[0] - W) // d + 1, (image.shape[1] - W) // d + 1
    out = [
        [reference(layers, image[i * d : i * d + W, j * d : j * d + W])[0, 0] for j in range(nx)]
        for i in range(ny)
    ]
    return np.array(out, dtype=np.int64).reshape(ny, nx, -1)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_the_reference_is_the_layers_at_one_window(small: Classifier) -> None:
    layers = list(small.package.layers)
    crop = _image(W, W, 5)
    assert reference(layers, crop).shape == (1, 1, 3)
    # and a crop one pixel short of the window has no cell: the window is the layers'
    assert reference(layers, crop[: W - 1, : W - 1]).shape[:2] == (0, 0)


# image sizes at the boundaries: exactly one window; one pixel short of a second cell; exactly
# two cells; smaller than the tile on one axis; many tiles on both, not multiples of anything
SIZES = [(W, W), (W + S - 1, W), (W + S, W + S), (W, 61), (57, 45), (81, 90)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_cell_is_the_classifier_on_its_crop(small: Classifier, size) -> None:
    image = _image(*size, seed=size[0])
    got = small.score_map(image)
    want = crops_map(list(small.package.layers), image, S)
    assert got.shape == ((size[0] - W) // S + 1, (size[1] - W) // S + 1, 3)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("size", [(57, 45), (101, 37), (20, 15), (128, 128)])
def test_tiled_map_equals_one_pass_of_a_big_tile_package(small: Classifier, big, size) -> None:
    image = _image(*size, seed=3)
    ny, nx = (size[0] - W) // S + 1, (size[1] - W) // S + 1
    padded = np.zeros((-(-size[0] // S) * S, -(-size[1] // S) * S, 3), np.uint8)
    padded[: size[0], : size[1]] = image
    one_pass = big.run(padded[None])[0][:ny, :nx]
    assert one_pass.shape == (ny, nx, 3)
    np.testing.assert_array_equal(small.score_map(image), one_pass)


def test_the_plan_overlaps_tiles_by_window_minus_stride() -> None:
    axis = plan_axis(101, 24, S, W)
    steps = np.diff(axis.starts[:-1])
    # a 24-px tile has 3 cells: tiles advance 12 px, overlapping by 12 = 24 - 12 (w - s = 10
    # when s divides T - w; here T - w = 10 is not a multiple of 4, so the overlap is T - m s)
    assert axis.cells == 22 and set(steps.tolist()) == {12}
    assert all(x % S == 0 for x in axis.starts) and axis.starts[-1] == axis.length - 24
    assert axis.length == 100  # w + 21 s = 98, rounded up to a multiple of the stride
    exact = plan_axis(384 + 32 * 3, 384, 32, 224)  # the seed's net: T - w = 160 = 5 s
    assert exact.starts == (0, 96) and 384 - (exact.starts[1] - exact.starts[0]) == 224 + 64


@pytest.mark.parametrize("d", [2, 1])
@pytest.mark.parametrize("size", [(W + 1, W + 3), (37, 29)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_shifted_passes_interleave_into_the_finer_sliding(small: Classifier, d, size) -> None:
    # (W + 1) x (W + 3) at d = 1: phases 2 and 3 of the rows have no cell (interleave of
    # uneven passes); at d = 2 one phase of the columns is empty
    image = _image(*size, seed=11)
    got = small.score_map(image, stride=d)
    np.testing.assert_array_equal(got, crops_map(list(small.package.layers), image, d))


def test_interleave_refuses_a_pass_of_the_wrong_size() -> None:
    plan = plan_shifts(4, 2)
    maps = [np.zeros((2, 2, 1)), np.zeros((2, 1, 1)), np.zeros((1, 2, 1)), np.zeros((1, 1, 1))]
    fine = interleave(plan, maps, (3, 3))
    assert fine.shape == (3, 3, 1)
    with pytest.raises(ValueError, match=r"pass \(1, 1\) gave \(1, 2\) cells, its phase has"):
        interleave(plan, [*maps[:3], np.zeros((1, 2, 1))], (3, 3))
    with pytest.raises(ValueError, match="3 maps for the 4 passes"):
        interleave(plan, maps[:3], (3, 3))


def test_interleave_of_equal_passes_is_segmentations_shift_stitch() -> None:
    from fcnseg.host.shift_stitch import shift_stitch

    plan = plan_shifts(8, 4)
    canvas = _image(32, 40, seed=9)
    maps = []

    def run(c: np.ndarray) -> np.ndarray:  # a stand-in net: one cell per 8x8 block, 3 "classes"
        out = c.reshape(4, 8, 5, 8, 3).astype(np.int64).sum(axis=(1, 3)) * (len(maps) + 1)
        maps.append(out)
        return out

    fine = shift_stitch(plan, run, canvas)
    np.testing.assert_array_equal(interleave(plan, maps, fine.shape[:2]), fine)


def test_pooling_dequantizes_then_takes_the_mean_or_max(small: Classifier) -> None:
    image = _image(41, 50, seed=2)
    scores = small.score_map(image)
    logits = scores.astype(np.float64) * small.output_scale + small.output_bias  # (ny, nx, C)
    for pool, want in (("mean", logits.mean(axis=(0, 1))), ("max", logits.max(axis=(0, 1)))):
        result = small.classify(image, scales=[(41, 50)], pool=pool)
        np.testing.assert_allclose(result.logits, want, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(result.scales[0].scores, scores)
        assert result.pool == pool and result.scales[0].stride == S
    with pytest.raises(ParameterError, match="pool='median' must be one of mean, max"):
        pool_logits(scores, small.output_scale, small.output_bias, "median")


def test_multi_scale_is_the_mean_of_the_pooled_logits(small: Classifier) -> None:
    image = _image(30, 40, seed=4)
    specs = [(30, 40), 1.5, (20, 17)]
    result = small.classify(image, scales=specs, stride=2)
    per_scale = []
    for spec, got in zip(specs, result.scales, strict=True):
        size = scale_size(spec, 30, 40)
        scores = small.score_map(resize(image, size), stride=2)
        np.testing.assert_array_equal(got.scores, scores)
        assert got.size == size
        per_scale.append(pool_logits(scores, small.output_scale, small.output_bias))
    assert [r.size for r in result.scales] == [(30, 40), (45, 60), (20, 17)]
    np.testing.assert_allclose(result.logits, np.mean(per_scale, axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.probabilities, softmax(result.logits), rtol=0, atol=0)
    assert abs(result.probabilities.sum() - 1) < 1e-12


def test_default_scale_is_the_tile(small: Classifier) -> None:
    image = _image(50, 70, seed=6)
    result = small.classify(image)
    assert result.scales[0].size == (24, 24) and result.scales[0].scores.shape == (3, 3, 3)


def test_resize_is_pillow_bilinear_and_identity_at_the_image_size() -> None:
    from PIL import Image

    image = _image(31, 47, seed=8)
    assert resize(image, (31, 47)) is image
    want = np.asarray(Image.fromarray(image).resize((20, 10), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(resize(image, (10, 20)), want)
    assert scale_size(0.5, 31, 47) == (16, 24)  # round half to even: 15.5 -> 16, 23.5 -> 24
    assert scale_size(0.01, 31, 47) == (1, 1)
    assert scale_size((7, 9), 31, 47) == (7, 9)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ParameterError, match="must be a positive number"):
            scale_size(bad, 31, 47)
    with pytest.raises(ParameterError, match="must be positive"):
        scale_size((0, 9), 31, 47)


def test_softmax_and_top_k() -> None:
    p = softmax(np.array([1000.0, 1000.0, 999.0]))  # no overflow
    assert np.isfinite(p).all() and p[0] == p[1] > p[2]
    result = Classification(("a", "b", "c"), np.log(p), p, (), "mean")
    assert [name for _, name, _ in result.top(3)] == ["a", "b", "c"]  # tie: lower index first
    assert result.top(1) == [(0, "a", float(p[0]))]
    assert len(result.top(9)) == 3
    with pytest.raises(ParameterError, match="top=0 must be >= 1"):
        result.top(0)


def test_an_image_smaller_than_the_window_is_one_line(small: Classifier) -> None:
    for size in [(W - 1, 40), (40, W - 1)]:
        with pytest.raises(UserError) as info:
            small.score_map(_image(*size))
        assert str(info.value) == (
            f"image {size[0]}x{size[1]} is smaller than the classifier's {W}x{W} window"
        )
    with pytest.raises(UserError, match="image 30x40 at 8x10 is smaller than the classifier's"):
        small.classify(_image(30, 40), scales=[0.25])  # the scale makes it too small


def test_strides_offered_are_the_shift_factors(small: Classifier) -> None:
    assert small.strides() == (4, 2, 1)
    with pytest.raises(ParameterError, match="stride=3 must be one of 4, 2, 1"):
        small.score_map(_image(20, 20), stride=3)


def test_segmentation_and_classification_packages_refuse_each_other(
    folder: Path, small: Classifier
) -> None:
    from fcnseg.host.segmenter import Segmenter

    seg = tiny_package(folder / "seg")
    with pytest.raises(UserError) as info:
        Classifier.load(seg)
    assert str(info.value) == (
        f"package {seg} is a segmentation package, not a classification one; use "
        "`fcnseg segment` with it, or give a classification package"
    )
    with pytest.raises(UserError, match="is a classification package, not a segmentation one"):
        Segmenter.load(small.package.path)


def test_a_window_unlike_the_layers_is_refused(folder: Path) -> None:
    path = classifier_package(folder / "w18", tile=24, window=18)  # the layers see 14
    with pytest.raises(UserError) as info:
        Classifier.load(path)
    assert str(info.value) == (
        f"package {path}: model card window 18 gives (2, 2) cells on the (24, 24) tile, its "
        "layers give (3, 3)"
    )


def test_missing_default_package_is_one_line(monkeypatch, tmp_path: Path) -> None:
    import fcnseg.host.classify as classify

    monkeypatch.setattr(classify, "DEFAULT_PACKAGE", tmp_path / "classifier-pynq-z2")
    with pytest.raises(UserError, match="default classifier package classifier-pynq-z2 is missing"):
        Classifier.load()


SHIPPED = Path(__file__).resolve().parents[2] / "host" / "packages" / "classifier-pynq-z2"
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "chelsea.jpg"


def check_map_is_its_crops(package: Path, photo: Path, tmp_path: Path, capsys) -> None:
    """The seed's claim in integers on ``package``: at its tile (one pass), cell (i, j) is the
    package's simulator on the ``window`` crop at (s i, s j), run crop by crop (each padded
    with zeros to a multiple of s, which adds no cell); and ``fcnseg classify`` runs with it
    on ``photo``."""
    from PIL import Image

    from fcnseg.cli import main

    clf = Classifier.load(package)
    window, s = clf.geometry.window, clf.geometry.stride
    with Image.open(photo) as img:
        rgb = resize(np.asarray(img.convert("RGB")), clf.geometry.tile)
    one_pass = clf.score_map(rgb)
    ny, nx = clf.geometry.tile_cells
    assert one_pass.shape[:2] == (ny, nx) and (ny, nx) == (
        (clf.geometry.tile[0] - window) // s + 1,
        (clf.geometry.tile[1] - window) // s + 1,
    )
    side = -(-window // s) * s
    for i in range(ny):
        for j in range(nx):
            crop = np.zeros((1, side, side, 3), np.uint8)
            crop[0, :window, :window] = rgb[i * s : i * s + window, j * s : j * s + window]
            cell = clf.engine.run(crop)
            assert cell.shape[1:3] == (1, 1)
            np.testing.assert_array_equal(one_pass[i, j], cell[0, 0, 0])
    report = tmp_path / "r.json"
    assert main(["classify", str(photo), "--package", str(package), "--json", str(report)]) == 0
    entry = json.loads(report.read_text())["images"][0]
    assert entry["status"] == "done" and entry["scales"][0]["cells"] == [ny, nx]
    assert capsys.readouterr().out.count("  1. ") == 1


def test_toy_map_is_its_crops_on_a_photo(small: Classifier, tmp_path: Path, capsys) -> None:
    check_map_is_its_crops(small.package.path, SAMPLE, tmp_path, capsys)


@pytest.mark.skipif(
    not (SHIPPED / "accelerator.json").is_file(), reason="the shipped classifier is not built"
)
def test_shipped_classifier_map_is_its_crops_on_a_photo(tmp_path: Path, capsys) -> None:
    """:func:`check_map_is_its_crops` on the shipped classifier and a sample photo."""
    check_map_is_its_crops(SHIPPED, SAMPLE, tmp_path, capsys)
