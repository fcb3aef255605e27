"""Issue 12 B5: ``fcnseg segment``'s outputs carry their meaning, checked as a user runs it.

Each test runs the command line (``fcnseg.cli.main``) on the hand-made tiny package (classes
``a``, ``b``, ``c``; stride 2) and reads the outputs back the way a user's script would.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.cli import main
from fcnseg.host import batch as batch_module
from fcnseg.host.images import TEXT_KEY, ClassTable, legend_strip, read_mask_classes
from fcnseg.host.segmenter import Segmenter
from fcnseg.host.upsample import upsample_argmax
from tests.helpers.images import image
from tests.helpers.packages import tiny_package

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_package(tmp_path_factory.mktemp("pkg") / "tiny-pynq-z2")


@pytest.fixture(scope="module")
def seg(package_dir: Path) -> Segmenter:
    return Segmenter.load(package_dir)


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(image(30, 41, seed=0)).save(folder / "a.jpg", quality=95)
    Image.fromarray(image(17, 9, seed=1)).convert("L").save(folder / "sub" / "b.png")
    return folder


def write_ppm(path: Path, rgb: np.ndarray) -> None:
    """A binary PPM: the strip path segments it (row by row) whatever its size."""
    h, w, _ = rgb.shape
    path.write_bytes(f"P6\n{w} {h}\n255\n".encode() + rgb.tobytes())


def segment(*args: object) -> int:
    return main(["segment", *map(str, args)])


def mask_of(path: Path) -> tuple[np.ndarray, dict[str, str], np.ndarray]:
    """(labels, text chunks, palette) of a mask PNG."""
    with Image.open(path) as mask:
        assert mask.mode == "P"
        palette = np.frombuffer(bytes(mask.getpalette()), np.uint8).reshape(-1, 3)
        return np.asarray(mask), dict(mask.text), palette


def test_classes_json_beside_the_masks(package_dir: Path, inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert segment(inputs, "--package", package_dir, "-o", out) == 0
    for folder in (out, out / "sub"):  # every folder that holds masks has one
        table = json.loads((folder / "classes.json").read_text())
        assert table["format"] == "fcnseg-classes/1"
        assert [c["name"] for c in table["classes"]] == NAMES
        assert [c["index"] for c in table["classes"]] == [0, 1, 2]
        assert table["package"] == str(package_dir)
    _, _, palette = mask_of(out / "a.png")
    assert [c["rgb"] for c in table["classes"]] == palette[:3].tolist()  # the masks' colours


def test_class_names_in_the_mask_text_chunk(
    package_dir: Path, inputs: Path, tmp_path: Path, seg: Segmenter
) -> None:
    """Whole images (Pillow's encoder) and strips (the row writer) both carry the names."""
    rgb = image(40, 50, seed=3)
    write_ppm(inputs / "big.ppm", rgb)
    out = tmp_path / "out"
    assert segment(inputs / "a.jpg", inputs / "big.ppm", "--package", package_dir, "-o", out) == 0
    for name in ("a.png", "big.png"):
        labels, text, _ = mask_of(out / name)
        assert json.loads(text[TEXT_KEY]) == NAMES
        assert read_mask_classes(text) == NAMES
    np.testing.assert_array_equal(mask_of(out / "big.png")[0], seg(rgb))


def test_legend_on_overlays(package_dir: Path, inputs: Path, tmp_path: Path, seg) -> None:
    out, plain = tmp_path / "out", tmp_path / "plain"
    assert segment(inputs / "a.jpg", "--package", package_dir, "-o", plain, "--overlay") == 0
    assert segment(inputs / "a.jpg", "--package", package_dir, "-o", out, "--legend") == 0
    strip = legend_strip(41, ClassTable.of(3, NAMES, seg.palette))
    with Image.open(plain / "a_overlay.jpg") as img:
        assert img.size == (41, 30)  # without --legend: the image's size
    with Image.open(out / "a_overlay.jpg") as img:  # --legend implies --overlay
        assert img.size == (41, 30 + strip.shape[0])
        drawn = np.asarray(img.convert("RGB"))[30:].astype(int)
    assert np.abs(drawn - strip).mean() < 8  # the strip, through JPEG


def test_legend_strip_names_every_colour() -> None:
    colours = np.array([[0, 0, 0], [200, 10, 10], [10, 200, 10], [10, 10, 200]], np.uint8)
    table = ClassTable.of(4, ["background", "cat", "dog", "a long class name"], colours)
    strip = legend_strip(120, table, skip=(0,))
    assert strip.dtype == np.uint8 and strip.shape[1:] == (120, 3)
    found = {tuple(c) for c in strip.reshape(-1, 3).tolist()}
    assert {(200, 10, 10), (10, 200, 10), (10, 10, 200)} <= found  # each swatch, exact
    assert strip.shape[0] > 2 * 12  # three entries do not fit one line of 120 px: wrapped
    assert (strip == 255).all(axis=2).mean() > 0.5  # mostly paper


@pytest.mark.parametrize("how", ["whole", "shift-stitch", "strips"])
def test_scores_are_documented_and_cropped(
    package_dir: Path, inputs: Path, tmp_path: Path, how: str
) -> None:
    """NAME_scores.npz holds what a user needs: upsampling its scores with its own scale, bias,
    stride and footprint gives the mask, and it is cropped to the image."""
    rgb = image(30, 41, seed=0)
    source = inputs / "x.ppm"
    write_ppm(source, rgb)
    extra = {"whole": ["--overlay"], "shift-stitch": ["--shift-stitch", "2"], "strips": []}[how]
    out = tmp_path / "out"
    assert segment(source, "--package", package_dir, "-o", out, "--scores", *extra) == 0
    with np.load(out / "x_scores.npz", allow_pickle=False) as npz:
        got = {k: npz[k] for k in npz.files}
    assert set(got) == {
        "scores",
        "scale",
        "bias",
        "classes",
        "stride",
        "field",
        "image_size",
        "meaning",
    }
    assert got["scores"].dtype == np.int32 and got["classes"].tolist() == NAMES
    assert "logits = scores * scale + bias" in str(got["meaning"])
    assert got["image_size"].tolist() == [30, 41]
    stride, field = int(got["stride"]), int(got["field"])
    assert (stride, field) == ((1, 2) if how == "shift-stitch" else (2, 2))
    # cropped: 30x41 px at stride 2 reads 15x21 cells (the canvas has 15x22, one of padding)
    assert got["scores"].shape[:2] == ((30, 41) if stride == 1 else (15, 21))
    labels = upsample_argmax(got["scores"], got["scale"], got["bias"], (30, 41), stride, field)
    np.testing.assert_array_equal(labels, mask_of(out / "x.png")[0])


def test_json_summary(package_dir: Path, inputs: Path, tmp_path: Path, capsys) -> None:
    (inputs / "broken.png").write_bytes(b"\x89PNG broken")
    out, report = tmp_path / "out", tmp_path / "report" / "run.json"
    args = [inputs, tmp_path / "nothing*.jpg", "--package", package_dir, "-o", out]
    assert segment(*args, "--json", report) == 1
    summary = json.loads(report.read_text())
    assert summary["format"] == "fcnseg-segment-summary/2" and summary["interrupted"] is False
    assert summary["classes"] == NAMES and summary["backend"] == "sim"
    assert summary["stopped"] is None
    assert summary["counts"] == {
        "done": 2,
        "skipped": 0,
        "another-run": 0,
        "failed": 2,
        "not-attempted": 0,
    }
    records = {Path(r["input"]).name: r for r in summary["images"]}
    assert set(records) == {"nothing*.jpg", "a.jpg", "b.png", "broken.png"}
    for name, size in (("a.jpg", [30, 41]), ("b.png", [17, 9])):
        record = records[name]
        assert record["status"] == "done" and record["message"] is None
        assert record["size"] == size and record["seconds"] > 0
        labels = mask_of(Path(record["outputs"]["mask"]))[0]
        counts = np.bincount(labels.ravel(), minlength=3).tolist()
        assert list(record["pixels_per_class"].values()) == counts
        assert list(record["pixels_per_class"]) == NAMES
    broken = records["broken.png"]
    assert broken["status"] == "failed" and "not an image" in broken["message"]
    assert "\n" not in broken["message"] and broken["pixels_per_class"] is None
    nothing = records["nothing*.jpg"]  # never became a job: still recorded, with its reason
    assert nothing["status"] == "failed" and "no such file" in nothing["message"]
    # the closing summary lists each failed input with its reason, above the counts
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("segmented 2 image(s)") and "failed 2" in lines[-1]
    assert sorted(lines[:-1]) == sorted(
        f"failed: {records[name]['message']}" for name in ("broken.png", "nothing*.jpg")
    )
    assert segment(*args, "--json", report) == 1  # again: the finished ones are skipped
    statuses = {
        Path(r["input"]).name: r["status"] for r in json.loads(report.read_text())["images"]
    }
    assert statuses["a.jpg"] == statuses["b.png"] == "skipped"


def test_json_summary_of_an_interrupted_batch(
    package_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        write_ppm(folder / f"p{i}.ppm", image(20, 24, seed=i))
    original, calls = batch_module.Batch.strips, []

    def ctrl_c_on_the_second(self, job, record) -> None:
        calls.append(job)
        if len(calls) == 2:
            raise KeyboardInterrupt
        original(self, job, record)

    monkeypatch.setattr(batch_module.Batch, "strips", ctrl_c_on_the_second)
    report = tmp_path / "run.json"
    args = [folder, "--package", package_dir, "-o", tmp_path / "out", "--json", report]
    assert segment(*args) == 130
    assert "interrupted after 1 image(s)" in capsys.readouterr().err
    summary = json.loads(report.read_text())
    assert summary["interrupted"] is True
    assert [r["status"] for r in summary["images"]] == ["done", "not-attempted", "not-attempted"]
    assert summary["counts"]["done"] == 1 and summary["counts"]["not-attempted"] == 2
    assert {r["message"] for r in summary["images"][1:]} == {"not attempted: interrupted"}


def test_same_stem_inputs_get_distinct_outputs(
    package_dir: Path, tmp_path: Path, seg: Segmenter, capsys
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    png, bmp = image(20, 30, seed=1), image(22, 26, seed=2)
    Image.fromarray(png).save(folder / "a.png")
    Image.fromarray(bmp).save(folder / "a.bmp")
    out = tmp_path / "out"
    args = [folder, "--package", package_dir, "-o", out, "--overlay", "--scores"]
    assert segment(*args) == 0
    assert "a.bmp: outputs named a.bmp.*" in capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["a.png", "a_overlay.jpg", "a_scores.npz", "classes.json"]
        + ["a.bmp.png", "a.bmp_overlay.jpg", "a.bmp_scores.npz"]
    )
    np.testing.assert_array_equal(mask_of(out / "a.png")[0], seg(png))  # a.png keeps "a"
    np.testing.assert_array_equal(mask_of(out / "a.bmp.png")[0], seg(bmp))
    assert segment(*args) == 0  # the same names again: both are skipped as finished
    assert "skipped 2" in capsys.readouterr().out


def test_make_demo_overlays_carry_a_legend(tmp_path: Path) -> None:
    """The Makefile's demo command, as written there, on the shipped package and samples."""
    recipe = (ROOT / "Makefile").read_text().split("\ndemo:")[1].splitlines()[1]
    words = shlex.split(recipe.strip())
    assert words[0].endswith("/fcnseg") and words[1] == "segment" and "--legend" in words
    out_at = words.index("-o") + 1
    words[out_at] = str(tmp_path / "out")
    samples = ROOT / words[2]
    assert main([*words[1:2], str(samples), *words[3:]]) == 0
    for overlay in sorted((tmp_path / "out").glob("*_overlay.jpg")):
        stem = overlay.name.removesuffix("_overlay.jpg")
        source = next(p for p in samples.iterdir() if p.stem == stem)
        with Image.open(overlay) as drawn, Image.open(source) as original:
            assert drawn.width == original.width and drawn.height > original.height


def test_outputs_with_several_finish_workers(
    package_dir: Path, tmp_path: Path, seg: Segmenter
) -> None:
    """--workers 3: records, masks and scores written from three threads stay per image."""
    folder = tmp_path / "in"
    folder.mkdir()
    images = {f"i{k}": image(20 + 3 * k, 30 - k, seed=k) for k in range(8)}
    for name, rgb in images.items():
        Image.fromarray(rgb).save(folder / f"{name}.png")
    out, report = tmp_path / "out", tmp_path / "run.json"
    args = [folder, "--package", package_dir, "-o", out, "--scores", "--json", report]
    assert segment(*args, "--workers", "3") == 0
    records = json.loads(report.read_text())["images"]
    assert [Path(r["input"]).stem for r in records] == sorted(images)  # input order
    for record in records:
        rgb = images[Path(record["input"]).stem]
        labels = mask_of(Path(record["outputs"]["mask"]))[0]
        np.testing.assert_array_equal(labels, seg(rgb))
        assert record["size"] == list(rgb.shape[:2])
        assert sum(record["pixels_per_class"].values()) == rgb.shape[0] * rgb.shape[1]
        with np.load(record["outputs"]["scores"], allow_pickle=False) as npz:
            assert npz["image_size"].tolist() == list(rgb.shape[:2])


def test_a_package_with_duplicate_class_names_is_one_line(
    tmp_path: Path, inputs: Path, capsys
) -> None:
    from fcnseg.host.package import write_package
    from tests.helpers.packages import CARD, IO, make_layers

    card = {**CARD, "classes": ["a", "b", "a"]}
    package = write_package(
        tmp_path / "dup-pynq-z2", model_card=card, io=IO, layers=make_layers(), board="pynq-z2"
    )
    assert segment(inputs / "a.jpg", "--package", package, "-o", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "a appear twice" in err


def test_unwritable_outputs_are_one_line(package_dir: Path, inputs: Path, tmp_path: Path, capsys):
    """An output folder (or --json file) under a regular file cannot be made: one line each."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    code = segment(inputs / "a.jpg", "--package", package_dir, "-o", blocker / "out")
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0] == f"fcnseg: error: {blocker / 'out'}: cannot be made ({blocker} is a file)"
    out = tmp_path / "out"
    code = segment(inputs / "a.jpg", "--package", package_dir, "-o", out, "--json", blocker / "j")
    captured = capsys.readouterr()
    assert code == 1 and (out / "a.png").is_file()  # the images are done, the summary is not
    assert f"fcnseg: {blocker / 'j'}: cannot write the summary (" in captured.err
    assert "Traceback" not in captured.err and "failed 0" in captured.out


def test_overlay_format_and_jpeg_quality(package_dir: Path, inputs: Path, tmp_path: Path) -> None:
    """--overlay-format png writes a lossless NAME_overlay.png equal to the blend; JPEG
    quality changes the file (lower quality, smaller); the masks are the same either way."""
    from fcnseg.host.images import load_image, overlay

    runs = {
        "png": ("--overlay-format", "png"),
        "q95": ("--overlay", "--jpeg-quality", "95"),
        "q20": ("--overlay", "--jpeg-quality", "20"),
    }
    for name, options in runs.items():
        assert segment(inputs / "a.jpg", "--package", package_dir, "-o", tmp_path / name,
                       "--overlay", *options) == 0  # fmt: skip
    png = tmp_path / "png" / "a_overlay.png"
    assert png.is_file() and not (tmp_path / "png" / "a_overlay.jpg").exists()
    labels, _, palette = mask_of(tmp_path / "png" / "a.png")
    with Image.open(png) as img:
        assert img.format == "PNG"
        drawn = np.asarray(img.convert("RGB"))
    expect = overlay(load_image(inputs / "a.jpg"), labels, palette[:3], 0.5)
    np.testing.assert_array_equal(drawn, expect)  # lossless
    q95, q20 = tmp_path / "q95" / "a_overlay.jpg", tmp_path / "q20" / "a_overlay.jpg"
    assert q20.stat().st_size < q95.stat().st_size
    for name in runs:
        np.testing.assert_array_equal(mask_of(tmp_path / name / "a.png")[0], labels)


def test_bad_overlay_options_are_one_line(package_dir: Path, inputs: Path, tmp_path, capsys):
    code = segment(inputs / "a.jpg", "--package", package_dir, "-o", tmp_path / "o",
                   "--overlay", "--jpeg-quality", "96")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "--jpeg-quality" in err
    code = segment(inputs / "a.jpg", "--package", package_dir, "-o", tmp_path / "o",
                   "--overlay-format", "gif")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "--overlay-format" in err
    assert not (tmp_path / "o").exists()


def test_png_overlays_that_would_overwrite_a_mask_are_refused(
    package_dir: Path, tmp_path: Path, capsys
) -> None:
    """a.jpg's PNG overlay is a_overlay.png, the mask of a_overlay.jpg: one line, nothing
    written; with JPEG overlays the same inputs are fine."""
    folder = tmp_path / "in"
    folder.mkdir()
    for stem, seed in (("a", 0), ("a_overlay", 1)):
        Image.fromarray(image(12, 14, seed=seed)).save(folder / f"{stem}.jpg")
    out = tmp_path / "out"
    code = segment(folder, "--package", package_dir, "-o", out, "--overlay-format", "png",
                   "--overlay")  # fmt: skip
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "a_overlay.png would be written for both" in lines[0]
    assert not out.exists() or not list(out.iterdir())
    assert segment(folder, "--package", package_dir, "-o", out, "--overlay") == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "a.png", "a_overlay.jpg", "a_overlay.png", "a_overlay_overlay.jpg", "classes.json"
    ]  # fmt: skip
