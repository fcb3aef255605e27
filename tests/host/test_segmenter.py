"""The Python API end to end: Segmenter on engines and packages, backends, lazy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.errors import UserError
from fcnseg.host import segmenter as segmenter_module
from fcnseg.host.backends import BACKENDS, get_backend
from fcnseg.host.segmenter import Segmenter
from fcnseg.host.tiling import make_canvas
from fcnseg.host.upsample import upsample_argmax_naive
from tests.helpers.images import image
from tests.helpers.packages import tiny_package
from tests.helpers.toy_engine import ToyEngine


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_package(tmp_path_factory.mktemp("pkg") / "tiny-pynq-z2")


def toy_segmenter(arch: str = "fcn8s", **options) -> tuple[Segmenter, ToyEngine]:
    toy = ToyEngine(arch)
    scale = np.array([0.5, 0.25, 0.125])
    bias = np.array([0.0, 1.0, -0.5])
    return Segmenter(toy, toy.geometry((128, 128)), scale, bias, **options), toy


@pytest.mark.parametrize("size", [(333, 517), (50, 40)])
def test_labels_equal_one_pass_reference(size: tuple[int, int]) -> None:
    """Tiles + stitch + fast upsample == one pass over the canvas + naive upsample."""
    seg, toy = toy_segmenter()
    img = image(*size, seed=3)
    labels = seg(img)
    assert labels.shape == size and labels.dtype == np.uint8
    scores = toy.run(make_canvas(img, seg.geometry)[None])[0]
    expect = upsample_argmax_naive(scores, seg.output_scale, seg.output_bias, size, 8)
    np.testing.assert_array_equal(labels, expect)
    assert np.unique(labels).size > 1 or size[0] < 100  # tiny images: one class


def test_shift_stitch_scores_shape_and_labels() -> None:
    seg, toy = toy_segmenter("fcn32s", shift_stitch=2)
    img = image(100, 150, seed=1)
    result = seg.segment(img)
    assert seg.stride == 16 and result.field == 32
    assert result.scores.shape == (2 * 128 // 32, 2 * 160 // 32, 3)
    np.testing.assert_array_equal(result.scores[::2, ::2], seg.scores(img)[::2, ::2])
    expect = upsample_argmax_naive(
        result.scores, seg.output_scale, seg.output_bias, (100, 150), 16, 32
    )
    np.testing.assert_array_equal(result.labels, expect)


def test_bad_options_are_user_errors() -> None:
    with pytest.raises(UserError, match=r"^shift_stitch=3 must be one of"):
        toy_segmenter(shift_stitch=3)
    with pytest.raises(UserError, match=r"^overlap=-32 must be >= 0"):
        toy_segmenter(overlap=-32)


class ArrayRows:
    """A row reader over an array that records which rows were asked for."""

    def __init__(self, rgb: np.ndarray) -> None:
        self.rgb = rgb
        self.height, self.width = rgb.shape[:2]
        self.reads: list[tuple[int, int]] = []

    def read(self, y0: int, y1: int) -> np.ndarray:
        self.reads.append((y0, y1))
        return self.rgb[y0:y1]

    def close(self) -> None:
        pass


@pytest.mark.parametrize("arch,size,batch", [("fcn8s", (333, 490), 3), ("fcn32s", (700, 64), 1)])
def test_stream_equals_segment(arch: str, size: tuple[int, int], batch: int) -> None:
    """Strips (one tile row at a time, labels in bands) == the whole image, labels and scores."""
    seg, _ = toy_segmenter(arch, batch=batch)
    img = image(*size, seed=4)
    whole = seg.segment(img)
    bands: list[tuple[int, np.ndarray]] = []
    blocks: list[np.ndarray] = []
    rows = ArrayRows(img)
    canvas = seg.stream(rows, lambda y0, labels: bands.append((y0, labels.copy())), blocks.append)
    assert canvas == seg.plan(*size).canvas
    assert [y0 for y0, _ in bands] == list(np.cumsum([0] + [len(b) for _, b in bands[:-1]]))
    np.testing.assert_array_equal(np.concatenate([b for _, b in bands]), whole.labels)
    np.testing.assert_array_equal(np.concatenate(blocks), whole.scores)
    assert len(bands) > 1 and all(y1 - y0 <= 128 for y0, y1 in rows.reads)


def test_errors_name_parameters_not_flags() -> None:
    """The library speaks its own terms; :meth:`ParameterError.spelled` gives the CLI's."""
    from fcnseg.errors import ParameterError

    with pytest.raises(ParameterError) as caught:
        toy_segmenter(shift_stitch=3)
    assert "--" not in str(caught.value) and caught.value.parameters == {"shift_stitch": 3}
    assert caught.value.spelled({"shift_stitch": "--shift-stitch"}).startswith("--shift-stitch 3 ")
    with pytest.raises(ParameterError, match=r"^batch=0 must be >= 1"):
        toy_segmenter(batch=0)
    seg, _ = toy_segmenter("fcn32s", shift_stitch=2)
    with pytest.raises(ParameterError, match=r"^shift_stitch=2 is not available .* strips"):
        seg.stream(ArrayRows(image(40, 50)), lambda y0, labels: None)
    with pytest.raises(ParameterError, match=r"^backend='gpu' is not one of sim, pynq"):
        get_backend("gpu")


