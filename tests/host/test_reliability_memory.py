"""Issue 9, item 4: bounded memory for large images.

A large image is segmented in strips (:meth:`fcnseg.host.segmenter.Segmenter.stream`): one row
of tiles of the canvas at a time, scores upsampled and the mask PNG written row-streamed. Binary
PPM input is read row by row too, so nothing of size ``H x W`` is ever held. The peak RSS of a
``fcnseg segment`` subprocess (``resource.getrusage(...).ru_maxrss``) on a 6000x6000 PPM must
stay within a bound derived from the strip size, well below the ~110 MB the image alone takes.

The package: the hand-made tiny layers (3x3 conv, pool, 1x1 score; stride 2) declared with a
256x256 tile, so the tile grid is realistic and the simulator fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.host.images import open_rows
from fcnseg.host.package import write_package
from fcnseg.host.segmenter import Segmenter
from tests.helpers.images import image
from tests.helpers.packages import CARD, IO, make_layers

ROOT = Path(__file__).resolve().parents[2]
TILE = 256

#: Runs the CLI and reports the process's peak RSS on stderr: ``VmHWM`` of /proc/self/status
#: (the peak of this process's own address space) and ``ru_maxrss`` (KiB on Linux). On Linux
#: ``ru_maxrss`` survives ``execve``: a child forked from a big parent (pytest) starts with the
#: parent's peak, so it overstates a small child; VmHWM does not.
PROBE = (
    "import resource, sys\n"
    "from fcnseg.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "hwm = 0\n"
    "try:\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            hwm = int(line.split()[1])\n"
    "except OSError:\n"
    "    pass\n"
    "rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "print('PEAK_KB', hwm or rss, 'MAXRSS_KB', rss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def wide_tile_package(folder: Path, tile: int = TILE) -> Path:
    io = {
        "input": {**IO["input"], "shape": [1, tile, tile, 3]},
        "output": {**IO["output"], "shape": [1, tile // 2, tile // 2, 3]},
    }
    card = {**CARD, "tile": [tile, tile]}
    return write_package(folder, model_card=card, io=io, layers=make_layers(tile), board="pynq-z2")


def write_ppm(path: Path, height: int, width: int, band: int = 256) -> None:
    """A binary PPM written in bands (a pattern of coloured blocks with texture)."""
    with open(path, "wb") as f:
        f.write(f"P6\n# made by the test\n{width} {height}\n255\n".encode())
        xs = np.arange(width)
        for y0 in range(0, height, band):
            ys = np.arange(y0, min(height, y0 + band))[:, None]
            r = ((ys // 97 + xs // 131) * 53 % 256).astype(np.uint8)
            g = ((ys // 61 * 3 + xs // 89) * 71 % 256).astype(np.uint8)
            b = ((ys + xs) % 256).astype(np.uint8)
            f.write(np.dstack([r, g, b]).tobytes())


def write_png(path: Path, height: int, width: int, band: int = 256) -> None:
    """The same pattern as an 8-bit RGB PNG, written row-streamed (filter None, zlib level 1)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ppm = path.with_suffix(".tmp.ppm")
    write_ppm(ppm, height, width, band)
    packer = zlib.compressobj(1)
    with open(path, "wb") as f, open(ppm, "rb") as src:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        src.readline(), src.readline(), src.readline(), src.readline()  # the PPM header
        for _ in range(0, height, band):
            rows = np.frombuffer(src.read(band * width * 3), np.uint8).reshape(-1, width * 3)
            lines = np.zeros((len(rows), width * 3 + 1), np.uint8)
            lines[:, 1:] = rows
            f.write(chunk(b"IDAT", packer.compress(lines.tobytes())))
        f.write(chunk(b"IDAT", packer.flush()) + chunk(b"IEND", b""))
    ppm.unlink()


def peak_rss_mb(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, cwd=ROOT
    )
    line = [x for x in proc.stderr.splitlines() if x.startswith("PEAK_KB")]
    assert line, proc.stderr
    return int(line[-1].split()[1]) / 1024, proc


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return wide_tile_package(tmp_path_factory.mktemp("pkg") / "wide-pynq-z2")


