"""The emulated board running the package's *generated* hardware: the real pynq 4.0.0 +
finn-plus-driver 1.6.1 code and our packing drive, through the IODMA registers, a fabric that
is every generated node of the package (HLS C++ in simulation, RTL in Verilator, chained by
``fcnseg.hw.verify.chain``), and the scores must equal the ``sim`` backend byte for byte.

The package is the checked-in tiny FCN-8s (tests/board/data/fcn8s-tiny, made by
tests/board/data/make_fixture.py); these tests need its ``hardware.tar.xz``. Nodes the
available finn-hlslib cannot build (``Pool_hls`` against the offline copy) are computed by the
simulator's layer and named; every other node runs as generated code. Runs where pynq is
installed (``.venv-board``: no finn there); needs g++ and Verilator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pynq")

from fcnseg.errors import UserError  # noqa: E402
from fcnseg.host.backends.pynq import open_engine  # noqa: E402
from fcnseg.host.images import load_image  # noqa: E402
from fcnseg.host.package import HARDWARE_ARCHIVE, load_package  # noqa: E402
from fcnseg.host.segmenter import Segmenter  # noqa: E402
from fcnseg.host.sim.engine import SimEngine  # noqa: E402
from fcnseg.testing import emulated_zynq as ez  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = Path(__file__).parent / "data" / "fcn8s-tiny"
#: the only kind the offline finn-hlslib cannot build (docs/hardware.md); any other unbuildable
#: node fails the test instead of being computed by the simulator
LIBRARY_GAPS = {"Pool_hls"}


@pytest.fixture(scope="module")
def package():
    package = load_package(TINY)
    assert package.hardware is not None, (
        f"{TINY.name} carries no {HARDWARE_ARCHIVE}: regenerate it with "
        "tests/board/data/make_fixture.py"
    )
    return package


@pytest.fixture(scope="module")
def accelerator(package, hw_build_cache):
    """Every node built (cached by content: a re-run only runs)."""
    acc = ez.generated_accelerator(package, hw_build_cache, bridge="simulator", jobs=2)
    kinds = {n.name: n.kind for n in acc.graph.nodes}
    assert {kinds[name] for name in acc.bridged} <= LIBRARY_GAPS, acc.bridged
    return acc


@pytest.fixture(scope="module")
def board(package, tmp_path_factory):
    """The same package with the emulator's bitfile/ and driver/settings.json."""
    return load_package(ez.emulated_package(package, tmp_path_factory.mktemp("emu") / "pkg"))


def _tiles(package, n: int) -> np.ndarray:
    """``n`` tiles of the package's size cut from the sample photos."""
    th, tw = package.tile
    photos = [load_image(p) for p in sorted((ROOT / "samples").glob("*.jpg"))]
    assert photos, "samples/*.jpg missing"
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        y, x = (41 * i) % (img.shape[0] - th), (67 * i) % (img.shape[1] - tw)
        out.append(img[y : y + th, x : x + tw])
    return np.stack(out)


def test_generated_hardware_through_the_iodma_equals_sim(package, accelerator, board):
    x = _tiles(package, 3)
    want = SimEngine(package).run(x)
    with ez.EmulatedZynq(accelerator) as dev:
        engine = open_engine(board, max_batch=2)  # 3 tiles = two DMA jobs
        got = engine.run(x)
        assert dev.stats["jobs"] == 2 and dev.stats["tiles"] == 3
    assert accelerator.stats["tiles"] >= 3
    assert got.dtype == np.int64 and got.tobytes() == want.tobytes()


def test_segmenter_on_the_generated_hardware_equals_sim(package, accelerator, board):
    """The whole host path (tiling, stitch, upsample, argmax) on a photo crop of a few tiles."""
    th, tw = package.tile
    photo = load_image(ROOT / "samples" / "astronaut.jpg")[: 2 * th, : 2 * tw]
    sim = Segmenter.load(package, backend="sim").segment(photo)
    with ez.EmulatedZynq(accelerator):
        hw = Segmenter.load(board, backend="pynq").segment(photo)
    assert hw.scores.tobytes() == sim.scores.tobytes()
    assert hw.labels.tobytes() == sim.labels.tobytes()


def test_unbuildable_nodes_without_a_bridge_are_one_clear_line(package, accelerator):
    """Without ``bridge=`` a node the library cannot build stops the accelerator before the
    board is used, naming it (never a silent stand-in)."""
    if not accelerator.bridged:
        pytest.skip("every node builds here (the pinned finn-hlslib)")
    with pytest.raises(
        UserError, match=r"generated node\(s\) cannot be built here \(Pool_hls_"
    ) as err:
        ez.generated_accelerator(package)
    assert "\n" not in str(err.value) and str(err.value).endswith(
        "pass bridge= to compute them with the simulator"
    )


def test_a_package_without_hardware_is_one_clear_line(tmp_path):
    from fcnseg.host.package import HW_GRAPH_NAME, write_package

    full = load_package(TINY)
    bare = write_package(  # the same package, without the optional files
        tmp_path / "bare",
        model_card=full.model_card,
        io=full.meta["io"],
        layers=list(full.layers),
        estimates=full.estimates,
        board=full.board,
        hw_graph=full.file(HW_GRAPH_NAME).read_bytes(),
    )
    with pytest.raises(UserError, match=r"no generated hardware \(hardware.tar.xz\)") as err:
        ez.generated_accelerator(load_package(bare))
    assert "\n" not in str(err.value)
