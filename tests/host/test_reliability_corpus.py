"""Issue 9, item 1: a corpus of bad and odd inputs through the real CLI (``fcnseg.cli.main``).

Every file is generated here (nothing fetched). For each input: a correct mask (the valid odd
ones: 16-bit, RGBA, CMYK, palette, gray, 1x1, EXIF-rotated, odd path names) or exactly one
``fcnseg:`` line naming the file and the reason; the good images of the same batch are still
segmented; exit status 1 when anything failed; no traceback.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.cli import main
from fcnseg.host.images import load_image
from fcnseg.host.segmenter import Segmenter
from tests.helpers.images import bomb_png, image
from tests.helpers.packages import tiny_package


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_package(tmp_path_factory.mktemp("pkg") / "tiny-pynq-z2")


@pytest.fixture(scope="module")
def seg(package_dir: Path) -> Segmenter:
    return Segmenter.load(package_dir)


def _jpeg(array: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


#: name -> the reason its one error line gives (any of these substrings).
BAD = {
    "truncated.jpg": ("truncated",),
    "cut.png": ("truncated",),
    "corrupt.png": ("not an image", "cannot decode"),  # a CRC mismatch in IHDR
    "empty.jpg": ("not an image",),
    "text.jpg": ("not an image",),
    "bomb.png": ("30000x30000", "decompression bomb"),
}
#: damage inside a JPEG's entropy-coded data: libjpeg may decode garbage or refuse; either way
#: a mask or one line.
EITHER = ("corrupt-scan.jpg",)
GOOD = (
    "rgb.jpg",
    "gray16.png",
    "rgba.png",
    "cmyk.jpg",
    "palette.png",
    "gray.png",
    "one.png",
    "exif6.jpg",
    "ümlaut dir/photo été 1.png",
)


def make_corpus(folder: Path) -> dict[str, Path]:
    rgb = image(40, 56, seed=7)
    files: dict[str, bytes] = {}
    files["rgb.jpg"] = _jpeg(rgb)
    jpeg = _jpeg(image(48, 64, seed=8))
    files["truncated.jpg"] = jpeg[: len(jpeg) // 2]
    png = _png(Image.fromarray(image(33, 45, seed=9)))
    files["cut.png"] = png[: len(png) * 2 // 3]
    bad_crc = bytearray(png)
    bad_crc[40] ^= 0xFF  # inside IHDR/IDAT: a CRC mismatch
    files["corrupt.png"] = bytes(bad_crc)
    scan = bytearray(_jpeg(image(64, 64, seed=10)))
    for k in range(len(scan) - 300, len(scan) - 200, 7):
        scan[k] = (scan[k] * 7 + 13) & 0xFF or 1
    files["corrupt-scan.jpg"] = bytes(scan)
    files["empty.jpg"] = b""
    files["text.jpg"] = b"this is not a JPEG, just text named like one\n"
    files["gray16.png"] = _png(
        Image.fromarray(np.arange(30 * 20, dtype=np.uint16).reshape(30, 20) * 97)
    )
    rgba = np.dstack([image(25, 31, seed=11), np.linspace(0, 255, 25 * 31).reshape(25, 31)])
    files["rgba.png"] = _png(Image.fromarray(rgba.astype(np.uint8)))
    files["cmyk.jpg"] = _jpeg_cmyk(image(24, 36, seed=12))
    files["palette.png"] = _png(Image.fromarray(image(22, 26, seed=13)).convert("P"))
    files["gray.png"] = _png(Image.fromarray(image(21, 19, seed=14)).convert("L"))
    files["one.png"] = _png(Image.fromarray(np.array([[[200, 30, 90]]], dtype=np.uint8)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    files["exif6.jpg"] = _jpeg(image(24, 72, seed=15), exif=exif.tobytes())
    files["bomb.png"] = bomb_png()
    files["ümlaut dir/photo été 1.png"] = _png(Image.fromarray(image(27, 35, seed=16)))
    out = {}
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out[name] = path
    return out


def _jpeg_cmyk(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture()
def corpus(tmp_path: Path) -> dict[str, Path]:
    return make_corpus(tmp_path / "corpus")


def _lines_naming(err: str, path: Path) -> list[str]:
    return [line for line in err.splitlines() if str(path) in line]


def test_corpus_through_the_cli(package_dir, seg, corpus, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = ["segment", *map(str, corpus.values()), "--package", str(package_dir), "-o", str(out)]
    code = main(args)
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "Traceback" not in captured.err
    either = {n: (out / Path(n).with_suffix(".png").name).is_file() for n in EITHER}
    assert f"segmented {len(GOOD) + sum(either.values())} image(s)" in captured.out
    assert f"failed {len(BAD) + len(EITHER) - sum(either.values())}" in captured.out
    for name, reasons in BAD.items():
        lines = _lines_naming(captured.err, corpus[name])
        assert len(lines) == 1, (name, captured.err)
        assert any(r in lines[0] for r in reasons), (name, lines[0])
        assert not (out / Path(name).with_suffix(".png").name).exists()
    for name, masked in either.items():
        assert len(_lines_naming(captured.err, corpus[name])) == (0 if masked else 1)
    for name in GOOD:
        src = corpus[name]
        assert not _lines_naming(captured.err, src), name
        with Image.open(out / Path(name).with_suffix(".png").name) as mask:
            labels = np.asarray(mask)
        expect = seg(load_image(src))
        np.testing.assert_array_equal(labels, expect, err_msg=name)
    # the EXIF-rotated image: its mask is upright (24x72 stored, displayed 72x24)
    with Image.open(out / "exif6.png") as mask:
        assert mask.size == (24, 72)
    stored = np.asarray(Image.open(corpus["exif6.jpg"]).convert("RGB"))
    np.testing.assert_array_equal(
        seg(np.ascontiguousarray(np.rot90(stored, k=-1))), np.asarray(Image.open(out / "exif6.png"))
    )
    with Image.open(out / "one.png") as mask:
        assert mask.size == (1, 1)


def test_bomb_is_refused_quickly_without_allocating(package_dir, corpus, tmp_path, capsys):
    import tracemalloc

    tracemalloc.start()
    start = time.perf_counter()
    args = [str(corpus["bomb.png"]), "--package", str(package_dir), "-o", str(tmp_path / "o")]
    code = main(["segment", *args])
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    err = capsys.readouterr().err
    assert code == 1 and "30000x30000" in err and "decompression bomb" in err
    assert elapsed < 5 and peak < 50 << 20  # 30000^2 RGB would be 2.7 GB


def test_directory_named_like_an_image(package_dir, tmp_path, capsys) -> None:
    folder = tmp_path / "holiday.jpg"
    folder.mkdir()
    good = tmp_path / "good.png"
    Image.fromarray(image(20, 20)).save(good)
    args = [str(folder), str(good), "--package", str(package_dir), "-o", str(tmp_path / "o")]
    code = main(["segment", *args])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    assert len(_lines_naming(captured.err, folder)) == 1
    assert "segmented 1 image(s)" in captured.out


def test_unreadable_file(package_dir, tmp_path, capsys, monkeypatch) -> None:
    path = tmp_path / "secret.png"
    Image.fromarray(image(20, 20)).save(path)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: chmod 000 does not deny reads")
        monkeypatch.chdir(tmp_path)
        code = main(["segment", str(path), "--package", str(package_dir)])
    finally:
        path.chmod(0o644)
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    lines = _lines_naming(err, path)
    assert len(lines) == 1 and "permission denied" in lines[0].lower()


def test_unreadable_file_via_open_error(package_dir, tmp_path, capsys, monkeypatch) -> None:
    """Where chmod cannot deny reads (root), deny them at ``open``: the same code path."""
    import builtins

    path = tmp_path / "secret.png"
    Image.fromarray(image(20, 20)).save(path)
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.chdir(tmp_path)
    code = main(["segment", str(path), "--package", str(package_dir)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    lines = _lines_naming(err, path)
    assert len(lines) == 1 and "permission denied" in lines[0].lower()


def test_debug_shows_the_traceback_of_a_bug(package_dir, tmp_path, capsys, monkeypatch) -> None:
    from fcnseg.host.batch import Batch

    good = tmp_path / "good.png"
    Image.fromarray(image(20, 20)).save(good)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Batch, "write", broken)
    monkeypatch.chdir(tmp_path)
    args = ["segment", str(good), "--package", str(package_dir)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: a bug" in err and "Traceback" not in err
    with pytest.raises(RuntimeError, match="a bug"):
        main(["--debug", *args])
