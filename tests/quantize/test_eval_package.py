"""`fcnseg eval --package`: a deployment package scored through the host runtime (no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fcnseg.cli import main
from fcnseg.host.segmenter import Segmenter
from fcnseg.quantize.metrics import ConfusionMatrix, scores


class ThreeClassScenes:
    """A stand-in dataset with the toy package's three classes."""

    classes = ("a", "b", "c")
    palette = np.zeros((3, 3), dtype=np.uint8)

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(index)
        image = rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
        label = rng.integers(0, 3, size=(40, 56), dtype=np.uint8)
        label[:2] = 255
        return image, label


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory) -> Path:
    from tests.helpers.packages import tiny_package

    return tiny_package(tmp_path_factory.mktemp("pkg") / "toy-pynq-z2")


def test_package_metrics_equal_the_segmenter_and_metrics_composed(
    package_dir, monkeypatch, tmp_path, capsys
):
    monkeypatch.setattr(
        "fcnseg.quantize.data.spec.open_dataset", lambda *args, **kwargs: ThreeClassScenes()
    )
    out = tmp_path / "metrics.json"
    assert main(["eval", "--package", str(package_dir), "--json", str(out)]) == 0
    assert "mean IU" in capsys.readouterr().out

    segmenter = Segmenter.load(package_dir, backend="sim")
    matrix = ConfusionMatrix(3)
    data = ThreeClassScenes()
    for i in range(len(data)):
        image, label = data[i]
        matrix.update(label, segmenter(image))
    expected = scores(matrix.matrix)
    recorded = json.loads(out.read_text())
    assert recorded["images"] == 3 and recorded["pixels"] == int(matrix.matrix.sum())
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert recorded[key] == expected[key]


def test_class_count_mismatch_is_a_user_error(package_dir, monkeypatch, capsys):
    class SevenClasses(ThreeClassScenes):
        classes = tuple("abcdefg")

    monkeypatch.setattr(
        "fcnseg.quantize.data.spec.open_dataset", lambda *args, **kwargs: SevenClasses()
    )
    assert main(["eval", "--package", str(package_dir)]) == 2
    assert "predicts 3 classes" in capsys.readouterr().err
