"""Augmentation: deterministic with a seeded generator, image and label stay aligned."""

from __future__ import annotations

import numpy as np
import pytest

from fcnseg.quantize.data.augment import Augment, random_crop, random_hflip, random_scale


def _coded_pair(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An image whose pixels encode their own label: image[..., 0] == label, so any
    misalignment between the two shows as a mismatch."""
    rng = np.random.default_rng(0)
    label = rng.integers(0, 7, size=(height, width), dtype=np.uint8)
    # blocks of constant label, so bilinear resizing keeps block interiors exact
    label = np.kron(label[: height // 8, : width // 8], np.ones((8, 8), dtype=np.uint8))
    image = np.stack([label * 30, label * 30, np.full_like(label, 9)], axis=2)
    return image, label


def test_crop_is_tile_sized_aligned_and_deterministic():
    image, label = _coded_pair(96, 128)
    crops = [random_crop(image, label, (64, 48), np.random.default_rng(7)) for _ in range(2)]
    (img_a, lab_a), (img_b, lab_b) = crops
    assert img_a.shape == (64, 48, 3) and lab_a.shape == (64, 48)
    np.testing.assert_array_equal(img_a, img_b)
    np.testing.assert_array_equal(lab_a, lab_b)
    np.testing.assert_array_equal(img_a[..., 0], lab_a * 30)


def test_crop_pads_a_small_image_with_ignore():
    image, label = _coded_pair(40, 24)
    img, lab = random_crop(image, label, (64, 64), np.random.default_rng(0))
    assert img.shape == (64, 64, 3)
    np.testing.assert_array_equal(lab[:40, :24], label)
    assert (lab[40:] == 255).all() and (lab[:, 24:] == 255).all()
    assert (img[40:] == 0).all()


def test_flip_mirrors_both():
    image, label = _coded_pair(16, 32)
    for seed in range(6):
        img, lab = random_hflip(image, label, np.random.default_rng(seed))
        np.testing.assert_array_equal(img[..., 0], lab * 30)
        assert (lab == label).all() or (lab == label[:, ::-1]).all()


def test_scale_keeps_labels_from_the_original_set_and_aligned():
    image, label = _coded_pair(64, 64)
    img, lab = random_scale(image, label, np.random.default_rng(3), (1.5, 1.5))
    assert lab.shape == (96, 96) and img.shape == (96, 96, 3)
    assert set(np.unique(lab)) <= set(np.unique(label))
    # nearest for labels, bilinear for the image: they agree away from block edges (where the
    # label is constant over a 5x5 neighbourhood)
    padded = np.pad(lab.astype(int), 2, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (5, 5))
    interior = windows.min(axis=(2, 3)) == windows.max(axis=(2, 3))
    assert interior.mean() > 0.3
    np.testing.assert_array_equal(img[..., 0][interior], lab[interior] * 30)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pipeline_is_reproducible_per_seed(seed):
    image, label = _coded_pair(80, 80)
    augment = Augment(tile=(64, 64), scale_range=(0.75, 1.25), flip=True)
    a = augment(image, label, np.random.default_rng(seed))
    b = augment(image, label, np.random.default_rng(seed))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape == (64, 64, 3) and a[0].flags.c_contiguous
