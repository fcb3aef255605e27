"""The shipped default model: its exact meaning == the shipped packages on the simulator.

This closes the chain for the artifacts users actually get (models/default-fcn8s/checkpoint ->
export -> host/packages/fcn8s-*: 256x256 tiles, and the tiles `fcnseg compile --frame 512 1024`
chose). The reference is the quantized model computed
exactly (:mod:`fcnseg.quantize.exact`: integer convolutions, thresholds solved in rationals from
the checkpoint's own parameters), on every sample photo at tile size (crops and a resize) and at
whole size. Brevitas in float64 is checked too; qonnx on the export computes in float32 and is a
witness whose agreement is reported, not assumed (``docs/exactness.md``).

Before the exact thresholds, finn's float32 folding left 6 of the 13,830 thresholds one off; the
shipped package then differed from the model on ``samples/astronaut.jpg`` in 1,194 of 25,200
scores, and a single changed pixel of the resized astronaut (230, 39, blue 72 -> 244) put qonnx,
finn and the simulator 939 scores away from Brevitas. Those inputs are kept here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "models" / "default-fcn8s" / "checkpoint.safetensors"
EXPORT = ROOT / "models" / "default-fcn8s" / "export"
#: every shipped package: the 256x256 ones and those chosen for 512x1024 frames
PACKAGES = sorted(p.parent for p in (ROOT / "host" / "packages").glob("fcn8s-*/accelerator.json"))
SAMPLES = sorted((ROOT / "samples").glob("*.jpg"))
TILE = 256


@pytest.fixture(scope="module")
def reference():
    from fcnseg.quantize.exact.forward import ExactForward
    from fcnseg.quantize.exact.record import load_net

    return ExactForward(load_net(EXPORT))


@pytest.fixture(scope="module")
def engines():
    from fcnseg.host.package import load_package
    from fcnseg.host.sim.engine import SimEngine

    return [SimEngine(load_package(p)) for p in PACKAGES]


@pytest.fixture(scope="module")
def model():
    from fcnseg.quantize.models.io import load_checkpoint

    return load_checkpoint(CHECKPOINT)[0]


def _sample(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _stride_crop(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[0] // 32 * 32, img.shape[1] // 32 * 32
    return np.ascontiguousarray(img[:h, :w])


def _assert_package_exact(reference, engines, img: np.ndarray) -> None:
    want = reference.run(img[None])
    for engine, path in zip(engines, PACKAGES, strict=True):
        have = engine.run(img[None])
        assert (have != want).sum() == 0, f"{path.name}: {(have != want).sum()} scores differ"


def test_export_record_is_the_checkpoints(model) -> None:
    """The shipped exact record is what the checkpoint gives today (and names its sha256)."""
    import hashlib

    from fcnseg.quantize.exact.extract import exact_net
    from fcnseg.quantize.exact.record import load_net

    shipped, fresh = load_net(EXPORT), exact_net(model)
    assert shipped.steps == fresh.steps
    for a, b in zip(shipped.steps, fresh.steps, strict=True):
        if a.weight is not None:
            np.testing.assert_array_equal(a.weight, b.weight)
    assert shipped.source["sha256"] == hashlib.sha256(CHECKPOINT.read_bytes()).hexdigest()


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_every_threshold_of_the_shipped_packages_is_exact(package: Path) -> None:
    from fcnseg.host.package import load_package
    from fcnseg.hw.steps.exact_thresholds import misplaced
    from fcnseg.quantize.exact.record import load_net

    pkg = load_package(package)
    assert misplaced(list(pkg.layers), load_net(EXPORT)) == []
    meta = json.loads((package / "accelerator.json").read_text())
    assert meta["estimates"]["exact_thresholds"] == {"thresholds": 13830, "moved": 6}


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_sample_whole_size(reference, engines, path: Path) -> None:
    _assert_package_exact(reference, engines, _stride_crop(_sample(path)))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_sample_tiles(reference, engines, path: Path) -> None:
    """Tile-sized crops (corners and centre, where the photo is big enough) and a resize."""
    img = _sample(path)
    h, w = img.shape[:2]
    tiles = [np.asarray(Image.fromarray(img).resize((TILE, TILE), Image.BILINEAR))]
    if h >= TILE and w >= TILE:
        for y, x in {(0, 0), (h - TILE, w - TILE), ((h - TILE) // 2, (w - TILE) // 2)}:
            tiles.append(img[y : y + TILE, x : x + TILE])
    for tile in tiles:
        _assert_package_exact(reference, engines, np.ascontiguousarray(tile))


def test_astronaut_crops_and_the_one_pixel_case(reference, engines, model) -> None:
    """The inputs that exposed the float32 thresholds, with float64 Brevitas as a second check."""
    from skimage import data
    from skimage.transform import resize

    from tests.helpers.exact_nets import brevitas_scores

    photo = _sample(ROOT / "samples" / "astronaut.jpg")
    resized = np.round(resize(data.astronaut(), (TILE, TILE), preserve_range=True,
                              anti_aliasing=True)).astype(np.uint8)  # fmt: skip
    poked = resized.copy()
    poked[230, 39, 2] = 244
    for img in (photo[:TILE, :TILE], photo[100 : 100 + TILE, 150 : 150 + TILE], resized, poked):
        img = np.ascontiguousarray(img)
        _assert_package_exact(reference, engines, img)
        np.testing.assert_array_equal(brevitas_scores(model, img[None]), reference.run(img[None]))


def test_qonnx_on_the_export_is_a_witness(reference, record_property) -> None:
    """qonnx executes the export in float32: its agreement is measured and reported.

    Pinned with qonnx 1.0.0: it agrees on the resized astronaut and not once one pixel lands an
    accumulator on a misrounded float32 boundary (939 of 7,168 scores when measured) — why it is
    a witness and not the reference."""
    pytest.importorskip("qonnx")
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from skimage import data
    from skimage.transform import resize

    card = json.loads((EXPORT / "model.json").read_text())
    graph = ModelWrapper(str(EXPORT / "model.onnx"))
    scale, bias = np.asarray(card["output_scale"]), np.asarray(card["output_bias"])
    resized = np.round(resize(data.astronaut(), (TILE, TILE), preserve_range=True,
                              anti_aliasing=True)).astype(np.uint8)  # fmt: skip
    poked = resized.copy()
    poked[230, 39, 2] = 244
    report = {}
    for name, img in (("astronaut 256", resized), ("astronaut 256, one pixel changed", poked)):
        x = img.transpose(2, 0, 1)[None].astype(np.float32)
        (logits,) = execute_onnx(graph, {graph.graph.input[0].name: x}).values()
        scores = np.rint((logits[0].transpose(1, 2, 0) - bias) / scale).astype(np.int64)
        report[name] = int((scores != reference.run(img[None])[0]).sum())
    record_property("qonnx_scores_differing_from_exact", report)
    print(f"qonnx (float32) vs exact model, scores that differ: {report}")
    assert report["astronaut 256"] == 0
    assert report["astronaut 256, one pixel changed"] > 0


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_a_512x1024_frame_tiled_at_the_package_tile_is_the_whole_frame(reference, package):
    """The host's exact tiling with each package's own tile (and overlap from its receptive
    field) stitches the integer scores the quantized model gives the whole frame: a photo
    resized to 512x1024 with a saturated band and a black band across tile seams."""
    from fcnseg.host.segmenter import Segmenter
    from fcnseg.host.tiling import make_canvas, run_tiled

    photo = Image.open(SAMPLES[0]).convert("RGB").resize((1024, 512), Image.BILINEAR)
    frame = np.asarray(photo).copy()
    frame[:, 300:340] = 255
    frame[200:232, :] = 0
    seg = Segmenter.load(package)
    plan = seg.plan(*frame.shape[:2])
    assert plan.exact
    canvas = make_canvas(frame, seg.geometry)
    stitched = run_tiled(plan, seg.engine.run, canvas)
    want = reference.run(canvas[None])[0]
    assert stitched.shape == want.shape and (stitched != want).sum() == 0
