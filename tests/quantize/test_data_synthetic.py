"""Synthetic scenes: deterministic per seed, any size, disjoint splits, real classes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skimage")  # the textures are scikit-image's bundled photos

from fcnseg.errors import UserError  # noqa: E402
from fcnseg.quantize.data.synthetic import (  # noqa: E402
    CLASSES,
    SPLIT_SEEDS,
    SyntheticScenes,
    render_scene,
)


def test_same_seed_same_scene_other_seed_other_scene():
    a_image, a_label = render_scene(11, (64, 96))
    b_image, b_label = render_scene(11, (64, 96))
    np.testing.assert_array_equal(a_image, b_image)
    np.testing.assert_array_equal(a_label, b_label)
    c_image, _ = render_scene(12, (64, 96))
    assert not np.array_equal(a_image, c_image)


@pytest.mark.parametrize("size", [(1, 1), (17, 300), (256, 256), (96, 512)])
def test_any_size(size):
    image, label = render_scene(3, size)
    assert image.shape == (*size, 3) and image.dtype == np.uint8
    assert label.shape == size and label.dtype == np.uint8
    assert label.max() < len(CLASSES)


def test_scenes_hold_every_class_and_real_texture():
    labels = np.concatenate([render_scene(s)[1].ravel() for s in range(12)])
    counts = np.bincount(labels, minlength=len(CLASSES))
    assert (counts > 0).all(), counts
    assert 0.4 < counts[0] / counts.sum() < 0.9  # background dominates but objects are plenty
    image, label = render_scene(0)
    for cls in np.unique(label):
        pixels = image[label == cls].astype(float)
        assert pixels.std() > 5  # textured, not flat-filled


def test_splits_are_disjoint_seed_ranges_and_indexable():
    test = SyntheticScenes("test", size=(32, 32), length=3)
    assert len(test) == 3 and test.seed(0) == SPLIT_SEEDS["test"]
    image, label = test[2]
    ref_image, ref_label = render_scene(SPLIT_SEEDS["test"] + 2, (32, 32))
    np.testing.assert_array_equal(image, ref_image)
    np.testing.assert_array_equal(label, ref_label)
    assert not np.array_equal(SyntheticScenes("train", (32, 32), 1)[0][0], image)
    with pytest.raises(IndexError):
        test[3]
    assert test.palette.shape == (len(CLASSES), 3)
    assert tuple(test.palette[1]) == (128, 0, 0)  # VOC colours


def test_bad_split_is_a_user_error():
    with pytest.raises(UserError, match="split"):
        SyntheticScenes("holdout")
