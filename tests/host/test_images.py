"""Image decoding to RGB uint8 and atomic mask/overlay/score writing (numpy + Pillow only)."""

from __future__ import annotations

import os
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.errors import UserError
from fcnseg.host.images import (
    ClassTable,
    as_rgb_array,
    atomic_open,
    cells_read,
    image_size,
    load_image,
    overlay,
    png_mask_writer,
    read_mask_classes,
    save_array,
    save_mask,
    save_overlay,
    voc_palette,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(12, 20, 3), dtype=np.uint8)


def test_rgb_png_round_trip(tmp_path: Path) -> None:
    Image.fromarray(RGB).save(tmp_path / "a.png")
    got = load_image(tmp_path / "a.png")
    assert got.dtype == np.uint8 and got.shape == (12, 20, 3)
    np.testing.assert_array_equal(got, RGB)


def test_gray_and_palette(tmp_path: Path) -> None:
    gray = RGB[..., 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    np.testing.assert_array_equal(load_image(tmp_path / "g.png"), np.stack([gray] * 3, axis=2))
    pal = Image.fromarray(RGB).quantize(16)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_image(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))
    Image.fromarray(gray).convert("1").save(tmp_path / "b.png")
    assert set(np.unique(load_image(tmp_path / "b.png"))) <= {0, 255}


def test_alpha_is_composited_on_black(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 100, 51)
    rgba[..., 3] = [[255, 128], [0, 64]]
    Image.fromarray(rgba).save(tmp_path / "a.png")
    got = load_image(tmp_path / "a.png").astype(int)
    expect = np.round(rgba[..., :3].astype(float) * rgba[..., 3:] / 255).astype(int)
    np.testing.assert_array_equal(got, expect)
    assert (got[1, 0] == 0).all()
    la = Image.fromarray(rgba).convert("LA")
    la.save(tmp_path / "la.png")
    assert (load_image(tmp_path / "la.png")[1, 0] == 0).all()


