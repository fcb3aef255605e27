"""``fcnseg segment`` end to end on a real (hand-made, tiny) package with the sim backend."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.cli import main
from fcnseg.host import segmenter as segmenter_module
from fcnseg.host.cli import collect_inputs
from fcnseg.host.segmenter import Segmenter
from tests.helpers.images import image
from tests.helpers.packages import tiny_package


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_package(tmp_path_factory.mktemp("pkg") / "tiny-pynq-z2")


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(image(30, 41, seed=0)).save(folder / "a.jpg", quality=95)
    Image.fromarray(image(17, 9, seed=1)).convert("L").save(folder / "sub" / "b.png")
    Image.fromarray(image(20, 20, seed=2)).save(folder / "c.png")
    (folder / "notes.txt").write_text("not an image, not picked up from folders")
    return folder


def test_folder_file_and_glob(package_dir: Path, inputs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(
        ["segment", str(inputs), "--package", str(package_dir), "-o", str(out), "--overlay"]
        + ["--scores"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "segmented 3 image(s)" in captured.out and "failed 0" in captured.out
    for stem in ("a", "sub/b", "c"):
        assert (out / f"{stem}.png").is_file()
        assert (out / f"{stem}_overlay.jpg").is_file()
        assert (out / f"{stem}_scores.npz").is_file()
    seg = Segmenter.load(package_dir)
    with Image.open(inputs / "a.jpg") as img:
        expect = seg(img)
    with Image.open(out / "a.png") as mask:
        assert mask.mode == "P" and mask.size == (41, 30)
        np.testing.assert_array_equal(np.asarray(mask), expect)
    with np.load(out / "a_scores.npz", allow_pickle=False) as npz:
        assert npz["scores"].dtype == np.int32 and npz["scores"].shape[2] == 3
    # a glob and a plain file
    out2 = tmp_path / "out2"
    code = main(
        ["segment", str(inputs / "*.png"), str(inputs / "a.jpg")]
        + ["--package", str(package_dir), "-o", str(out2)]
    )
    assert code == 0
    assert sorted(p.name for p in out2.iterdir()) == ["a.png", "c.png", "classes.json"]


def test_bad_inputs_fail_one_line_each(
    package_dir: Path, inputs: Path, tmp_path: Path, capsys
) -> None:
    (inputs / "broken.png").write_bytes(b"\x89PNG broken")
    code = main(
        ["segment", str(inputs / "broken.png"), str(inputs / "a.jpg"), str(tmp_path / "no*.jpg")]
        + ["--package", str(package_dir), "-o", str(tmp_path / "out")]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if line.startswith("fcnseg:")]
    assert any("broken.png" in line and "not an image" in line for line in lines)
    assert any("no*.jpg" in line for line in lines)
    assert "segmented 1 image(s)" in captured.out and "failed 2" in captured.out
    assert (tmp_path / "out" / "a.png").is_file()


def test_existing_outputs_are_kept_unless_overwrite(
    package_dir: Path, inputs: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    args = ["segment", str(inputs / "c.png"), "--package", str(package_dir), "-o", str(out)]
    assert main(args) == 0
    (out / "c.png").write_bytes(b"sentinel")
    assert main(args) == 0
    assert "skipped 1" in capsys.readouterr().out
    assert (out / "c.png").read_bytes() == b"sentinel"
    assert main([*args, "--overwrite"]) == 0
    with Image.open(out / "c.png") as mask:
        assert mask.mode == "P"


def test_shift_stitch_and_overlap_options(package_dir: Path, inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = ["segment", str(inputs / "a.jpg"), "--package", str(package_dir), "-o", str(out)]
    assert main([*base, "--shift-stitch", "2", "--overlap", "0", "--scores"]) == 0
    with np.load(out / "a_scores.npz", allow_pickle=False) as npz:
        # the 30x41 image at stride 1 (of the 30x42 canvas: its last column is padding only)
        assert npz["scores"].shape[:2] == (30, 41) and npz["stride"] == 1
    assert main([*base, "--shift-stitch", "3"]) == 2  # click rejects it


def test_missing_default_package_is_one_line(
    monkeypatch: pytest.MonkeyPatch, inputs: Path, tmp_path: Path, capsys
) -> None:
    monkeypatch.setattr(segmenter_module, "DEFAULT_PACKAGE", tmp_path / "fcn8s-pynq-z2")
    code = main(["segment", str(inputs / "a.jpg"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("fcnseg: error: the default package fcn8s-pynq-z2 is missing")
    assert "Traceback" not in err


def test_unknown_backend(package_dir: Path, inputs: Path, tmp_path: Path, capsys) -> None:
    args = ["segment", str(inputs), "--package", str(package_dir), "--backend", "gpu"]
    assert main([*args, "-o", str(tmp_path / "o")]) == 2
    assert "error: --backend gpu is not one of sim, pynq" in capsys.readouterr().err


def test_output_name_collisions(tmp_path: Path) -> None:
    """Same-stem inputs from two folders: the first keeps the stem, the next its file name,
    the next that name with -2; the same file twice is one job."""
    for folder in ("x", "y", "z"):
        (tmp_path / folder).mkdir()
        Image.fromarray(image(8, 8)).save(tmp_path / folder / "same.png")
    given = ("x/same.png", "y/*.png", "z/same.png", "x/same.png")
    jobs, errors = collect_inputs(tuple(str(tmp_path / g) for g in given))
    assert errors == []
    assert [(j.source.parent.name, str(j.stem)) for j in jobs] == [
        ("x", "same"),
        ("y", "same.png"),
        ("z", "same.png-2"),
    ]
    assert jobs[1].renamed_for == tmp_path / "x" / "same.png"


def test_output_folder_inside_input_folder_is_not_read(
    package_dir: Path, inputs: Path, capsys
) -> None:
    args = ["segment", str(inputs), "--package", str(package_dir), "-o", str(inputs / "out")]
    assert main(args) == 0
    assert main([*args, "--overwrite"]) == 0
    assert "segmented 3 image(s)" in capsys.readouterr().out.splitlines()[-1]


def test_pillow_warnings_are_not_printed(package_dir: Path, tmp_path: Path) -> None:
    """A damaged TIFF makes Pillow warn ("Truncated File Read") before it fails: the user sees
    the one line about the file, not Python warnings (a real process: pytest records them)."""
    import io
    import os
    import subprocess
    import sys

    buffer = io.BytesIO()
    Image.fromarray(image(23, 31)).save(buffer, format="TIFF")
    damaged = tmp_path / "damaged.tif"
    damaged.write_bytes(buffer.getvalue()[:132])
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "fcnseg.cli", "segment", str(damaged), "--package", str(package_dir)]
        + ["-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        line for line in proc.stderr.strip().splitlines() if line.startswith("fcnseg: ")
    ]
    assert "Warning" not in proc.stderr and str(damaged) in proc.stderr


def test_segment_workers_default_is_the_pipelines():
    from fcnseg.host.cli import segment
    from fcnseg.host.pipeline import FINISH_WORKERS, Pipeline

    workers = next(p for p in segment.params if p.name == "workers")
    assert workers.default == FINISH_WORKERS == 2
    assert inspect.signature(Pipeline.__init__).parameters["finish_workers"].default == 2
