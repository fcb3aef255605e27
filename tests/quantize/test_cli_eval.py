"""`fcnseg eval` as a user types it, in both environments (numpy-only board env included).

- Without --checkpoint/--package it scores the shipped package, as `fcnseg segment` does.
- The default split is the labelled held-out split of the dataset: ``val`` for VOC and
  Cityscapes (they publish no ``test`` labels), ``test`` for the synthetic scenes.
- --shift-stitch and --overlap reach the host's Segmenter (package only; refused for checkpoints).
- On a board (no scikit-image, no torch) VOC and Cityscapes folders work; synthetic is one line.

The datasets are tiny folders written here in the datasets' exact layouts; the packages are small
hand-made ones with the datasets' class counts, so the whole host path runs for real.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fcnseg.cli import main
from fcnseg.host.segmenter import DEFAULT_PACKAGE, Segmenter
from fcnseg.quantize.data.cityscapes import CityscapesSegmentation
from fcnseg.quantize.data.voc import VOCSegmentation
from fcnseg.quantize.metrics import ConfusionMatrix, scores
from tests.helpers.datasets import classes_package, write_cityscapes, write_voc

METRICS = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")


def composed(package: Path | None, dataset, **options) -> dict:
    """The metrics computed by hand: Segmenter + ConfusionMatrix over the whole dataset."""
    segmenter = Segmenter.load(package, backend="sim", **options)
    matrix = ConfusionMatrix(len(dataset.classes))
    for index in range(len(dataset)):
        image, label = dataset[index]
        matrix.update(label, segmenter(image))
    return {**scores(matrix.matrix), "pixels": int(matrix.matrix.sum())}


def _eval(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / f"eval-{len(list(tmp_path.glob('eval-*')))}.json"
    assert main(["eval", *args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("voc") / "VOCdevkit" / "VOC2012"
    return write_voc(root, {"train": 2, "val": 3})


@pytest.fixture(scope="module")
def voc_package(tmp_path_factory) -> Path:
    return classes_package(tmp_path_factory.mktemp("pkg") / "voc21-pynq-z2", 21)


def test_voc_folder_is_scored_on_val_by_default(voc, voc_package, tmp_path, capsys):
    record = _eval(tmp_path, "--package", str(voc_package), "--data", f"voc:{voc}")
    assert f"on voc:{voc} [val], 3 images" in capsys.readouterr().out
    expected = composed(voc_package, VOCSegmentation(voc, "val"))
    assert record["split"] == "val" and record["images"] == 3
    assert record["pixels"] == expected["pixels"]
    for key in METRICS:
        assert record[key] == expected[key]


def test_cityscapes_folder_is_scored_on_val_by_default(tmp_path, capsys):
    root = write_cityscapes(tmp_path / "cityscapes", {"train": 1, "val": 2})
    package = classes_package(tmp_path / "city19-pynq-z2", 19, seed=3)
    record = _eval(tmp_path, "--package", str(package), "--data", f"cityscapes:{root}")
    assert "[val], 2 images" in capsys.readouterr().out
    expected = composed(package, CityscapesSegmentation(root, "val"))
    assert record["split"] == "val" and record["pixels"] == expected["pixels"]
    for key in METRICS:
        assert record[key] == expected[key]


def test_a_split_without_labels_is_one_line(voc, voc_package, capsys):
    assert main(["eval", "--package", str(voc_package), "--data", f"voc:{voc}", "--split", "test"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "split 'test' not found" in err and "'val'" in err


def test_tiling_options_reach_the_segmenter(voc, voc_package, tmp_path, capsys):
    args = ["--package", str(voc_package), "--data", f"voc:{voc}"]
    record = _eval(tmp_path, *args, "--shift-stitch", "2", "--overlap", "0")
    assert "--shift-stitch 2, --overlap 0" in capsys.readouterr().out
    assert record["shift_stitch"] == 2 and record["overlap"] == 0
    dataset = VOCSegmentation(voc, "val")
    expected = composed(voc_package, dataset, shift_stitch=2, overlap=0)
    for key in METRICS:
        assert record[key] == expected[key]
    # and the options change what is measured: a finer score map gives other labels here
    plain = composed(voc_package, dataset)
    assert any(plain[key] != expected[key] for key in METRICS)


def test_bad_tiling_options_are_spelled_as_flags(voc, voc_package, capsys):
    args = ["eval", "--package", str(voc_package), "--data", f"voc:{voc}"]
    assert main([*args, "--shift-stitch", "4"]) == 2  # the toy's output stride is 2
    err = capsys.readouterr().err
    assert (
        err.startswith("fcnseg: error: --shift-stitch 4 must be one of")
        and "shift_stitch=" not in err
    )


def test_tiling_options_are_refused_for_checkpoints(tmp_path, capsys):
    ckpt = tmp_path / "model.safetensors"
    assert main(["eval", "--checkpoint", str(ckpt), "--overlap", "32"]) == 2
    assert "apply to --package" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(ckpt), "--package", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err


def test_synthetic_without_scikit_image_is_one_line(monkeypatch, capsys):
    if importlib.util.find_spec("skimage") is not None:  # the train env: hide it as a board would
        real = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a: None if name == "skimage" else real(name, *a),
        )
    assert main(["eval", "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "scikit-image" in err and "--data voc:PATH" in err


@pytest.mark.skipif(importlib.util.find_spec("skimage") is None, reason="synthetic needs skimage")
def test_without_a_model_it_scores_the_shipped_package(tmp_path, capsys):
    record = _eval(tmp_path, "--limit", "1")
    out = capsys.readouterr().out
    assert "(shipped default package, sim backend)" in out
    assert "on synthetic [test], 1 images" in out
    assert DEFAULT_PACKAGE.name in record["source"] and record["split"] == "test"
    explicit = _eval(tmp_path, "--package", str(DEFAULT_PACKAGE), "--limit", "1")
    for key in (*METRICS, "pixels"):
        assert record[key] == explicit[key]


def test_board_user_command_is_quiet(voc, voc_package):
    """The command typed on a board, in a subprocess: metrics on stdout, nothing on stderr."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    command = [sys.executable, "-m", "fcnseg.cli", "eval", "--package", str(voc_package)]
    done = subprocess.run(
        [*command, "--data", f"voc:{voc}"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "mean IU" in done.stdout and "[val]" in done.stdout
    assert done.stderr == ""  # no warnings, no progress lines off a terminal
