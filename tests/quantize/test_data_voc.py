"""Pascal VOC reader, on a tiny dataset written here in VOC's exact layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.errors import UserError
from fcnseg.quantize.data.palette import voc_palette
from fcnseg.quantize.data.spec import open_dataset
from fcnseg.quantize.data.voc import VOC_CLASSES, VOCSegmentation


def _write_voc(root: Path, ids: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Write JPEGImages/, SegmentationClass/ (palette PNGs) and ImageSets/Segmentation/."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = {}
    for split, names in ids.items():
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for name in names:
            h, w = int(rng.integers(20, 40)), int(rng.integers(20, 40))
            label = rng.integers(0, 21, size=(h, w), dtype=np.uint8)
            label[0, :] = 255  # VOC's object-border "void"
            png = Image.fromarray(label, mode="P")
            png.putpalette(voc_palette().ravel().tolist())
            png.save(root / "SegmentationClass" / f"{name}.png")
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                root / "JPEGImages" / f"{name}.jpg"
            )
            labels[name] = label
    return labels


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocdata") / "VOCdevkit" / "VOC2012"
    labels = _write_voc(root, {"train": ["2007_000001", "2007_000002"], "val": ["2008_000003"]})
    return root, labels


def test_reads_split_with_palette_indices_and_ignore(voc):
    root, labels = voc
    ds = VOCSegmentation(root, "train")
    assert len(ds) == 2 and ds.classes == VOC_CLASSES and len(ds.classes) == 21
    image, label = ds[1]
    assert image.dtype == np.uint8 and image.shape == (*label.shape, 3)
    np.testing.assert_array_equal(label, labels["2007_000002"])  # indices, not colours
    assert (label[0] == 255).all()


def test_finds_voc2012_inside_vocdevkit_and_via_spec(voc):
    root, _ = voc
    assert len(VOCSegmentation(root.parent.parent, "val")) == 1
    assert len(open_dataset(f"voc:{root}", "val")) == 1


def test_missing_or_malformed_root_is_a_user_error(voc, tmp_path):
    root, _ = voc
    with pytest.raises(UserError, match="not a folder"):
        VOCSegmentation(tmp_path / "nowhere")
    with pytest.raises(UserError, match="missing"):
        VOCSegmentation(tmp_path)
    with pytest.raises(UserError, match="available"):
        VOCSegmentation(root, "test")
    broken = tmp_path / "broken"
    _write_voc(broken, {"train": ["a"]})
    (broken / "JPEGImages" / "a.jpg").unlink()
    with pytest.raises(UserError, match="lack"):
        VOCSegmentation(broken, "train")
    with pytest.raises(UserError, match="PATH"):
        open_dataset("voc", "train")


def test_rgb_label_png_is_rejected(tmp_path):
    _write_voc(tmp_path, {"train": ["a"]})
    Image.new("RGB", (4, 4)).save(tmp_path / "SegmentationClass" / "a.png")
    with pytest.raises(UserError, match="mode RGB"):
        VOCSegmentation(tmp_path, "train")[0]
