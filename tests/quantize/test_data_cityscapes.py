"""Cityscapes reader, on a tiny dataset written here in Cityscapes' exact layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.errors import UserError
from fcnseg.quantize.data.cityscapes import LABEL_TO_TRAIN, CityscapesSegmentation
from fcnseg.quantize.data.spec import open_dataset


def _write_cityscapes(
    root: Path, split: str, frames: dict[str, list[str]]
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    label_ids = {}
    for city, stems in frames.items():
        images = root / "leftImg8bit" / split / city
        labels = root / "gtFine" / split / city
        images.mkdir(parents=True)
        labels.mkdir(parents=True)
        for stem in stems:
            ids = rng.integers(0, 34, size=(16, 32), dtype=np.uint8)
            Image.fromarray(ids, mode="L").save(labels / f"{stem}_gtFine_labelIds.png")
            Image.fromarray(rng.integers(0, 256, (16, 32, 3), dtype=np.uint8)).save(
                images / f"{stem}_leftImg8bit.png"
            )
            label_ids[stem] = ids
    return label_ids


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    ids = _write_cityscapes(
        root, "val", {"aachen": ["aachen_000000_000019"], "bonn": ["bonn_000001_000019"]}
    )
    return root, ids


def test_maps_label_ids_to_19_train_ids_and_the_rest_to_ignore(cityscapes):
    root, ids = cityscapes
    ds = CityscapesSegmentation(root, "val")
    assert len(ds) == 2 and len(ds.classes) == 19 and ds.palette.shape == (19, 3)
    image, label = ds[1]  # sorted by city: bonn second
    raw = ids["bonn_000001_000019"]
    assert image.shape == (16, 32, 3)
    for label_id in range(34):
        where = raw == label_id
        expected = LABEL_TO_TRAIN.get(label_id, 255)
        assert (label[where] == expected).all()
    assert set(LABEL_TO_TRAIN.values()) == set(range(19))
    assert LABEL_TO_TRAIN[7] == 0 and LABEL_TO_TRAIN[26] == 13 and LABEL_TO_TRAIN[33] == 18
    assert len(open_dataset(f"cityscapes:{root}", "val")) == 2


def test_missing_or_malformed_root_is_a_user_error(cityscapes, tmp_path):
    root, _ = cityscapes
    with pytest.raises(UserError, match="not a folder"):
        CityscapesSegmentation(tmp_path / "nowhere")
    with pytest.raises(UserError, match="leftImg8bit"):
        CityscapesSegmentation(tmp_path)
    with pytest.raises(UserError, match="available"):
        CityscapesSegmentation(root, "train")
    lonely = tmp_path / "lonely"
    _write_cityscapes(lonely, "train", {"ulm": ["ulm_000000_000019"]})
    (lonely / "gtFine" / "train" / "ulm" / "ulm_000000_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(UserError, match="no label file"):
        CityscapesSegmentation(lonely, "train")
