"""Multi-frame inputs: every frame decoded as Pillow's own sequence gives it, named and counted,
and ``fcnseg segment --frames first|all`` saying what it used (issue 16, part 4)."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import GifImagePlugin, Image, ImageSequence, TiffImagePlugin

from fcnseg.cli import main
from fcnseg.errors import UserError
from fcnseg.host import batch as batch_module
from fcnseg.host.images import frames as frames_module
from fcnseg.host.images import image_size, load_image
from fcnseg.host.images.frames import FrameSource, frame_count
from fcnseg.host.inputs import InputError, Job, _frame_jobs, collect_inputs
from fcnseg.host.segmenter import Segmenter
from tests.helpers.images import image
from tests.helpers.packages import tiny_package


def _frames(n: int, height: int = 18, width: int = 23) -> list[np.ndarray]:
    return [image(height, width, seed=k) for k in range(n)]


def _gif(path: Path, n: int, transparent: bool = False) -> Path:
    frames = [Image.fromarray(a).quantize(32) for a in _frames(n)]
    extra = {"transparency": 0, "disposal": 2} if transparent else {}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, **extra)
    return path


def _on_black(rgba: Image.Image) -> np.ndarray:
    """The documented alpha rule (composited on black, rounded), computed here on its own."""
    a = np.asarray(rgba.convert("RGBA")).astype(np.int64)
    return ((a[..., :3] * a[..., 3:] + 127) // 255).astype(np.uint8)


def _sequence(path: Path) -> list[tuple[str, bool, np.ndarray]]:
    """Pillow's own frames: mode, whether it is transparent, and its pixels as RGB."""
    out = []
    with Image.open(path) as im:
        for frame in ImageSequence.Iterator(im):
            see_through = frame.mode in ("RGBA", "LA", "PA") or "transparency" in frame.info
            rgb = _on_black(frame) if see_through else np.asarray(frame.convert("RGB"))
            out.append((frame.mode, see_through, rgb))
    return out


@pytest.mark.parametrize("transparent", [False, True])
def test_gif_frames_equal_pillows_sequence(tmp_path: Path, transparent: bool) -> None:
    path = _gif(tmp_path / "a.gif", 4, transparent)
    expected = _sequence(path)
    modes = [mode for mode, _, _ in expected]
    assert modes[0] == "P" and set(modes[1:]) <= {"RGB", "RGBA"}  # the later frames' modes
    assert any(see for _, see, _ in expected) == transparent
    source = FrameSource(path, len(expected))
    for k, (_, _, rgb) in enumerate(expected):
        np.testing.assert_array_equal(source.load(k), rgb)
        np.testing.assert_array_equal(load_image(path, frame=k), rgb)  # from a fresh open
    np.testing.assert_array_equal(load_image(path), expected[0][2])


@pytest.mark.parametrize("fmt", ["webp", "png"])
def test_webp_and_apng_frames_are_the_frames_written(tmp_path: Path, fmt: str) -> None:
    arrays = _frames(3)
    path = tmp_path / f"a.{fmt}"
    pages = [Image.fromarray(a) for a in arrays]
    extra = {"lossless": True} if fmt == "webp" else {}
    pages[0].save(path, save_all=True, append_images=pages[1:], duration=40, **extra)
    assert frame_count(path) == 3
    source = FrameSource(path, 3)
    for k, array in enumerate(arrays):
        np.testing.assert_array_equal(source.load(k), array)


def _tiff(path: Path, pages: list[tuple[Image.Image, int]]) -> Path:
    """A multi-page TIFF whose pages have their own size, mode and orientation tag."""
    with TiffImagePlugin.AppendingTiffWriter(str(path), True) as handle:
        for page, orientation in pages:
            info = TiffImagePlugin.ImageFileDirectory_v2()
            info[0x0112] = orientation
            page.save(handle, format="TIFF", tiffinfo=info)
            handle.newFrame()
    return path


def test_tiff_pages_upright_by_their_own_orientation(tmp_path: Path) -> None:
    a, b, c = image(10, 20, seed=0), image(12, 7, seed=1), image(5, 6, seed=2)
    gray = np.asarray(Image.fromarray(b).convert("L"))
    path = _tiff(
        tmp_path / "m.tif",
        [(Image.fromarray(a), 1), (Image.fromarray(gray), 6), (Image.fromarray(c), 3)],
    )
    expected = [a, np.repeat(np.rot90(gray, k=-1)[..., None], 3, axis=2), np.rot90(c, k=2)]
    assert frame_count(path) == 3
    source = FrameSource(path, 3)
    for k in (0, 1, 2):
        np.testing.assert_array_equal(source.load(k), expected[k])
        np.testing.assert_array_equal(load_image(path, frame=k), expected[k])


