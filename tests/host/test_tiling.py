"""Tiling: the stitched heatmap equals one engine pass over the whole canvas, exactly.

:class:`ToyEngine` is a small integer FCN in numpy (3x3 "same" convs, requantizing ReLUs, 2x2
max-pools, FCN-32s or FCN-8s heads with nearest upsampling and skip sums): the same shapes and
integer semantics as a real package, cheap enough for many sizes, and free of torch, so these
tests also run in ``.venv-board``. The real simulator is used when a package is available.
"""

from __future__ import annotations

import numpy as np
import pytest

from fcnseg.host.tiling import (
    Geometry,
    make_canvas,
    plan_axis,
    plan_tiles,
    run_rows,
    run_tiled,
)
from tests.helpers.images import image
from tests.helpers.toy_engine import ToyEngine

SIZES = [(333, 517), (64, 700), (700, 64), (40, 50), (128, 128), (129, 97)]


@pytest.fixture(scope="module", params=["fcn32s", "fcn8s"])
def toy(request: pytest.FixtureRequest) -> ToyEngine:
    return ToyEngine(request.param)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_stitched_equals_one_pass(toy: ToyEngine, size: tuple[int, int]) -> None:
    geometry = toy.geometry()
    canvas = make_canvas(image(*size, seed=size[0]), geometry)
    plan = plan_tiles(geometry, canvas.shape[:2])
    assert plan.exact
    stitched = run_tiled(plan, toy.run, canvas, batch=3)
    reference = toy.run(canvas[None])[0]
    assert np.unique(reference).size > 10  # the toy computes something non-trivial
    np.testing.assert_array_equal(stitched, reference)
    if max(canvas.shape[:2]) > 128:
        assert len(plan.tiles) > 1


def test_very_large_image(toy: ToyEngine) -> None:
    geometry = toy.geometry((256, 192))  # a non-square tile too
    canvas = make_canvas(image(1100, 1900, seed=7), geometry)
    plan = plan_tiles(geometry, canvas.shape[:2])
    assert plan.exact and len(plan.tiles) > 50
    np.testing.assert_array_equal(run_tiled(plan, toy.run, canvas), toy.run(canvas[None])[0])


def test_too_small_overlap_is_not_exact_and_differs() -> None:
    toy = ToyEngine("fcn32s", head_kernel=3)
    geometry = toy.geometry((128, 128))
    canvas = make_canvas(image(300, 300), geometry)
    plan = plan_tiles(geometry, canvas.shape[:2], overlap=0)
    assert not plan.exact and plan.overlap == 0
    stitched = run_tiled(plan, toy.run, canvas)
    assert (stitched != toy.run(canvas[None])[0]).any()


def test_canvas_definition() -> None:
    geometry = Geometry((128, 192), 8, 32, 94)
    assert geometry.canvas_shape(333, 517) == (352, 544)
    assert geometry.canvas_shape(1, 1) == (128, 192)
    assert geometry.canvas_shape(128, 193) == (128, 224)
    img = np.full((33, 40, 3), 7, dtype=np.uint8)
    canvas = make_canvas(img, geometry)
    assert canvas.shape == (128, 192, 3)
    assert (canvas[:33, :40] == 7).all() and canvas[33:].sum() == 0 and canvas[:, 40:].sum() == 0


def test_default_overlap_from_receptive_field() -> None:
    # R = 94: a g-cell needs (94 - 32) / 2 = 31 px a side -> one g-cell a side -> 64 px overlap.
    assert Geometry((128, 128), 8, 32, 94).default_overlap == 64
    assert Geometry((128, 128), 32, 32, 158).default_overlap == 128
    assert Geometry((256, 256), 8, 32, None).default_overlap == 0


