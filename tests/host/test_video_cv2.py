"""``fcnseg video --video-library cv2`` (issue 19): the Pynq-Z2's path, where PyAV has no wheels
and the PYNQ image has Debian's cv2.

Here cv2 is ``opencv-python-headless`` (requirements/board.lock pins a stand-in for Debian's
build); the tests skip, with the reason, only where cv2 is absent. What is checked:

- exactness: a lossless clip written by cv2 itself (FFV1 in Matroska) decodes to its frames,
  and the mask of frame k is, byte for byte, the mask ``fcnseg segment`` writes for frame k
  saved as a PNG; the FFV1 overlay video is ``overlay()`` of each frame, pixel for pixel; an odd
  frame size (cv2 writes even ones) says so in a note and the video is the overlay cropped;
- BGR is turned into RGB exactly; frame rates cv2 cannot report fall back with a note;
- a truncated file: one line, exit 1, the output reopens with every frame decoded before it;
- a camera that stops mid-stream (a fake ``VideoCapture``, and a real cv2 capture on a file
  posing as a camera) ends the run cleanly with a note; the capture size asked and delivered;
- ``--video-library cv2`` without cv2 is one line (this one runs everywhere).
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fcnseg.cli import main
from fcnseg.host.images import ClassTable, overlay
from fcnseg.host.segmenter import Segmenter
from fcnseg.host.video.library import available
from tests.helpers.images import image
from tests.helpers.packages import tiny_package

needs_cv2 = pytest.mark.skipif(
    not available("cv2"), reason="cv2 is not installed (the board's Debian python3-opencv)"
)
HEIGHT, WIDTH, N = 36, 52, 9  # even: cv2 writes even sizes only (the odd case is its own test)


@pytest.fixture(scope="module")
def cv2() -> Any:
    return pytest.importorskip("cv2", reason="cv2 is not installed")


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_package(tmp_path_factory.mktemp("pkg") / "tiny-pynq-z2")


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return [image(HEIGHT, WIDTH, seed=k) for k in range(N)]


@pytest.fixture(scope="module")
def clip(cv2: Any, tmp_path_factory: pytest.TempPathFactory, frames: list[np.ndarray]) -> Path:
    from fcnseg.host.video.sinks import write_video

    path = tmp_path_factory.mktemp("clip") / "clip.mkv"
    assert write_video(path, frames, Fraction(12), "cv2") == N
    return path


def cv2_frames(cv2: Any, path: Path) -> list[np.ndarray]:
    """Every frame cv2 reads from ``path``, as RGB."""
    capture = cv2.VideoCapture(str(path))
    got = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        got.append(bgr[:, :, ::-1])
    capture.release()
    return got


def masks_in(folder: Path) -> list[Path]:
    return sorted(folder.glob("frame_*.png"))


def no_temporaries(*folders: Path) -> bool:
    return not [p for f in folders for p in f.iterdir() if p.name.startswith(".")]


@needs_cv2
def test_rgb_of_reverses_the_channels_exactly() -> None:
    from fcnseg.host.video.opencv import frame_rate, rgb_of

    bgr = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    rgb = rgb_of(bgr)
    assert rgb.flags.c_contiguous and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], bgr[..., 2])
    np.testing.assert_array_equal(rgb[..., 2], bgr[..., 0])
    np.testing.assert_array_equal(rgb[..., 1], bgr[..., 1])
    grey = np.array([[0, 255]], dtype=np.uint8)
    assert rgb_of(grey).tolist() == [[[0, 0, 0], [255, 255, 255]]]
    assert frame_rate(29.97002997) == Fraction(30000, 1001) and frame_rate(25.0) == 25
    assert [frame_rate(v) for v in (0.0, float("nan"), -1.0, 90000.0)] == [None] * 4


@needs_cv2
def test_cv2_clip_decodes_to_its_frames(cv2: Any, clip: Path, frames: list[np.ndarray]) -> None:
    from fcnseg.host.video.sources import open_source

    with open_source(str(clip), library="cv2") as source:
        assert source.fps == 12 and source.size == (WIDTH, HEIGHT) and not source.live
        decoded = list(source)
    assert [f.index for f in decoded] == list(range(N))
    assert [round(f.time_s * 12) for f in decoded] == list(range(N))
    for k, (got, want) in enumerate(zip(decoded, frames, strict=True)):
        np.testing.assert_array_equal(got.rgb, want, err_msg=f"frame {k}")


@needs_cv2
def test_masks_equal_segment_of_each_frame_byte_for_byte(
    cv2: Any, package: Path, clip: Path, frames: list[np.ndarray], tmp_path: Path, capsys
) -> None:
    masks, out = tmp_path / "masks", tmp_path / "overlay.mkv"
    code = main(["video", str(clip), "-o", str(out), "--masks", str(masks)]
                + ["--package", str(package), "--video-library", "cv2"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"video: {N} frame(s)" in err and "0 dropped" in err and "note" not in err
    stills = tmp_path / "stills"
    stills.mkdir()
    decoded = cv2_frames(cv2, clip)  # frame k as the same library decodes it
    assert len(decoded) == N
    for k, rgb in enumerate(decoded):
        Image.fromarray(np.ascontiguousarray(rgb)).save(stills / f"frame_{k:06d}.png")
    seg_out = tmp_path / "segment"
    assert main(["segment", str(stills), "-o", str(seg_out), "--package", str(package)]) == 0
    for k in range(N):
        name = f"frame_{k:06d}.png"
        assert (masks / name).read_bytes() == (seg_out / name).read_bytes(), name
    assert (masks / "classes.json").read_bytes() == (seg_out / "classes.json").read_bytes()
    assert not (masks / f"frame_{N:06d}.png").exists()
    seg = Segmenter.load(package)
    table = ClassTable.of(len(seg.output_scale), seg.classes, seg.palette)
    clear = tuple(i for i, name in enumerate(table.names) if name == "background")
    pictures = cv2_frames(cv2, out)
    assert len(pictures) == N
    for k, rgb in enumerate(frames):
        want = overlay(rgb, seg(rgb), seg.palette, 0.5, clear)
        np.testing.assert_array_equal(pictures[k], want, err_msg=f"overlay of frame {k}")


@needs_cv2
def test_an_odd_size_is_cropped_in_the_video_only_with_a_note(
    cv2: Any, package: Path, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "seq"
    folder.mkdir()
    pictures = [image(37, 53, seed=60 + k) for k in range(3)]
    for k, rgb in enumerate(pictures):
        Image.fromarray(rgb).save(folder / f"f{k}.png")
    out, masks = tmp_path / "odd.mkv", tmp_path / "masks"
    code = main(["video", str(folder), "-o", str(out), "--masks", str(masks)]
                + ["--package", str(package), "--video-library", "cv2"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    notes = [line for line in err.splitlines() if "even sizes only" in line]
    assert len(notes) == 1 and "52x36 of the 53x37 frames" in notes[0], err
    seg = Segmenter.load(package)
    table = ClassTable.of(len(seg.output_scale), seg.classes, seg.palette)
    clear = tuple(i for i, name in enumerate(table.names) if name == "background")
    written = cv2_frames(cv2, out)
    assert len(written) == 3
    for k, rgb in enumerate(pictures):
        labels = seg(rgb)
        with Image.open(masks / f"frame_{k:06d}.png") as mask:
            np.testing.assert_array_equal(np.asarray(mask), labels)  # every pixel
        want = overlay(rgb, labels, seg.palette, 0.5, clear)[:36, :52]
        np.testing.assert_array_equal(written[k], want, err_msg=f"frame {k}")


@needs_cv2
def test_pyav_and_cv2_read_a_lossless_clip_alike(
    clip: Path, frames: list[np.ndarray], tmp_path: Path
) -> None:
    """A clip written by the other library (FFV1 either way) decodes to the same frames."""
    pytest.importorskip("av", reason="PyAV is not installed")
    from fcnseg.host.video.sinks import write_video
    from fcnseg.host.video.sources import open_source

    by_av = tmp_path / "av.mkv"
    write_video(by_av, frames, Fraction(12), "av")
    for path, reader in ((by_av, "cv2"), (clip, "av")):
        with open_source(str(path), library=reader) as source:
            got = [f.rgb for f in source]
        assert len(got) == N, (path, reader)
        for k, (a, b) in enumerate(zip(got, frames, strict=True)):
            np.testing.assert_array_equal(a, b, err_msg=f"{path.name} through {reader}: {k}")


@needs_cv2
def test_a_truncated_file_keeps_every_frame_decoded(
    cv2: Any, package: Path, tmp_path: Path, capsys
) -> None:
    from fcnseg.host.video.sinks import write_video

    whole = tmp_path / "whole.mkv"
    write_video(whole, (image(48, 64, seed=k) for k in range(40)), Fraction(10), "cv2")
    data = whole.read_bytes()
    broken = tmp_path / "truncated.mkv"
    broken.write_bytes(data[: len(data) // 2])
    expected = len(cv2_frames(cv2, broken))
    assert 0 < expected < 40
    out, masks = tmp_path / "out" / "o.avi", tmp_path / "masks"
    code = main(["video", str(broken), "-o", str(out), "--masks", str(masks)]
                + ["--package", str(package), "--video-library", "cv2"])  # fmt: skip
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"fcnseg: {broken}")]
    assert code == 1, err
    assert len(lines) == 1 and "truncated?" in lines[0] and "of the 40 frame(s)" in lines[0], err
    assert f"the {expected} frame(s)" in lines[0] and "Traceback" not in err
    assert len(cv2_frames(cv2, out)) == expected  # MJPG in AVI, reopened: every frame
    assert len(masks_in(masks)) == expected
    assert no_temporaries(tmp_path, out.parent, masks)


class FakeCapture:
    """A ``cv2.VideoCapture`` of a camera: ``modes`` it can deliver (it picks the nearest to
    what is set, as a driver does), ``frames`` frames, then ``read()`` fails (unplugged)."""

    def __init__(self, frames: int, modes: list[tuple[int, int]]) -> None:
        import cv2

        self.cv2, self.left, self.modes = cv2, frames, modes
        self.mode = modes[0]
        self.asked: dict[int, float] = {}
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 (cv2's name)
        return True

    def set(self, prop: int, value: float) -> bool:
        self.asked[prop] = value
        want = (
            self.asked.get(self.cv2.CAP_PROP_FRAME_WIDTH, self.mode[0]),
            self.asked.get(self.cv2.CAP_PROP_FRAME_HEIGHT, self.mode[1]),
        )
        self.mode = min(self.modes, key=lambda m: abs(m[0] - want[0]) + abs(m[1] - want[1]))
        return True

    def get(self, prop: int) -> float:
        return 30.0 if prop == self.cv2.CAP_PROP_FPS else 0.0

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.left == 0:
            return False, None
        self.left -= 1
        width, height = self.mode
        return True, image(height, width, seed=self.left)[:, :, ::-1].copy()

    def release(self) -> None:
        self.released = True


@needs_cv2
def test_capture_size_asked_and_delivered_with_a_note() -> None:
    import cv2

    from fcnseg.host.video.opencv import Cv2CameraSource

    fake = FakeCapture(3, modes=[(640, 480), (352, 288), (160, 120)])
    camera = Cv2CameraSource("/dev/video7", (320, 240), capture=fake)
    assert fake.asked[cv2.CAP_PROP_FRAME_WIDTH] == 320
    assert fake.asked[cv2.CAP_PROP_FRAME_HEIGHT] == 240
    assert fake.asked[cv2.CAP_PROP_BUFFERSIZE] == 1
    assert camera.size == (352, 288) and camera.fps == 30
    assert camera.notes == (
        "/dev/video7: asked for 320x240, the camera delivers 352x288 (its nearest mode)",
    )
    same = Cv2CameraSource("/dev/video7", (160, 120), capture=FakeCapture(3, [(160, 120)]))
    assert same.size == (160, 120) and same.notes == ()


def _run_camera(package: Path, camera: Any, folder: Path) -> Any:
    from fcnseg.host.video.run import VideoRun
    from fcnseg.host.video.sinks import MaskSink, VideoSink
    from fcnseg.host.video.sources import LatestFrame

    seg = Segmenter.load(package)
    table = ClassTable.of(len(seg.output_scale), seg.classes, seg.palette)
    source = LatestFrame(camera)
    sinks = [
        VideoSink(folder / "live.avi", source.fps, "cv2"),
        MaskSink(folder / "masks", seg.palette, table, None),
    ]
    return VideoRun(seg, source, sinks, progress=False).run()


@needs_cv2
def test_a_camera_that_stops_ends_the_run_cleanly(
    cv2: Any, package: Path, clip: Path, tmp_path: Path
) -> None:
    from fcnseg.host.video.opencv import Cv2CameraSource

    fake = FakeCapture(12, modes=[(40, 30)])
    summary = _run_camera(package, Cv2CameraSource("/dev/video7", None, capture=fake), tmp_path)
    assert summary.status == 0 and summary.error is None and fake.released
    assert summary.note is not None and "stopped delivering frames" in summary.note
    assert "after 12 frame(s)" in summary.note
    assert 0 < summary.frames <= 12 and summary.frames + summary.dropped == 12
    assert len(cv2_frames(cv2, tmp_path / "live.avi")) == summary.frames
    assert len(masks_in(tmp_path / "masks")) == summary.frames
    # a real cv2 capture: a file posing as a camera, whose end is the camera going away
    posing = tmp_path / "posing"
    real = cv2.VideoCapture(str(clip))
    summary = _run_camera(package, Cv2CameraSource(str(clip), None, capture=real), posing)
    assert summary.status == 0 and "stopped delivering frames" in (summary.note or "")
    assert 0 < summary.frames <= N and summary.frames + summary.dropped == N
    assert len(cv2_frames(cv2, posing / "live.avi")) == summary.frames
    assert no_temporaries(tmp_path, posing)


def test_video_library_cv2_without_cv2_is_one_line(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)
    clip = tmp_path / "clip.mkv"
    clip.write_bytes(b"not read: the library is refused first")
    code = main(["video", str(clip), "-o", str(tmp_path / "x.avi"), "--video-library", "cv2"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("fcnseg: error: "), err
    assert "--video-library cv2: cv2 is not importable" in err and "python3-opencv" in err
    assert not (tmp_path / "x.avi").exists() and no_temporaries(tmp_path)


@needs_cv2
def test_capture_size_from_the_command_line(
    package: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--capture-size`` reaches the camera and the note what it delivers; ``--size`` is still
    the size frames are segmented at. The device is a fake (there is no camera here)."""
    import cv2

    from fcnseg.host.video import sources

    device = tmp_path / "video7"
    device.write_bytes(b"")  # exists, as /dev/video7 would
    fake = FakeCapture(6, modes=[(640, 480), (352, 288)])
    opened: list[tuple[str, int]] = []

    def capture(path: str, api: int) -> FakeCapture:
        opened.append((path, api))
        return fake

    monkeypatch.setattr(sources, "camera_device", lambda spec: str(device))
    monkeypatch.setattr(cv2, "VideoCapture", capture)
    masks, out = tmp_path / "masks", tmp_path / "live.avi"
    code = main(["video", "camera:7", "--masks", str(masks), "--capture-size", "320", "240"]
                + ["-o", str(out)]
                + ["--size", "40", "30", "--package", str(package)]
                + ["--video-library", "cv2"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert opened == [(str(device), cv2.CAP_V4L2)]
    assert (fake.asked[cv2.CAP_PROP_FRAME_WIDTH], fake.asked[cv2.CAP_PROP_FRAME_HEIGHT]) == (
        320,
        240,
    )
    notes = [line for line in err.splitlines() if line.startswith("fcnseg: note:")]
    assert notes[0] == (
        f"fcnseg: note: {device}: asked for 320x240, the camera delivers 352x288 (its nearest mode)"
    ), err
    assert "stopped delivering frames" in notes[-1]
    assert any("writes frames back to back" in n for n in notes), err  # no timestamps in cv2
    monkeypatch.undo()  # the real VideoCapture again, to reopen the video
    assert len(cv2_frames(cv2, out)) == len(list(masks.glob("frame_*.png")))
    written = sorted(masks.glob("frame_*.png"))
    assert written and all(Image.open(p).size == (40, 30) for p in written)


@needs_cv2
def test_refusals_through_cv2_are_one_line(package: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    for args, says in (
        ([str(tmp_path / "garbage.mp4"), "-o", str(tmp_path / "x.mp4")], "not a video cv2 can"),
        ([str(tmp_path), "-o", str(tmp_path / "x.gif")], "output videos end in .mp4"),
    ):
        code = main(["video", *args, "--package", str(package), "--video-library", "cv2"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "x.mp4").exists() and no_temporaries(tmp_path)


@needs_cv2
def test_mp4_is_h264_where_the_build_has_it(cv2: Any, tmp_path: Path) -> None:
    from fcnseg.host.video.opencv import Cv2Encoder

    probe = cv2.VideoWriter(str(tmp_path / "p.mp4"), cv2.VideoWriter_fourcc(*"avc1"), 10, (8, 8))
    has_h264 = probe.isOpened()
    probe.release()
    encoder = Cv2Encoder(str(tmp_path / "o.mp4"), Fraction(10), 64, 48)
    encoder.write(image(48, 64), 0)
    encoder.close()
    assert encoder.fourcc == ("avc1" if has_h264 else "mp4v")
    assert len(cv2_frames(cv2, tmp_path / "o.mp4")) == 1