def test_image_size_of_a_turned_tiff_is_upright(tmp_path: Path) -> None:
    """Pillow reports a TIFF's size already turned by its orientation: not turned twice."""
    path = _tiff(tmp_path / "r.tif", [(Image.fromarray(image(10, 30)), 6)])
    assert image_size(path) == load_image(path).shape[:2] == (30, 10)


@pytest.mark.parametrize("mode", ["L", "RGBA", "RGB"])
@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_turned_uncompressed_tiff_pixels(tmp_path: Path, mode: str, orientation: int) -> None:
    """Pillow 12-13 memory-map an uncompressed L/RGBA TIFF with the turned size and scramble
    its rows; decoding it here gives the stored pixels turned (numpy, not Pillow, turns them)."""
    stored = np.asarray(Image.fromarray(image(12, 7, seed=3)).convert(mode))
    path = _tiff(tmp_path / "t.tif", [(Image.fromarray(stored), orientation)])
    turned = {
        5: stored.swapaxes(0, 1),
        6: np.rot90(stored, k=-1),
        7: np.rot90(stored, k=2).swapaxes(0, 1),
        8: np.rot90(stored, k=1),
    }[orientation]
    if mode == "RGBA":
        turned = _on_black(Image.fromarray(np.ascontiguousarray(turned)))
    elif mode == "L":
        turned = np.repeat(turned[..., None], 3, axis=2)
    np.testing.assert_array_equal(load_image(path), turned)


def test_frames_are_decoded_in_order_from_one_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """k frame jobs cost k frame decodes, not k(k+1)/2: the file is opened once while frames
    come in order, again only for an earlier frame, and closed after the last."""
    path = _gif(tmp_path / "a.gif", 5)
    opened: list[Path] = []
    real_open = frames_module.open_unguarded
    monkeypatch.setattr(frames_module, "open_unguarded", lambda p: opened.append(p) or real_open(p))
    source = FrameSource(path, 5)
    for k in range(4):
        source.load(k)
    assert len(opened) == 1 and source._image is not None
    source.load(1)  # backwards: from the start again
    assert len(opened) == 2
    source.load(4)
    assert source._image is None  # the last frame closes the file


def test_a_failing_frame_names_the_frame_and_closes_the_file(tmp_path: Path) -> None:
    path = _gif(tmp_path / "a.gif", 3)
    source = FrameSource(path, 5)  # says 5: frame 3 is not there
    source.load(2)
    with pytest.raises(UserError, match=r"a\.gif \(frame 3\): cannot decode \(EOFError"):
        source.load(3)
    assert source._image is None


def test_collect_first_and_all(tmp_path: Path) -> None:
    path = _gif(tmp_path / "a.gif", 3)
    Image.fromarray(image(8, 8)).save(tmp_path / "b.png")
    (job, single), errors = collect_inputs((str(path), str(tmp_path / "b.png")))
    assert errors == [] and str(job.stem) == "a" and job.frame is None
    assert job.note == f"{path}: frame 0 of 3 used (--frames all for every frame)"
    assert job.frames_record() == {"used": [0], "of": 3}
    assert single.note is None and single.frames_record() == {"used": [0], "of": 1}
    jobs, errors = collect_inputs((str(path), str(tmp_path / "b.png")), frames="all")
    assert errors == []
    assert [(str(j.stem), j.frame) for j in jobs] == [
        ("a_f000", 0),
        ("a_f001", 1),
        ("a_f002", 2),
        ("b", None),
    ]
    assert [j.frames_record() for j in jobs[:3]] == [{"used": [k], "of": 3} for k in range(3)]
    assert all(j.note is None for j in jobs) and jobs[0].reader is jobs[2].reader
    with pytest.raises(ValueError, match="frames must be one of"):
        collect_inputs((str(path),), frames="some")


def test_frame_names_widen_with_the_count() -> None:
    names = [str(job.stem) for job, _ in _frame_jobs(Path("v.gif"), Path("v"), 1001, "all")]
    assert names[0] == "v_f0000" and names[-1] == "v_f1000" and names == sorted(names)


