"""The shipped classifier (host/packages/classifier-pynq-z2) through the emulated board: the
real pynq 4.0.0 + finn-plus-driver 1.6.1 code on the emulated Zynq (``fcnseg.testing.
emulated_zynq``, fabric = the bit-exact simulator), driven by ``Classifier.load(.., "pynq")``.

What is checked, all in exact integers: the 6x6 score map of a sample photo resized to the
384x384 tile, and of boundary images (every pixel 0 or 255: the ends of the input range), equals
the ``sim`` backend's; each of the 36 cells equals the classifier on its 224x224 crop at
(32 i, 32 j), the crop run through the *same pynq path* (the board takes only its 384x384
tile, so the crop sits at the top-left of a zero tile, whose cell (0, 0) sees only the crop:
no padding, and the crop starts on the pooling grid) and, independently, through the
simulator on the bare 224x224 crop; and ``fcnseg classify --backend pynq`` exits 0 with the
sim backend's top-k. The package is copied with emulated board files into ``tmp_path``
(``emulated_package``); host/packages is never modified. Runs where pynq is installed
(``.venv-board``); skips elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pynq")

from fcnseg.host.classify import DEFAULT_PACKAGE, Classifier, resize  # noqa: E402
from fcnseg.host.images import load_image  # noqa: E402
from fcnseg.host.package import load_package  # noqa: E402
from fcnseg.host.sim.engine import SimEngine  # noqa: E402
from fcnseg.testing import emulated_zynq as ez  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "samples" / "chelsea.jpg"

pytestmark = pytest.mark.skipif(
    not (DEFAULT_PACKAGE / "accelerator.json").is_file(),
    reason="the shipped classifier package is not built",
)


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    """(the shipped package, a copy of it in tmp_path with emulated bitfile/ + settings)."""
    package = load_package(DEFAULT_PACKAGE)
    if package.file("driver/settings.json").is_file():
        pytest.skip("package has a real bitfile: the emulated board cannot run it")
    copy = ez.emulated_package(package, tmp_path_factory.mktemp("emu") / package.path.name)
    return package, load_package(copy)


def _boundary_images(tile: tuple[int, int]) -> dict[str, np.ndarray]:
    """Tile-sized images at the ends of the uint8 input range: random 0/255 pixels, and
    40-px blocks alternating all-0 / all-255 (edges off the 32-px cell grid, so the cells see
    different patterns)."""
    h, w = tile
    rng = np.random.default_rng(18)
    salt = (rng.integers(0, 2, size=(h, w, 3)) * 255).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    blocks = ((((yy + 7) // 40 + xx // 40) % 2) * 255).astype(np.uint8)
    return {"salt": salt, "blocks": np.repeat(blocks[:, :, None], 3, axis=2)}


@pytest.fixture(scope="module")
def images(pkgs) -> dict[str, np.ndarray]:
    package, _ = pkgs
    rgb = resize(load_image(PHOTO), package.tile)
    assert rgb.shape == (*package.tile, 3)
    return {"photo": rgb, **_boundary_images(package.tile)}


def test_map_and_its_36_crops_on_the_board_equal_the_simulator(pkgs, images) -> None:
    package, board = pkgs
    sim = Classifier.load(package, backend="sim")
    bare = SimEngine(package)
    window, s = sim.geometry.window, sim.geometry.stride
    ny, nx = sim.geometry.tile_cells
    assert (ny, nx) == (6, 6) and window == 224 and s == 32
    with ez.EmulatedZynq(ez.sim_accelerator(package)) as dev:
        hw = Classifier.load(board, backend="pynq")
        assert type(hw.engine).__name__ == "PynqEngine"
        assert hw.geometry == sim.geometry
        for name, rgb in images.items():
            want = sim.score_map(rgb)
            got = hw.score_map(rgb)
            assert got.shape == (6, 6, len(sim.classes)) and got.dtype == np.int64, name
            assert got.tobytes() == want.tobytes(), name
            # the cells differ: the crop equalities below pin each cell to its own position
            assert len({got[i, j].tobytes() for i in range(ny) for j in range(nx)}) > ny, name
            # the 36 crops: each at the top-left of a zero tile, through the same pynq engine
            tiles = np.zeros((ny * nx, *package.tile, 3), np.uint8)
            crops = np.stack(
                [
                    rgb[i * s : i * s + window, j * s : j * s + window]
                    for i in range(ny)
                    for j in range(nx)
                ]
            )
            tiles[:, :window, :window] = crops
            on_board = hw.engine.run(tiles)[:, 0, 0].reshape(ny, nx, -1)
            alone = bare.run(crops)
            assert alone.shape[1:3] == (1, 1), name
            np.testing.assert_array_equal(on_board, got, err_msg=name)
            np.testing.assert_array_equal(alone[:, 0, 0].reshape(ny, nx, -1), got, err_msg=name)
        # distinct maps: the three images are not one degenerate case
        maps = {name: sim.score_map(rgb).tobytes() for name, rgb in images.items()}
        assert len(set(maps.values())) == len(maps)
        assert dev.stats["tiles"] >= len(images) * (1 + ny * nx)


def test_classify_cli_on_the_board_gives_the_sim_top_k(pkgs, tmp_path: Path, capsys) -> None:
    from fcnseg.cli import main

    package, board = pkgs
    args = ["classify", str(PHOTO), "--top", "3"]
    sim_json, hw_json = tmp_path / "sim.json", tmp_path / "hw.json"
    assert main([*args, "--package", str(package.path), "--json", str(sim_json)]) == 0
    sim_out = capsys.readouterr().out
    with ez.EmulatedZynq(ez.sim_accelerator(package)) as dev:
        code = main(
            [*args, "--package", str(board.path), "--backend", "pynq", "--json", str(hw_json)]
        )
        assert dev.stats["tiles"] >= 1
    hw_out = capsys.readouterr().out
    assert code == 0, hw_out
    sim_rep, hw_rep = json.loads(sim_json.read_text()), json.loads(hw_json.read_text())
    assert hw_rep["backend"] == "pynq" and sim_rep["backend"] == "sim"
    (sim_img,), (hw_img,) = sim_rep["images"], hw_rep["images"]
    assert hw_img["status"] == "done" and hw_img["scales"][0]["cells"] == [6, 6]
    assert len(hw_img["top"]) == 3
    assert hw_img["top"] == sim_img["top"] and hw_img["probabilities"] == sim_img["probabilities"]
    # the printed ranks are the same lines (the header names the same photo)
    assert [ln for ln in hw_out.splitlines() if ln.startswith("  ")] == [
        ln for ln in sim_out.splitlines() if ln.startswith("  ")
    ]
    assert hw_out.count("  1. ") == 1


def test_stride_16_on_the_board_equals_the_simulator(pkgs, images) -> None:
    """``stride=16``: the four shifted passes (the image cropped by 16 px along y, x and both)
    run through the pynq engine and interleaved equal the simulator's stride-16 map byte for
    byte, at the tile (11x11 cells, one tile a pass) and on a larger photo that each pass tiles
    (448x544: 2x2 or 2x3 tiles a pass, the shifted passes on uneven sizes)."""
    package, board = pkgs
    sim = Classifier.load(package, backend="sim")
    big = resize(load_image(PHOTO), (448, 544))
    cases = {**images, "photo-448x544": big}
    with ez.EmulatedZynq(ez.sim_accelerator(package)) as dev:
        hw = Classifier.load(board, backend="pynq")
        for name, rgb in cases.items():
            want = sim.score_map(rgb, stride=16)
            got = hw.score_map(rgb, stride=16)
            h, w = rgb.shape[:2]
            assert got.shape == ((h - 224) // 16 + 1, (w - 224) // 16 + 1, 6), name
            assert got.dtype == want.dtype == np.int64, name
            assert got.tobytes() == want.tobytes(), name
            # the unshifted pass is every other cell: the stride-32 map of the same image
            assert got[::2, ::2].tobytes() == hw.score_map(rgb).tobytes(), name
            # a shifted cell is not a copy of its neighbours (the passes are not all one)
            assert not np.array_equal(got[1, 1], got[0, 0]), name
        assert dev.stats["tiles"] >= 4 * len(cases)
        classified = hw.classify(big, scales=[(448, 544)], stride=16)
        reference = sim.classify(big, scales=[(448, 544)], stride=16)
        assert classified.logits.tobytes() == reference.logits.tobytes()