def test_16_bit_gray(tmp_path: Path) -> None:
    values = np.array([[0, 255, 256, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    got = load_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(got[..., 0], [[0, 0, 1, 255]])
    assert (got[..., 0] == got[..., 2]).all()


def test_cmyk(tmp_path: Path) -> None:
    cmyk = Image.fromarray(RGB).convert("CMYK")
    cmyk.save(tmp_path / "c.jpg", quality=95)
    with Image.open(tmp_path / "c.jpg") as expect:
        assert expect.mode == "CMYK"
        np.testing.assert_array_equal(load_image(tmp_path / "c.jpg"), expect.convert("RGB"))


def test_exif_orientation(tmp_path: Path) -> None:
    img = Image.fromarray(RGB)  # 20 wide, 12 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    img.save(tmp_path / "o.jpg", exif=exif, quality=95)
    got = load_image(tmp_path / "o.jpg")
    assert got.shape == (20, 12, 3)
    with Image.open(tmp_path / "o.jpg") as raw:
        expect = np.asarray(raw.convert("RGB").transpose(Image.Transpose.ROTATE_270))
    np.testing.assert_array_equal(got, expect)


def test_bad_files_are_user_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="junk.png: not an image"):
        load_image(tmp_path / "junk.png")
    with pytest.raises(UserError, match="no such file"):
        load_image(tmp_path / "missing.jpg")
    Image.fromarray(RGB).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="trunc.png"):
        load_image(tmp_path / "trunc.png")


def test_decompression_bomb_guard(tmp_path: Path) -> None:
    Image.fromarray(RGB).save(tmp_path / "big.png")
    with pytest.raises(UserError, match="decompression bomb"):
        load_image(tmp_path / "big.png", max_pixels=100)
    old = Image.MAX_IMAGE_PIXELS
    load_image(tmp_path / "big.png", max_pixels=240)
    assert Image.MAX_IMAGE_PIXELS == old


def test_guard_is_per_call_and_leaves_pillows_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our limit decides, Pillow's process-wide one is neither used nor changed: with Pillow's
    set far below the image (its own open would refuse it), a higher limit still decodes."""
    Image.fromarray(RGB).save(tmp_path / "x.png")  # 240 pixels
    Image.fromarray(RGB).save(tmp_path / "x.jpg", quality=95)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    np.testing.assert_array_equal(load_image(tmp_path / "x.png", max_pixels=1000), RGB)
    assert load_image(tmp_path / "x.jpg", max_pixels=1000).shape == RGB.shape
    for name in ("x.png", "x.jpg"):
        assert image_size(tmp_path / name) == (12, 20)
        with pytest.raises(UserError, match="20x12 pixels is above the limit of 239"):
            load_image(tmp_path / name, max_pixels=239)
    assert Image.MAX_IMAGE_PIXELS == 50


def test_threads_decode_with_their_own_limits(tmp_path: Path) -> None:
    """8 threads decode one 240-pixel image at once, half with a limit below it, half above:
    each call gets its own outcome, and Pillow's global setting is what it was."""
    Image.fromarray(RGB).save(tmp_path / "x.png")
    before = Image.MAX_IMAGE_PIXELS
    filters = list(warnings.filters)
    outcomes: list[tuple[int, str]] = []

    def work(thread: int) -> None:
        for i in range(40):
            limit = 239 if (thread + i) % 2 else 240
            try:
                load_image(tmp_path / "x.png", max_pixels=limit)
                outcomes.append((limit, "ok"))
            except UserError as error:
                outcomes.append((limit, "refused" if "above the limit" in str(error) else "?"))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: interleave the calls finely
    try:
        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert len(outcomes) == 320
    assert {limit: {o for lim, o in outcomes if lim == limit} for limit in (239, 240)} == {
        239: {"refused"},
        240: {"ok"},
    }
    assert Image.MAX_IMAGE_PIXELS == before
    assert warnings.filters == filters  # no process-wide state is switched while decoding


def test_as_rgb_array() -> None:
    np.testing.assert_array_equal(as_rgb_array(RGB), RGB)
    assert as_rgb_array(RGB[..., 0]).shape == (12, 20, 3)
    np.testing.assert_array_equal(as_rgb_array(Image.fromarray(RGB)), RGB)
    with pytest.raises(ValueError, match="uint8"):
        as_rgb_array(RGB.astype(np.float32))


def test_mask_is_a_palette_png(tmp_path: Path) -> None:
    labels = RNG.integers(0, 21, size=(12, 20)).astype(np.uint8)
    save_mask(tmp_path / "m.png", labels, voc_palette())
    with Image.open(tmp_path / "m.png") as img:
        assert img.mode == "P"
        np.testing.assert_array_equal(np.asarray(img), labels)
        palette = np.frombuffer(bytes(img.getpalette()), dtype=np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(palette[:21], voc_palette(21))
    assert voc_palette(3).tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    assert voc_palette()[255].tolist() == [224, 224, 192]


def _idat(path: Path) -> tuple[int, int]:
    """``(FLEVEL of the zlib header, total IDAT bytes)`` of a PNG (RFC 1950: FLEVEL 0 is the
    fastest levels, 2 the default)."""
    from fcnseg.host.images import png

    level, size = None, 0
    with open(path, "rb") as handle:
        assert handle.read(8) == png.SIGNATURE
        while (head := png.read_chunk_header(handle)) is not None:
            kind, length = head
            data = handle.read(length + 4)
            if kind == b"IDAT":
                level = data[1] >> 6 if level is None else level
                size += length
    assert level is not None, f"{path} has no IDAT"
    return level, size


def test_masks_are_deflated_fast_and_run_length(tmp_path: Path) -> None:
    """Both mask writers use zlib level 1 with the run-length strategy: FLEVEL 0 (Pillow's
    default level 6 writes 2), fewer bytes than level 1 with the default strategy on a label
    map, and lossless."""
    import zlib

    from fcnseg.host.upsample import upsample_argmax

    coarse = np.random.default_rng(5).integers(-50, 50, size=(16, 32, 5))
    labels = upsample_argmax(coarse, np.ones(5), np.zeros(5), (128, 256), 8)
    save_mask(tmp_path / "whole.png", labels, voc_palette())
    with png_mask_writer(tmp_path / "rows.png", 128, 256, voc_palette()) as write:
        write(labels[:40])
        write(labels[40:])
    plain = tmp_path / "plain.png"
    save_mask(plain, labels, voc_palette(), strategy=zlib.Z_DEFAULT_STRATEGY)
    for name in ("whole.png", "rows.png"):
        level, size = _idat(tmp_path / name)
        assert level == 0 and size < 0.8 * _idat(plain)[1]
        with Image.open(tmp_path / name) as img:
            np.testing.assert_array_equal(np.asarray(img), labels)
    Image.fromarray(labels).save(tmp_path / "default.png")
    assert _idat(tmp_path / "default.png")[0] == 2  # the check can tell the levels apart


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1 / 3, 0.77, 1.0])
def test_overlay_table_is_the_float32_blend(alpha: float) -> None:
    """The lookup tables give the array blend in float32 bit for bit (every channel value and
    colour value meet: 256 x 256 pairs), clear classes keep the image."""
    rng = np.random.default_rng(int(alpha * 100))
    image = np.tile(np.arange(256, dtype=np.uint8), (256, 1))[..., None].repeat(3, axis=2)
    palette = rng.integers(0, 256, size=(256, 3), dtype=np.uint8)
    palette[:256, 0] = np.arange(256)  # channel 0 meets every colour value
    labels = np.tile(np.arange(256, dtype=np.uint8)[:, None], (1, 256))
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * palette[labels].astype(np.float32)
    expect = np.clip(np.round(blend), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(overlay(image, labels, palette, alpha), expect)
    clear = (0, 7)
    expect[np.isin(labels, clear)] = image[np.isin(labels, clear)]
    np.testing.assert_array_equal(overlay(image, labels, palette, alpha, clear), expect)


def test_overlay_jpeg_quality(tmp_path: Path) -> None:
    labels = (np.arange(12 * 20).reshape(12, 20) % 3).astype(np.uint8)
    save_overlay(tmp_path / "hi.jpg", RGB, labels, voc_palette(), quality=95)
    save_overlay(tmp_path / "lo.jpg", RGB, labels, voc_palette(), quality=10)
    assert (tmp_path / "lo.jpg").stat().st_size < (tmp_path / "hi.jpg").stat().st_size
    with pytest.raises(ValueError, match="1-95"):
        save_overlay(tmp_path / "bad.jpg", RGB, labels, voc_palette(), quality=0)
    assert not (tmp_path / "bad.jpg").exists()


def test_overlay(tmp_path: Path) -> None:
    labels = np.ones((12, 20), dtype=np.uint8)
    pal = voc_palette()
    np.testing.assert_array_equal(overlay(RGB, labels, pal, 0.0), RGB)
    assert (overlay(RGB, labels, pal, 1.0) == pal[1]).all()
    labels[:6] = 0
    clear = overlay(RGB, labels, pal, 1.0, clear=(0,))
    np.testing.assert_array_equal(clear[:6], RGB[:6])
    assert (clear[6:] == pal[1]).all()
    save_overlay(tmp_path / "o.jpg", RGB, labels, pal)
    save_overlay(tmp_path / "o.png", RGB, labels, pal)
    assert load_image(tmp_path / "o.png").shape == (12, 20, 3)
    with Image.open(tmp_path / "o.jpg") as img:
        assert img.format == "JPEG"


def test_scores_npy(tmp_path: Path) -> None:
    scores = RNG.integers(-500, 500, size=(3, 4, 5)).astype(np.int32)
    save_array(tmp_path / "s.npy", scores)
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy", allow_pickle=False), scores)


def test_atomic_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "x.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["x.png"]
    with atomic_open(tmp_path / "sub" / "y.bin") as handle:
        handle.write(b"new")
    assert (tmp_path / "sub" / "y.bin").read_bytes() == b"new"
    (tmp_path / "plain").write_bytes(b"")  # same permissions as any new file
    assert (tmp_path / "sub" / "y.bin").stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_class_table_and_mask_text_chunk(tmp_path: Path) -> None:
    table = ClassTable.of(3, ["sky", "road", "car"], voc_palette())
    assert table.colours.tolist() == voc_palette(3).tolist()
    assert ClassTable.of(2, None, voc_palette()).names == ("class 0", "class 1")
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        ClassTable.of(3, ["a", "b"], voc_palette())
    with pytest.raises(ValueError, match="a palette of 2 colours for 3 classes"):
        ClassTable.of(3, None, voc_palette(2))
    with pytest.raises(ValueError, match="car appear twice"):
        ClassTable.of(3, ["car", "road", "car"], voc_palette())
    labels = RNG.integers(0, 3, size=(12, 20)).astype(np.uint8)
    save_mask(tmp_path / "whole.png", labels, voc_palette(), table)
    with png_mask_writer(tmp_path / "rows.png", 12, 20, voc_palette(), table) as write:
        write(labels[:5])
        write(labels[5:])
    for name in ("whole.png", "rows.png"):
        with Image.open(tmp_path / name) as img:
            assert read_mask_classes(img.text) == ["sky", "road", "car"]
            np.testing.assert_array_equal(np.asarray(img), labels)


@pytest.mark.parametrize(("stride", "field"), [(2, 2), (8, 8), (4, 8), (1, 2)])
def test_cells_read_are_all_the_upsampling_needs(stride: int, field: int) -> None:
    """Labels from the cropped scores equal those from the whole canvas's scores."""
    from fcnseg.host.upsample import upsample_argmax

    scale, bias = np.array([1.0, 0.5, 2.0]), np.array([0.0, 3.0, -1.0])
    for height, width in [(1, 1), (17, 9), (30, 41), (64, 64)]:
        cells = (height + field) // stride + 2, (width + field) // stride + 2
        scores = RNG.integers(-50, 50, size=(*cells, 3))
        rows = cells_read(height, stride, field, cells[0])
        cols = cells_read(width, stride, field, cells[1])
        full = upsample_argmax(scores, scale, bias, (height, width), stride, field)
        cropped = upsample_argmax(scores[:rows, :cols], scale, bias, (height, width), stride, field)
        np.testing.assert_array_equal(cropped, full, err_msg=f"{height}x{width}")
        assert rows < cells[0] and cols < cells[1]  # the padding's cells are dropped
