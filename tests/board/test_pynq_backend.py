"""The ``pynq`` backend, running the real pynq 4.0.0 + finn-plus-driver 1.6.1 code against the
emulated board (``fcnseg.testing.emulated_zynq``): byte-for-byte equal to the ``sim``
backend on real photos, bounded waits, flush/invalidate, batching, clocks, settings checks.

Packages: the checked-in tiny FCN-8s (tests/board/data/fcn8s-tiny, made by
tests/board/data/make_fixture.py) and, once it ships, the default package
host/packages/fcn8s-pynq-z2. Runs where pynq is installed (``.venv-board``).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pynq")

from fcnseg.errors import UserError  # noqa: E402
from fcnseg.host.backends.pynq import AcceleratorTimeout, open_engine  # noqa: E402
from fcnseg.host.images import load_image  # noqa: E402
from fcnseg.host.package import load_package  # noqa: E402
from fcnseg.host.segmenter import DEFAULT_PACKAGE, Segmenter  # noqa: E402
from fcnseg.host.sim.engine import SimEngine  # noqa: E402
from fcnseg.testing import emulated_zynq as ez  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
PHOTOS = sorted((ROOT / "samples").glob("*.jpg"))
PACKAGES = [DATA / "fcn8s-tiny"] + (
    [DEFAULT_PACKAGE] if (DEFAULT_PACKAGE / "accelerator.json").is_file() else []
)


@pytest.fixture(scope="module", params=PACKAGES, ids=lambda p: p.name)
def pkgs(request, tmp_path_factory):
    """(package, the same package with emulated bitfile/ + driver/settings.json)."""
    package = load_package(request.param)
    if package.file("driver/settings.json").is_file():
        pytest.skip("package has a real bitfile: the emulated board cannot run it")
    board = ez.emulated_package(package, tmp_path_factory.mktemp("emu") / package.path.name)
    return package, load_package(board)


@pytest.fixture(scope="module")
def photos():
    assert PHOTOS, "samples/*.jpg missing"
    return [load_image(p) for p in PHOTOS]


def rehash(folder: Path):
    """Re-record the sha256 of every file after a test edited one (a deliberate variant)."""
    from fcnseg.host.package import MANIFEST_KEY, manifest_digest, sha256_file

    meta_path = folder / "accelerator.json"
    meta = json.loads(meta_path.read_text())
    meta["files"] = {rel: sha256_file(folder / rel) for rel in meta["files"]}
    meta[MANIFEST_KEY] = manifest_digest(meta)
    meta_path.write_text(json.dumps(meta))
    return load_package(folder)


def tiles_of(package, photos, n):
    """``n`` tiles of the package's size cut from real photos (wrapping around)."""
    th, tw = package.tile
    photos = [img for img in photos if img.shape[0] >= th and img.shape[1] >= tw]
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        y = (37 * i) % max(1, img.shape[0] - th)
        x = (53 * i) % max(1, img.shape[1] - tw)
        out.append(img[y : y + th, x : x + tw])
    return np.stack(out)


@pytest.mark.parametrize("transport", ["finn", "builtin"])
def test_engine_equals_sim_on_photo_tiles_uneven_batches(pkgs, photos, transport):
    package, board = pkgs
    x = tiles_of(package, photos, 7)
    want = SimEngine(package).run(x)
    with ez.EmulatedZynq(ez.sim_accelerator(package)) as dev:
        engine = open_engine(board, transport=transport, max_batch=3)  # 7 = 3 + 3 + 1
        got = engine.run(x)
        assert dev.stats["jobs"] == 3 and dev.stats["tiles"] == 7
        assert engine.transport == transport
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


def test_segmenter_pynq_equals_sim_byte_for_byte(pkgs, photos):
    """The whole host path (tiling, stitch, upsample, argmax) on every sample photo."""
    package, board = pkgs
    sim = Segmenter.load(package, backend="sim")
    with ez.EmulatedZynq(ez.sim_accelerator(package)):
        hw = Segmenter.load(board, backend="pynq")
        assert type(hw.engine).__name__ == "PynqEngine"
        assert hw.geometry == sim.geometry
        for photo in photos:
            a, b = sim.segment(photo), hw.segment(photo)
            np.testing.assert_array_equal(b.scores, a.scores)
            assert b.labels.tobytes() == a.labels.tobytes()


