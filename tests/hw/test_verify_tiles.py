"""The tiles `fcnseg verify` runs by default: a photo crop at the package's tile, scaled up first
when the photo is smaller than a large tile (the per-frame packages' 512x480, 512x1024)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.hw.verify.run import default_tiles, image_tile

ASTRONAUT = Path(__file__).resolve().parents[2] / "samples" / "astronaut.jpg"


def test_a_tile_inside_the_photo_is_its_centre_crop():
    tile = image_tile(ASTRONAUT, (256, 256))
    photo = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    assert tile.label == "astronaut.jpg[112:368,112:368]"
    np.testing.assert_array_equal(tile.pixels, photo[112:368, 112:368])


@pytest.mark.parametrize("shape", [(512, 480), (512, 1024), (480, 1024)])
def test_a_tile_larger_than_the_photo_crops_the_photo_scaled_to_cover_it(shape):
    (tile,) = default_tiles(shape)
    assert tile.pixels.shape == (*shape, 3) and tile.pixels.dtype == np.uint8
    assert "scaled to" in tile.label
    assert tile.pixels.std() > 20  # photo content, not padding