def test_frame_stems_never_collide_with_other_inputs(tmp_path: Path) -> None:
    """``a_f000.png`` beside ``a.gif``: whichever comes first keeps ``a_f000``, the other is
    renamed by the whole-file-name rule (a frame keeps its frame suffix)."""
    gif = _gif(tmp_path / "a.gif", 2)
    png = tmp_path / "a_f000.png"
    Image.fromarray(image(8, 8)).save(png)
    jobs, _ = collect_inputs((str(tmp_path),), frames="all")  # the scan: a.gif first
    assert [str(j.stem) for j in jobs] == ["a_f000", "a_f001", "a_f000.png"]
    assert jobs[2].renamed_for == gif
    jobs, _ = collect_inputs((str(png), str(gif)), frames="all")
    assert [str(j.stem) for j in jobs] == ["a_f000", "a.gif_f000", "a_f001"]
    assert jobs[1].renamed_for == png


def _apng_claiming(path: Path, frames: int) -> Path:
    pages = [Image.fromarray(a) for a in _frames(2, 6, 6)]
    buffer = io.BytesIO()
    pages[0].save(buffer, format="PNG", save_all=True, append_images=pages[1:])
    data = buffer.getvalue()
    at = data.index(b"acTL")
    body = struct.pack(">II", frames, 0)
    crc = struct.pack(">I", zlib.crc32(b"acTL" + body))
    path.write_bytes(data[:at] + b"acTL" + body + crc + data[at + 16 :])
    return path


def test_a_frame_count_the_file_cannot_hold_is_refused(tmp_path: Path) -> None:
    path = _apng_claiming(tmp_path / "lie.png", 1_000_000)
    size = path.stat().st_size
    for frames in ("first", "all"):
        jobs, errors = collect_inputs((str(path),), frames=frames)
        assert jobs == []
        assert errors == [f"{path}: claims 1000000 frames in {size} bytes (corrupt frame count)"]
        assert errors[0].path == str(path)


def test_too_many_frames_for_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _gif(tmp_path / "a.gif", 3)
    monkeypatch.setattr(frames_module, "MAX_FRAMES", 2)
    jobs, errors = collect_inputs((str(path),), frames="all")
    assert jobs == [] and errors == [f"{path}: 3 frames is above the limit of 2 for --frames all"]
    jobs, errors = collect_inputs((str(path),))  # frame 0 alone is fine
    assert len(jobs) == 1 and errors == []


def test_a_count_pillow_cannot_read_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _gif(tmp_path / "a.gif", 3)

    def broken(self: object) -> int:
        raise IndexError("index out of range")  # what a damaged later block gives

    monkeypatch.setattr(GifImagePlugin.GifImageFile, "n_frames", property(broken))
    jobs, errors = collect_inputs((str(path),))
    assert jobs == []
    assert errors == [f"{path}: cannot count its frames (IndexError: index out of range)"]