def test_timeout_is_one_clear_line_not_a_hang(pkgs, photos):
    package, board = pkgs
    x = tiles_of(package, photos, 2)
    with ez.EmulatedZynq(ez.sim_accelerator(package)) as dev:
        dev.stall = True
        engine = open_engine(board, timeout_s=0.3)
        start = time.monotonic()
        with pytest.raises(AcceleratorTimeout) as info:
            engine.run(x)
        assert time.monotonic() - start < 3
        message = str(info.value)
        assert "\n" not in message and "did not finish 2 tile(s) within 0.3 s" in message
        assert isinstance(info.value, UserError)  # the CLI prints it as one line
        with pytest.raises(AcceleratorTimeout, match="unusable"):
            engine.run(x)  # refuses instead of hanging on a busy DMA


@pytest.mark.parametrize("skip", ["flush", "invalidate"])
def test_missing_cache_maintenance_is_caught(pkgs, photos, monkeypatch, skip):
    """The emulated DDR is not host memory: without flush the fabric reads stale input,
    without invalidate the host reads stale output."""
    from pynq.buffer import PynqBuffer

    package, board = pkgs
    x = tiles_of(package, photos, 3)
    want = SimEngine(package).run(x)
    with ez.EmulatedZynq(ez.sim_accelerator(package)):
        engine = open_engine(board, transport="builtin")
        np.testing.assert_array_equal(engine.run(x), want)
        monkeypatch.setattr(PynqBuffer, skip, lambda self: None)
        stale = engine.run(x[::-1].copy())
    assert not np.array_equal(stale, want[::-1])


def test_batch_sized_by_contiguous_memory_limit(pkgs):
    """Every call in flight has its own buffer set: ``calls`` sets of ``batch`` tiles fit the
    contiguous-memory limit."""
    package, board = pkgs
    inp, out = ez.ports_of(package)
    per_tile = inp.nbytes + out.nbytes
    with ez.EmulatedZynq(ez.sim_accelerator(package)):
        assert open_engine(board, buffer_limit=3 * per_tile + 1, max_batch=64, calls=1).batch == 3
        engine = open_engine(board, buffer_limit=6 * per_tile + 1, max_batch=64, calls=2)
        assert (engine.batch, engine.calls, engine.in_flight) == (3, 2, 6)
        assert open_engine(board, buffer_limit=100 * per_tile, max_batch=5).batch == 5
        with pytest.raises(UserError, match="buffer limit"):
            open_engine(board, buffer_limit=per_tile - 1, calls=1)
        with pytest.raises(UserError, match="lower calls"):
            open_engine(board, buffer_limit=2 * per_tile - 1, calls=2)
        with pytest.raises(UserError, match="calls"):
            open_engine(board, calls=0)
    with ez.EmulatedZynq(ez.sim_accelerator(package), ddr_bytes=per_tile // 2):
        with pytest.raises(RuntimeError, match="cannot allocate"):
            open_engine(board, transport="builtin")


def test_pl_clock_from_package(pkgs, tmp_path):
    """clk_wiz_0 in the .hwh: PS clock 0 feeds it 100 MHz, the fabric runs at its output;
    without it PS clock 0 is set to the settings' fclk_mhz."""
    from pynq.ps import Clocks

    package, board = pkgs
    copy = tmp_path / "pkg"
    shutil.copytree(board.path, copy)
    hwh = next((copy / "bitfile").glob("*.hwh"))
    hwh.write_text(hwh.read_text().replace('"100.000"', '"125.000"'))
    with ez.EmulatedZynq(ez.sim_accelerator(package)):
        engine = open_engine(rehash(copy))
        assert engine.clock.source == "clk_wiz_0"
        assert engine.clock.fabric_mhz == 125.0
        assert engine.clock.ps_fclk0_mhz == pytest.approx(100.0, abs=0.01)
    text = hwh.read_text()
    start = text.index('    <MODULE FULLNAME="/clk_wiz_0"')
    hwh.write_text(text[:start] + text[text.index("</MODULE>", start) + len("</MODULE>\n") :])
    settings = copy / "driver" / "settings.json"
    data = json.loads(settings.read_text())
    data["driver_information"]["fclk_mhz"] = 125.0
    settings.write_text(json.dumps(data))
    variant = rehash(copy)
    with ez.EmulatedZynq(ez.sim_accelerator(package)):
        for transport in ("finn", "builtin"):
            engine = open_engine(variant, transport=transport)
            assert engine.clock.source == "fclk0"
            assert engine.clock.fabric_mhz == pytest.approx(125.0, abs=0.01)
            assert Clocks.fclk0_mhz == pytest.approx(125.0, abs=0.01)


def _edited(board, tmp_path, edit):
    copy = tmp_path / "pkg"
    shutil.copytree(board.path, copy)
    settings = copy / "driver" / "settings.json"
    data = json.loads(settings.read_text())
    edit(data["driver_information"])
    settings.write_text(json.dumps(data))
    return rehash(copy)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda d: d["io_shape_dict"].update(oshape_normal=[[1, 4, 4, 5]]), "oshape_normal"),
        (lambda d: d["io_shape_dict"].update(idt=["DataType['INT8']"]), "idt INT8"),
        (lambda d: d.update(platform="alveo"), "zynq-iodma"),
    ],
)
def test_settings_must_describe_the_package(pkgs, tmp_path, edit, match):
    package, board = pkgs
    with pytest.raises(UserError, match=match):
        open_engine(_edited(board, tmp_path, edit))