def test_load_package_on_sim(package_dir: Path, tmp_path: Path) -> None:
    seg = Segmenter.load(package_dir, "sim")
    assert seg.geometry.tile == (8, 8) and seg.geometry.output_stride == 2
    assert seg.geometry.net_stride == 2 and seg.classes == ["a", "b", "c"]
    np.testing.assert_array_equal(seg.palette[:3], [[0, 0, 0], [1, 2, 3], [4, 5, 6]])
    img = image(21, 30, seed=2)
    labels = seg(img)
    assert labels.shape == (21, 30)
    scores = seg.engine.run(make_canvas(img, seg.geometry)[None])[0]
    expect = upsample_argmax_naive(scores, seg.output_scale, seg.output_bias, (21, 30), 2)
    np.testing.assert_array_equal(labels, expect)
    Image.fromarray(img).save(tmp_path / "x.png")
    np.testing.assert_array_equal(seg(tmp_path / "x.png"), labels)
    np.testing.assert_array_equal(seg(Image.fromarray(img)), labels)


@pytest.mark.parametrize("size", [(37, 61), (5, 3), (90, 17)])
def test_sim_tiles_stitch_exactly_on_a_package(package_dir: Path, size: tuple[int, int]) -> None:
    """The real simulator on a real (tiny) package, numpy only: stitched == one pass."""
    from fcnseg.host.tiling import plan_tiles, run_tiled

    seg = Segmenter.load(package_dir)
    canvas = make_canvas(image(*size, seed=size[0]), seg.geometry)
    plan = plan_tiles(seg.geometry, canvas.shape[:2])
    assert plan.exact and (len(plan.tiles) > 1 or max(size) <= 8)
    stitched = run_tiled(plan, seg.engine.run, canvas, batch=5)
    np.testing.assert_array_equal(stitched, seg.engine.run(canvas[None])[0])


def test_missing_default_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(segmenter_module, "DEFAULT_PACKAGE", tmp_path / "fcn8s-pynq-z2")
    with pytest.raises(UserError, match="default package fcn8s-pynq-z2 is missing.*make"):
        Segmenter.load()


def test_damaged_package_is_refused(package_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such package"):
        Segmenter.load(tmp_path / "nope")


def test_backend_registry() -> None:
    assert set(BACKENDS) >= {"sim", "pynq"}
    assert hasattr(get_backend("sim"), "open_engine")
    with pytest.raises(UserError, match="backend='gpu' is not one of"):
        get_backend("gpu")
    try:
        get_backend("pynq")
    except UserError as error:
        assert "pynq" in str(error)


def test_imports_are_lazy() -> None:
    code = (
        "import sys, fcnseg.host, fcnseg.host.backends\n"
        "assert 'fcnseg.host.segmenter' not in sys.modules\n"
        "assert 'fcnseg.host.sim.engine' not in sys.modules\n"
        "from fcnseg.host import Segmenter\n"
        "assert 'pynq' not in sys.modules and 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_backend_options_reach_the_engine(package_dir: Path) -> None:
    """``Segmenter.load(..., **options)`` -> ``open_engine(backend, pkg, **options)``; the tile
    batch is the caller's, else the engine's."""
    seg = Segmenter.load(package_dir, batch=3)
    assert seg.batch == 3 and seg.engine.batch == 3
    seg = Segmenter.load(package_dir)
    assert seg.batch == seg.engine.batch == 4
    with pytest.raises(TypeError):
        Segmenter.load(package_dir, no_such_option=1)


LIBRARY_MODULES = (
    "segmenter.py",
    "tiling.py",
    "shift_stitch.py",
    "pipeline.py",
    "upsample.py",
    "backends/__init__.py",
    "backends/sim.py",
    "backends/pynq.py",
    "sim/engine.py",
    "sim/layers.py",
)


@pytest.mark.parametrize("module", LIBRARY_MODULES)
def test_library_texts_name_no_cli_flags(module: str) -> None:
    """No text of the library's code (docstrings aside) spells a CLI flag (``--shift-stitch``):
    its errors name the parameter (``shift_stitch=``) and the CLI translates
    (:class:`fcnseg.errors.ParameterError`)."""
    import ast
    import re

    import fcnseg.host

    tree = ast.parse((Path(fcnseg.host.__file__).parent / module).read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    texts = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
    ]
    assert texts or module == "backends/sim.py"  # the adapter has no texts of its own
    flags = [text for text in texts if re.search(r"(?<![\w-])--[a-z]", text)]
    assert not flags, f"{module} spells CLI flags: {flags}"


def test_the_cli_spells_parameters_as_its_flags(
    package_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both sides of one error: ``board='zcu104'`` from the library, ``--board zcu104`` from
    ``fcnseg segment``."""
    from fcnseg.cli import main
    from fcnseg.errors import ParameterError

    with pytest.raises(ParameterError, match=r"pynq-z2, not zcu104 \(board='zcu104'\)"):
        Segmenter.load(package_dir, board="zcu104")
    Image.fromarray(image(20, 20)).save(tmp_path / "a.png")
    args = ["segment", str(tmp_path / "a.png"), "--package", str(package_dir)]
    assert main([*args, "-o", str(tmp_path / "o"), "--board", "zcu104"]) == 2
    err = capsys.readouterr().err
    assert "not zcu104 (--board zcu104)" in err and "board=" not in err
    assert not (tmp_path / "o").exists()