@pytest.mark.parametrize(
    "length,tile,overlap", [(544, 128, 64), (128, 128, 0), (1000 // 32 * 32, 256, 96)]
)
def test_axis_plan_covers_every_cell_once(length: int, tile: int, overlap: int) -> None:
    plan = plan_axis(length, tile, 32, 8, overlap)
    assert plan.starts[0] == 0 and plan.starts[-1] == length - tile
    assert all(b - a <= tile - overlap for a, b in zip(plan.starts, plan.starts[1:], strict=False))
    assert all(a % 32 == 0 for a in plan.starts)
    covered = np.concatenate([np.arange(lo, hi) for lo, hi in plan.keep])
    np.testing.assert_array_equal(covered, np.arange(length // 8))
    for start, (lo, hi) in zip(plan.starts, plan.keep, strict=False):
        assert start // 8 <= lo and hi <= (start + tile) // 8


def test_plans_are_cached() -> None:
    geometry = Geometry((128, 128), 8, 32, 94)
    assert plan_tiles(geometry, (352, 544)) is plan_tiles(geometry, (352, 544))


def test_run_tiled_checks_the_engine_output() -> None:
    geometry = Geometry((64, 64), 8, 32, 94)
    plan = plan_tiles(geometry, (64, 64))
    with pytest.raises(ValueError, match="engine returned"):
        run_tiled(plan, lambda x: np.zeros((len(x), 4, 4, 2)), np.zeros((64, 64, 3), np.uint8))


@pytest.mark.parametrize("batch", [1, 2, 3, 7, 100])
def test_run_rows_blocks_stack_to_the_map_with_full_engine_calls(batch: int) -> None:
    """The one execute loop: per tile row, the kept cells, from a refilled band buffer; engine
    calls stay ``batch`` tiles (spanning tile rows) except the last."""
    toy = ToyEngine("fcn8s")
    geometry = toy.geometry()
    canvas = make_canvas(image(333, 490, seed=5), geometry)
    plan = plan_tiles(geometry, canvas.shape[:2])
    n_rows, n_cols = len(plan.rows.starts), len(plan.cols.starts)
    assert n_rows > 1 and n_cols > 1 and n_cols % 2  # odd: groups of 2 straddle rows

    def bands():  # one buffer, overwritten for every row (what a row reader does)
        band = np.empty((128, canvas.shape[1], 3), np.uint8)
        for y in plan.rows.starts:
            band[:] = canvas[y : y + 128]
            yield band
            band[:] = 255  # anything kept by reference would now be garbage

    toy.calls.clear()
    blocks = list(run_rows(plan, toy.run, bands(), batch))
    assert [len(b) for b in blocks] == [hi - lo for lo, hi in plan.rows.keep]
    np.testing.assert_array_equal(np.concatenate(blocks), toy.run(canvas[None])[0])
    sizes = [shape[0] for shape in toy.calls[:-1]]
    total = n_rows * n_cols
    assert sizes[:-1] == [min(batch, total)] * (len(sizes) - 1)
    assert sum(sizes) == total and len(sizes) == -(-total // batch)


def test_run_rows_hands_out_a_row_once_its_tiles_have_run() -> None:
    """A block is out no later than one band after its own: strips stay memory-bounded."""
    toy = ToyEngine("fcn32s")
    geometry = toy.geometry()
    canvas = make_canvas(image(400, 300, seed=2), geometry)
    plan = plan_tiles(geometry, canvas.shape[:2])
    drawn: list[int] = []

    def bands():
        for i, y in enumerate(plan.rows.starts):
            drawn.append(i)
            yield canvas[y : y + 128]

    for i, _ in enumerate(run_rows(plan, toy.run, bands(), batch=4)):
        assert drawn[-1] <= i + 1


def test_run_rows_checks_its_bands() -> None:
    geometry = Geometry((64, 64), 8, 32, 94)
    plan = plan_tiles(geometry, (128, 64))
    run = ToyEngine().run
    with pytest.raises(ValueError, match="band"):
        list(run_rows(plan, run, [np.zeros((32, 64, 3), np.uint8)] * 2))
    with pytest.raises(ValueError):  # one band short
        list(run_rows(plan, run, [np.zeros((64, 64, 3), np.uint8)]))


# --- the real simulator on real packages -----------------------------------------------------


@pytest.fixture(scope="module")
def built_fcn8s(tmp_path_factory: pytest.TempPathFactory):
    """A small Brevitas FCN-8s converted by the hw flow into a package (H4's test builder).

    Built at a 192x192 tile (the builder's default tile, 64, is smaller than the overlap this
    net needs). Its topology (one 3x3 conv per stage, 3x3 fc6) has R = 32 + 2 * (31 + 32) = 158.
    """
    pytest.importorskip("torch")
    pytest.importorskip("finn")
    from fcnseg.host.package import load_package
    from fcnseg.host.sim.engine import SimEngine
    from tests.helpers.sim_graph import build

    out = tmp_path_factory.mktemp("fcn8s")
    _, _, path = build("fcn8s", 4, 4, 8, 3, 0, out, tile=(192, 192))
    package = load_package(path)
    engine = SimEngine(package)
    geometry = Geometry(package.tile, package.output_stride, engine.net_stride, 158)
    return engine, geometry


@pytest.mark.slow
@pytest.mark.parametrize("size", [(333, 517), (64, 700), (700, 64), (40, 50)])
def test_real_sim_stitched_equals_one_pass(built_fcn8s, size: tuple[int, int]) -> None:
    engine, geometry = built_fcn8s
    canvas = make_canvas(image(*size, seed=size[1]), geometry)
    plan = plan_tiles(geometry, canvas.shape[:2])
    assert plan.exact
    stitched = run_tiled(plan, engine.run, canvas)
    reference = engine.run(canvas[None])[0]
    assert np.unique(reference).size > 10
    np.testing.assert_array_equal(stitched, reference)


@pytest.mark.slow
def test_default_package_stitched_equals_one_pass() -> None:
    """The shipped package (when it has been built): its own receptive field gives exactness."""
    from fcnseg.host.segmenter import DEFAULT_PACKAGE, Segmenter

    if not (DEFAULT_PACKAGE / "accelerator.json").is_file():
        pytest.skip("the default package has not been built")
    seg = Segmenter.load(DEFAULT_PACKAGE)
    canvas = make_canvas(image(333, 517, seed=5), seg.geometry)
    plan = seg.plan(333, 517)
    assert plan.exact
    stitched = run_tiled(plan, seg.engine.run, canvas)
    np.testing.assert_array_equal(stitched, seg.engine.run(canvas[None])[0])