def test_package_without_bitfile_says_what_to_do(pkgs):
    package, _ = pkgs
    with pytest.raises(UserError, match=r"without Vivado.*simulator \(backend='sim'\)$"):
        open_engine(package)


def test_only_the_tile_size(pkgs):
    package, board = pkgs
    th, tw = package.tile
    with ez.EmulatedZynq(ez.sim_accelerator(package)):
        engine = open_engine(board)
        with pytest.raises(UserError, match=f"runs {th}x{tw} uint8"):
            engine.run(np.zeros((1, th + 32, tw, 3), np.uint8))
        assert engine.run(np.zeros((0, th, tw, 3), np.uint8)).shape[0] == 0


def test_engine_timing_phases(pkgs, photos):
    package, board = pkgs
    with ez.EmulatedZynq(ez.sim_accelerator(package)):
        engine = open_engine(board, max_batch=2)
        engine.run(tiles_of(package, photos, 5))
    assert engine.timing["calls"] == 3 and engine.timing["tiles"] == 5
    assert engine.timing["run_and_wait"] > 0


def test_geometry_matches_sim(pkgs):
    package, board = pkgs
    with ez.EmulatedZynq(ez.sim_accelerator(package)):
        engine = open_engine(board)
    assert board.geometry == package.geometry
    assert engine.net_stride == SimEngine(package).net_stride == board.geometry.net_stride


def test_cli_segment_pynq_writes_the_same_masks_as_sim(pkgs, tmp_path):
    """``fcnseg segment --backend pynq`` (in-process, emulated board) == ``--backend sim``."""
    from click.testing import CliRunner

    from fcnseg.host.cli import segment

    package, board = pkgs
    inputs = [str(p) for p in PHOTOS[:3]]
    runner = CliRunner()
    sim = runner.invoke(
        segment, [*inputs, "-o", str(tmp_path / "sim"), "--package", str(board.path)]
    )
    assert sim.exit_code == 0, sim.output
    with ez.EmulatedZynq(ez.sim_accelerator(package)) as dev:
        args = [
            *inputs,
            "-o",
            str(tmp_path / "hw"),
            "--package",
            str(board.path),
            "--backend",
            "pynq",
        ]
        hw = runner.invoke(segment, args)
        assert hw.exit_code == 0, hw.output
        assert dev.stats["tiles"] > 0
    for photo in PHOTOS[:3]:
        name = photo.with_suffix(".png").name
        assert (tmp_path / "hw" / name).read_bytes() == (tmp_path / "sim" / name).read_bytes()


@pytest.mark.parametrize("transport", ["finn", "builtin"])
def test_runtime_weights_in_settings_need_the_record(pkgs, tmp_path, transport):
    package, board = pkgs
    variant = _edited(board, tmp_path, lambda d: d.update(runtime_weights=True))
    with ez.EmulatedZynq(ez.sim_accelerator(package)):
        with pytest.raises(UserError, match="accelerator.json has no runtime_weights record"):
            open_engine(variant, transport=transport)