def test_unreadable_headers_become_jobs_that_say_why(tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    (job,), errors = collect_inputs((str(junk),), frames="all")
    assert errors == [] and job.frames is None and job.frames_record() is None
    with pytest.raises(UserError, match="not an image Pillow can read"):
        job.load(1 << 20)


# --- fcnseg segment ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_package(tmp_path_factory.mktemp("pkg") / "tiny-pynq-z2")


def _mask(path: Path) -> np.ndarray:
    with Image.open(path) as mask:
        return np.asarray(mask)


def test_segment_frames_first_says_so_once(package_dir: Path, tmp_path: Path, capsys) -> None:
    gif = _gif(tmp_path / "a.gif", 3)
    out, summary = tmp_path / "out", tmp_path / "s.json"
    args = ["segment", str(gif), "--package", str(package_dir), "-o", str(out)]
    assert main([*args, "--json", str(summary)]) == 0
    err = capsys.readouterr().err
    assert err.count("frame 0 of 3 used (--frames all for every frame)") == 1
    seg = Segmenter.load(package_dir)
    np.testing.assert_array_equal(_mask(out / "a.png"), seg(load_image(gif)))
    assert sorted(p.name for p in out.glob("a*.png")) == ["a.png"]
    (record,) = json.loads(summary.read_text())["images"]
    assert record["frames"] == {"used": [0], "of": 3}
    assert main([*args, "--frames", "every"]) == 2  # a usage error
    assert "Invalid value for '--frames'" in capsys.readouterr().err


def test_segment_frames_all_one_mask_per_frame(package_dir: Path, tmp_path: Path, capsys) -> None:
    gif = _gif(tmp_path / "a.gif", 3)
    out, summary = tmp_path / "out", tmp_path / "s.json"
    args = ["segment", str(gif), "--package", str(package_dir), "-o", str(out), "--frames", "all"]
    assert main([*args, "--json", str(summary), "--scores"]) == 0
    seg = Segmenter.load(package_dir)
    masks = [_mask(out / f"a_f{k:03d}.png") for k in range(3)]
    for k, mask in enumerate(masks):
        np.testing.assert_array_equal(mask, seg(load_image(gif, frame=k)))
    scores = []
    for k in range(3):
        with np.load(out / f"a_f{k:03d}_scores.npz", allow_pickle=False) as npz:
            scores.append(npz["scores"])
    assert not np.array_equal(scores[0], scores[1])  # each its own frame's scores
    records = json.loads(summary.read_text())["images"]
    assert [r["frames"] for r in records] == [{"used": [k], "of": 3} for k in range(3)]
    assert "frame 0 of" not in capsys.readouterr().err
    # a re-run skips the finished frames and redoes only a missing one
    (out / "a_f001.png").unlink()
    assert main([*args, "--json", str(summary)]) == 0
    statuses = [r["status"] for r in json.loads(summary.read_text())["images"]]
    assert statuses[1] in ("done", "ok") and statuses[0] == statuses[2] == "skipped"
    np.testing.assert_array_equal(_mask(out / "a_f001.png"), masks[1])


def test_large_multipage_tiff_in_strips_takes_each_page(
    package_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages big enough for the strip path are each segmented from their own page."""
    monkeypatch.setattr(batch_module, "STREAM_PIXELS", 100)
    streamed: list[int | None] = []
    real_rows = Job.rows
    monkeypatch.setattr(Job, "rows", lambda job, m: streamed.append(job.frame) or real_rows(job, m))
    pages = [image(24, 40, seed=k) for k in range(3)]
    path = _tiff(tmp_path / "big.tif", [(Image.fromarray(p), 1) for p in pages])
    out = tmp_path / "out"
    args = ["segment", str(path), "--package", str(package_dir), "-o", str(out), "--frames", "all"]
    assert main([*args, "--scores"]) == 0
    assert streamed == [0, 1, 2]  # each page went the strip path, as its own frame
    seg = Segmenter.load(package_dir)
    for k, page in enumerate(pages):
        np.testing.assert_array_equal(_mask(out / f"big_f{k:03d}.png"), seg(page))


# --- damaged multi-frame files -----------------------------------------------------------------


def _multi(fmt: str) -> bytes:
    pages = [Image.fromarray(a) for a in _frames(3, 9, 13)]
    buffer = io.BytesIO()
    if fmt == "GIF":
        pages = [p.quantize(16) for p in pages]
    extra = {"lossless": True} if fmt == "WEBP" else {}
    pages[0].save(buffer, format=fmt, save_all=True, append_images=pages[1:], **extra)
    return buffer.getvalue()


MULTI = {fmt: _multi(fmt) for fmt in ("GIF", "TIFF", "PNG", "WEBP")}


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A multi-frame file with a few bytes changed, a run inserted, or its tail cut."""
    data = bytearray(MULTI[draw(st.sampled_from(sorted(MULTI)))])
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "insert", "truncate"]))
        if kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif at > 0:
            del data[at:]
    return bytes(data)


@settings(
    max_examples=120,
    deadline=2000,  # ms: a runaway count or decode fails
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
@given(data=damaged())
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_damaged_multiframe_files_give_frames_or_one_line(data: bytes, tmp_path: Path) -> None:
    """Counting and decoding every frame of a damaged file: RGB frames or one line each."""
    path = tmp_path / "damaged.img"
    path.write_bytes(data)
    jobs, errors = collect_inputs((str(path),), frames="all")
    assert all(isinstance(e, InputError) and e.startswith(f"{path}: ") for e in errors)
    assert all("\n" not in e for e in errors) and len(jobs) <= frames_module.MAX_FRAMES
    for job in jobs:
        try:
            rgb = job.load(1 << 20)
        except UserError as error:
            assert str(error).startswith(str(path)) and "\n" not in str(error)
            continue
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
