"""``fcnseg classify`` end to end on the hand-made classifier package with the sim backend:
printed top-k, the JSON and CSV reports (equal to the API's results), one line per bad input
(exit 1, the rest go on), refused packages and options (exit 2, before any image)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.cli import main
from fcnseg.host import Classifier
from tests.helpers.images import image
from tests.helpers.packages import CLS_WINDOW, classifier_package, tiny_package


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return classifier_package(tmp_path_factory.mktemp("pkg") / "toy-classifier", tile=24)


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(image(60, 80, seed=0)).save(folder / "a.png")
    Image.fromarray(image(33, 29, seed=1)).save(folder / "b.png")
    return folder


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["classify", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_prints_top_k_and_writes_reports_equal_to_the_api(
    package_dir: Path, inputs: Path, tmp_path: Path, capsys
) -> None:
    report, table = tmp_path / "r.json", tmp_path / "r.csv"
    args = [str(inputs), "--package", str(package_dir), "--top", "2", "--stride", "2"]
    args += ["--size", "40", "48", "--scale", "0.5", "--pool", "max"]
    code, out, err = _run([*args, "--json", str(report), "--csv", str(table)], capsys)
    assert code == 0, err
    clf = Classifier.load(package_dir)
    data = json.loads(report.read_text())
    assert data["stride"] == 2 and data["pool"] == "max" and data["window"] == CLS_WINDOW
    assert data["classes"] == ["a", "b", "c"]
    assert data["sizes"] == [[40, 48]] and data["scale_factors"] == [0.5]
    rows = list(csv.DictReader(table.open()))
    assert [(r["input"], r["rank"]) for r in rows] == [
        (str(inputs / n), k) for n in ("a.png", "b.png") for k in ("1", "2")
    ]
    for name, entry in zip(("a.png", "b.png"), data["images"], strict=True):
        with Image.open(inputs / name) as img:
            want = clf.classify(np.asarray(img), scales=[(40, 48), 0.5], pool="max", stride=2)
        assert entry["input"] == str(inputs / name) and entry["status"] == "done"
        assert [t["index"] for t in entry["top"]] == [c for c, _, _ in want.top(2)]
        assert [t["probability"] for t in entry["top"]] == [p for _, _, p in want.top(2)]
        assert entry["probabilities"] == dict(
            zip(want.classes, want.probabilities.tolist(), strict=True)
        )
        assert [s["size"] for s in entry["scales"]] == [list(s.size) for s in want.scales]
        assert [s["cells"] for s in entry["scales"]] == [
            list(s.scores.shape[:2]) for s in want.scales
        ]
        mine = [r for r in rows if r["input"] == str(inputs / name)]
        assert [float(r["probability"]) for r in mine] == [p for _, _, p in want.top(2)]
        cells = [s.scores.shape[:2] for s in want.scales]
        assert mine[0]["cells"] == ";".join(f"{a}x{b}" for a, b in cells)
        top = want.top(1)[0]
        assert f"{inputs / name}: " in out and f"  1. {top[1]}  {top[2]:.4f}" in out
    # a (60, 80) image at 40x48 and at 30x40, stride 2: (40 - 14) // 2 + 1 = 14 rows ...
    assert data["images"][0]["scales"] == [
        {"size": [40, 48], "cells": [14, 18], "stride": 2},
        {"size": [30, 40], "cells": [9, 14], "stride": 2},
    ]
    assert out.strip().endswith("2 image(s) classified, 0 failed")


def test_default_scale_is_the_tile_and_top_is_capped_at_the_classes(
    package_dir: Path, inputs: Path, tmp_path: Path, capsys
) -> None:
    report = tmp_path / "r.json"
    code, out, err = _run(
        [str(inputs / "a.png"), "--package", str(package_dir), "--json", str(report)], capsys
    )
    assert code == 0, err
    entry = json.loads(report.read_text())["images"][0]
    assert entry["scales"] == [{"size": [24, 24], "cells": [3, 3], "stride": 4}]
    assert len(entry["top"]) == 3  # 3 classes, fewer than the default 5
    assert f"{inputs / 'a.png'}: 3x3 cells at 24x24 (stride 4, mean)" in out


def test_bad_inputs_are_one_line_each_and_the_rest_go_on(
    package_dir: Path, inputs: Path, tmp_path: Path, capsys
) -> None:
    (inputs / "bad.png").write_bytes(b"not a png")
    Image.fromarray(image(CLS_WINDOW - 1, 40, seed=3)).save(inputs / "small.png")
    report, table = tmp_path / "r.json", tmp_path / "r.csv"
    args = [str(inputs), str(tmp_path / "missing.png"), "--package", str(package_dir)]
    code, out, err = _run(
        [*args, "--scale", "1", "--json", str(report), "--csv", str(table)], capsys
    )
    assert code == 1
    lines = err.strip().splitlines()
    assert sorted(lines) == sorted(
        [
            f"fcnseg: {tmp_path / 'missing.png'}: no such file or folder, and no file matches it",
            f"fcnseg: {inputs / 'bad.png'}: not an image Pillow can read",
            f"fcnseg: {inputs / 'small.png'}: image {CLS_WINDOW - 1}x40 is smaller than the "
            f"classifier's {CLS_WINDOW}x{CLS_WINDOW} window",
        ]
    )
    assert out.strip().endswith("2 image(s) classified, 3 failed")
    status = {e["input"]: e["status"] for e in json.loads(report.read_text())["images"]}
    assert status == {
        str(tmp_path / "missing.png"): "failed",
        str(inputs / "a.png"): "done",
        str(inputs / "b.png"): "done",
        str(inputs / "bad.png"): "failed",
        str(inputs / "small.png"): "failed",
    }
    failed = [r for r in csv.DictReader(table.open()) if r["status"] == "failed"]
    assert {r["reason"] for r in failed} >= {"not an image Pillow can read"}


def test_an_image_too_small_at_the_chosen_size(package_dir: Path, inputs: Path, capsys) -> None:
    code, out, err = _run(
        [str(inputs / "a.png"), "--package", str(package_dir), "--size", "13", "40"], capsys
    )
    assert code == 1
    assert err.strip() == (
        f"fcnseg: {inputs / 'a.png'}: image 60x80 at 13x40 is smaller than the classifier's "
        f"{CLS_WINDOW}x{CLS_WINDOW} window"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--top", "4"], "--top 4 exceeds the package's 3 classes"),
        (["--stride", "3"], "--stride 3 must be one of 4, 2, 1 for this package"),
        (["--backend", "fpga"], "--backend fpga is not one of sim, pynq"),
        (["--board", "zcu104"], "is built for pynq-z2, not zcu104"),
    ],
)
def test_refused_options_are_one_line_exit_2(
    package_dir: Path, inputs: Path, tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    report = tmp_path / "r.json"
    args = [str(inputs), "--package", str(package_dir), "--json", str(report), *extra]
    code, out, err = _run(args, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("fcnseg: error: ") and message in err
    assert not report.exists()  # refused before any image: no report


def test_packages_of_the_other_task_are_refused_both_ways(
    package_dir: Path, inputs: Path, tmp_path: Path, capsys
) -> None:
    seg = tiny_package(tmp_path / "seg")
    code, out, err = _run([str(inputs), "--package", str(seg)], capsys)
    assert code == 2 and err == (
        f"fcnseg: error: package {seg} is a segmentation package, not a classification one; "
        "use `fcnseg segment` with it, or give a classification package\n"
    )
    code = main(["segment", str(inputs), "--package", str(package_dir), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    refusal = "is a classification package, not a segmentation one; use `fcnseg classify`"
    assert code == 2 and refusal in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_a_report_that_cannot_be_written_is_one_line_exit_1(
    package_dir: Path, inputs: Path, tmp_path: Path, capsys
) -> None:
    (tmp_path / "a-file").write_text("")
    target = tmp_path / "a-file" / "r.json"  # its folder is a file
    code, out, err = _run(
        [str(inputs / "a.png"), "--package", str(package_dir), "--json", str(target)], capsys
    )
    assert code == 1
    assert err.startswith(f"fcnseg: {target}: cannot write the report (") and err.count("\n") == 1
    assert "1 image(s) classified, 0 failed" in out


def test_a_multi_frame_file_is_classified_by_its_first_frame_with_a_note(
    package_dir: Path, tmp_path: Path, capsys
) -> None:
    frames = [Image.fromarray(image(30, 30, seed=k)) for k in range(2)]
    path = tmp_path / "two.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    code, out, err = _run([str(path), "--package", str(package_dir)], capsys)
    assert code == 0
    assert err == f"fcnseg: note: {path}: frame 0 of 2 used (--frames all for every frame)\n"
    assert "1 image(s) classified, 0 failed" in out
    code, out, err = _run([str(path), "--package", str(package_dir), "--frames", "all"], capsys)
    assert code == 0 and err == ""
    assert f"{path} (frame 0): " in out and f"{path} (frame 1): " in out
    assert "2 image(s) classified, 0 failed" in out


def test_a_bug_is_one_line_and_a_traceback_under_debug(
    package_dir: Path, inputs: Path, capsys, monkeypatch
) -> None:
    def broken(self, image, **options):
        raise RuntimeError("boom")

    monkeypatch.setattr(Classifier, "classify", broken)
    code, out, err = _run([str(inputs / "a.png"), "--package", str(package_dir)], capsys)
    assert code == 1
    assert err == f"fcnseg: {inputs / 'a.png'}: internal error (RuntimeError: boom)\n"
    with pytest.raises(RuntimeError, match="boom"):
        main(["classify", str(inputs / "a.png"), "--package", str(package_dir), "--debug"])


def test_ctrl_c_writes_the_reports_of_the_finished_images(
    package_dir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """Interrupted on the second of three images: the JSON and CSV hold the first as done (the
    API's result) and the other two as not attempted, the JSON says interrupted, exit 130."""
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(3):
        Image.fromarray(image(40, 44, seed=n)).save(folder / f"{n}.png")
    real, calls = Classifier.classify, []

    def interrupt_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Classifier, "classify", interrupt_second)
    report, table = tmp_path / "r.json", tmp_path / "r.csv"
    report.write_text("old")  # replaced whole
    args = [str(folder), "--package", str(package_dir), "--top", "2"]
    code, out, err = _run([*args, "--json", str(report), "--csv", str(table)], capsys)
    assert code == 130
    assert err.strip().splitlines()[-1] == (
        "fcnseg: interrupted after 1 image(s) classified (the reports hold them)"
    )
    data = json.loads(report.read_text())
    assert data["interrupted"] is True
    assert [(e["input"], e["status"]) for e in data["images"]] == [
        (str(folder / "0.png"), "done"),
        (str(folder / "1.png"), "not attempted"),
        (str(folder / "2.png"), "not attempted"),
    ]
    assert data["images"][1]["reason"] == "interrupted"
    monkeypatch.setattr(Classifier, "classify", real)
    with Image.open(folder / "0.png") as img:
        want = Classifier.load(package_dir).classify(np.asarray(img))
    assert [t["index"] for t in data["images"][0]["top"]] == [c for c, _, _ in want.top(2)]
    assert data["images"][0]["probabilities"]["a"] == float(want.probabilities[0])
    rows = list(csv.DictReader(table.open()))
    assert [(r["input"], r["status"], r["rank"]) for r in rows] == [
        (str(folder / "0.png"), "done", "1"),
        (str(folder / "0.png"), "done", "2"),
        (str(folder / "1.png"), "not attempted", ""),
        (str(folder / "2.png"), "not attempted", ""),
    ]
    assert "0.png" in out and "1.png" not in out
    assert list(tmp_path.glob("*.tmp*")) == []  # no temporary file left beside the reports


def test_an_uninterrupted_report_says_not_interrupted(
    package_dir: Path, inputs: Path, tmp_path: Path, capsys
) -> None:
    report = tmp_path / "r.json"
    code, _, err = _run([str(inputs), "--package", str(package_dir), "--json", str(report)], capsys)
    assert code == 0, err
    assert json.loads(report.read_text())["interrupted"] is False