def test_strips_equal_whole_image(package: Path, tmp_path: Path, monkeypatch) -> None:
    """The strip path (forced on a mid-size image) writes the same mask and scores."""
    from fcnseg.cli import main
    from fcnseg.host import batch

    path = tmp_path / "scene.ppm"
    write_ppm(path, 700, 610, band=100)
    seg = Segmenter.load(package)
    with Image.open(path) as img:
        ref = seg.segment(img)
    monkeypatch.setattr(batch, "STREAM_PIXELS", 0)
    png = tmp_path / "photo.png"
    rgb = image(300, 530, seed=3)
    Image.fromarray(rgb).save(png)
    out = tmp_path / "out"
    assert main(["segment", str(path), str(png), "--package", str(package), "-o", str(out)]) == 0
    assert (
        main(
            [
                "segment",
                str(path),
                "--package",
                str(package),
                "--scores",
                "--overwrite",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    with Image.open(out / "scene.png") as mask:
        assert mask.mode == "P" and mask.size == (610, 700)
        np.testing.assert_array_equal(np.asarray(mask), ref.labels)
    with Image.open(out / "photo.png") as mask:
        np.testing.assert_array_equal(np.asarray(mask), seg(rgb))
    with np.load(out / "scene_scores.npz", allow_pickle=False) as npz:
        scores = npz["scores"]
    h, w = scores.shape[:2]  # cropped to the image's cells: here the whole 700x610 canvas
    assert (h, w) == (350, 305)
    np.testing.assert_array_equal(scores, ref.scores[:h, :w].astype(np.int32))


def test_netpbm_rows_are_checked(tmp_path: Path) -> None:
    from fcnseg.errors import UserError

    bomb = tmp_path / "bomb.ppm"
    bomb.write_bytes(b"P6 30000 30000 255\n" + b"\0" * 100)
    with pytest.raises(UserError, match="truncated"):
        open_rows(bomb)
    bad = tmp_path / "bad.ppm"
    bad.write_bytes(b"P6 12 x 255\n")
    with pytest.raises(UserError, match="malformed"):
        open_rows(bad)
    gray = tmp_path / "g.pgm"
    gray.write_bytes(b"P5\n3 2\n255\n" + bytes(range(6)))
    rows = open_rows(gray)
    try:
        np.testing.assert_array_equal(rows.read(1, 2)[0, :, 0], [3, 4, 5])
        assert rows.read(0, 2).shape == (2, 3, 3)
    finally:
        rows.close()


@pytest.mark.parametrize("fmt", ["ppm", "png"])
def test_peak_rss_is_bounded_by_the_strip(package: Path, tmp_path: Path, fmt: str) -> None:
    write = write_ppm if fmt == "ppm" else write_png
    small = tmp_path / f"small.{fmt}"
    write(small, 300, 300)
    big = tmp_path / f"big.{fmt}"
    side = 6000
    write(big, side, side)
    base = ["segment", "--package", str(package)]
    baseline, proc = peak_rss_mb([*base, str(small), "-o", str(tmp_path / "o1")])
    assert proc.returncode == 0, proc.stderr
    peak, proc = peak_rss_mb([*base, str(big), "-o", str(tmp_path / "o2")])
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "o2" / "big.png") as mask:
        assert mask.size == (side, side)
    strip = TILE * side * 3  # one row of tiles of the canvas, RGB
    image_mb = side * side * 3 / 2**20
    bound = baseline + 20 * strip / 2**20
    print(f"peak RSS {peak:.0f} MB (baseline {baseline:.0f} MB, bound {bound:.0f} MB, "
          f"image {image_mb:.0f} MB)")  # fmt: skip
    assert peak < bound
    assert peak - baseline < image_mb


def test_streamed_scores_keep_the_bound(package: Path, tmp_path: Path) -> None:
    """--scores on the strip path streams NAME_scores.npz (108 MB for this 6000x6000 image at
    stride 2) into its zip member: the peak stays a strip's worth above the baseline."""
    side = 6000
    small, big = tmp_path / "small.ppm", tmp_path / "big.ppm"
    write_ppm(small, 300, 300)
    write_ppm(big, side, side)
    base = ["segment", "--package", str(package), "--scores"]
    baseline, proc = peak_rss_mb([*base, str(small), "-o", str(tmp_path / "o1")])
    assert proc.returncode == 0, proc.stderr
    peak, proc = peak_rss_mb([*base, str(big), "-o", str(tmp_path / "o2")])
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "o2" / "big_scores.npz", allow_pickle=False) as npz:
        assert npz["scores"].shape == (side // 2, side // 2, 3)
        scores_mb = npz["scores"].nbytes / 2**20
    bound = baseline + 20 * TILE * side * 3 / 2**20
    print(f"peak RSS {peak:.0f} MB (baseline {baseline:.0f} MB, bound {bound:.0f} MB, "
          f"scores {scores_mb:.0f} MB)")  # fmt: skip
    assert peak < bound
    assert peak - baseline < scores_mb


def test_size_of_a_huge_png_is_read_from_its_header(tmp_path: Path) -> None:
    """Routing to the strip path reads the header only (a PNG's getexif would decode it)."""
    import tracemalloc

    from fcnseg.host.images import image_size
    from tests.helpers.images import bomb_png

    path = tmp_path / "huge.png"
    path.write_bytes(bomb_png(20000, 30000))
    tracemalloc.start()
    assert image_size(path) == (30000, 20000)
    assert tracemalloc.get_traced_memory()[1] < 10 << 20
    tracemalloc.stop()


def _png_kinds(rgb: np.ndarray) -> dict[str, Image.Image]:
    alpha = Image.fromarray((np.arange(rgb.shape[0] * rgb.shape[1]) % 251).astype(np.uint8)
                            .reshape(rgb.shape[:2]))  # fmt: skip
    base = Image.fromarray(rgb)
    rgba = base.copy()
    rgba.putalpha(alpha)
    palette_t = base.convert("P")
    palette_t.info["transparency"] = 3
    return {
        "RGB": base,
        "RGBA": rgba,
        "L": base.convert("L"),
        "LA": base.convert("LA"),
        "P": base.convert("P"),
        "P+tRNS": palette_t,
        "1-bit": base.convert("1"),  # not 8-bit: decoded whole by Pillow
        "16-bit": Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257),
    }


@pytest.mark.parametrize("kind", ["RGB", "RGBA", "L", "LA", "P", "P+tRNS", "1-bit", "16-bit"])
def test_png_rows_equal_pillow(tmp_path: Path, kind: str) -> None:
    """PNG bands (overlapping, forwards, as the segmenter reads them) == Pillow's whole decode,
    for every filter type Pillow's encoder picks (it mixes them per row)."""
    from fcnseg.host.images import PngRows, load_image

    rgb = image(301, 203, seed=4)
    path = tmp_path / "x.png"
    _png_kinds(rgb)[kind].save(path, optimize=kind == "RGB")
    expect = load_image(path)
    rows = open_rows(path)
    try:
        assert isinstance(rows, PngRows) == (kind not in ("1-bit", "16-bit"))
        assert (rows.height, rows.width) == expect.shape[:2]
        for y0, y1 in [(0, 64), (40, 128), (100, 101), (101, 250), (200, 301)]:
            np.testing.assert_array_equal(rows.read(y0, y1), expect[y0:y1], err_msg=f"{y0}")
    finally:
        rows.close()


def test_png_rows_refuse_damage_with_one_line(tmp_path: Path) -> None:
    from fcnseg.errors import UserError

    path = tmp_path / "x.png"
    Image.fromarray(image(200, 150, seed=5)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    rows = open_rows(path)
    with pytest.raises(UserError, match="truncated"):
        rows.read(0, 200)
    rows.close()
    damaged = bytearray(data)
    damaged[len(data) // 3] ^= 0x55
    path.write_bytes(bytes(damaged))
    rows = open_rows(path)
    with pytest.raises(UserError, match=str(path)):
        rows.read(0, 200)
    rows.close()


def test_png_cut_inside_its_header_is_one_line(tmp_path: Path) -> None:
    """A PNG cut anywhere in its first chunks (signature, IHDR, the chunk after it) is refused
    with a one-line error naming the file, whether the rows reader or Pillow sees it first."""
    from fcnseg.errors import UserError

    path = tmp_path / "x.png"
    Image.fromarray(image(40, 30, seed=7)).save(path)
    data = path.read_bytes()
    for cut in range(1, 60):
        path.write_bytes(data[:cut])
        with pytest.raises(UserError, match=str(path)):
            rows = open_rows(path)
            try:
                rows.read(0, 40)
            finally:
                rows.close()


def _filtered_png(rgb: np.ndarray) -> bytes:
    """An RGB PNG whose rows cycle through all five filter types (None, Sub, Up, Average,
    Paeth), encoded here from the PNG spec (Pillow's encoder never picks Average)."""
    import struct
    import zlib

    h, w, _ = rgb.shape
    x = rgb.reshape(h, w * 3).astype(np.int32)
    lines = []
    for y in range(h):
        row = x[y]
        up = x[y - 1] if y else np.zeros_like(row)
        left = np.concatenate([np.zeros(3, np.int32), row[:-3]])
        upleft = np.concatenate([np.zeros(3, np.int32), up[:-3]])
        kind = y % 5
        if kind == 0:
            pred = np.zeros_like(row)
        elif kind == 1:
            pred = left
        elif kind == 2:
            pred = up
        elif kind == 3:
            pred = (left + up) // 2
        else:
            p = left + up - upleft
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        lines.append(bytes([kind]) + ((row - pred) % 256).astype(np.uint8).tobytes())

    def chunk(k: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"".join(lines))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_png_rows_every_filter_type(tmp_path: Path) -> None:
    rgb = image(97, 61, seed=6)
    path = tmp_path / "filters.png"
    path.write_bytes(_filtered_png(rgb))
    with Image.open(path) as img:
        np.testing.assert_array_equal(np.asarray(img), rgb)  # the test's encoder is right
    rows = open_rows(path)
    try:
        got = np.concatenate([rows.read(y, min(y + 13, 97)) for y in range(0, 97, 13)])
    finally:
        rows.close()
    np.testing.assert_array_equal(got, rgb)
