"""``fcnseg video`` (issue 19): frames in, the same masks as ``fcnseg segment`` out.

Exactness: a generated video in a lossless codec (FFV1 in Matroska) whose frames are known; the
mask of frame k, byte for byte, is the mask ``fcnseg segment`` writes for frame k saved as a PNG,
and a lossless overlay video holds, pixel for pixel, the overlay of each frame. Image sequences
likewise, in natural order. Then the options (``--size``, ``--hud``, ``--areas``), the notes and
the refusals (one line, exit 2), and the host's import path without PyAV.
"""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.cli import main
from fcnseg.host.images import ClassTable, overlay
from fcnseg.host.segmenter import Segmenter
from tests.helpers.images import image
from tests.helpers.packages import tiny_package

av = pytest.importorskip("av", reason="the [video] extra (PyAV) is not installed")

from fcnseg.host.video.hud import Rate, draw_hud  # noqa: E402
from fcnseg.host.video.sinks import write_video  # noqa: E402
from fcnseg.host.video.sources import natural_key, open_source  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
HEIGHT, WIDTH, N = 37, 53, 9  # odd sizes: the 4:2:0 codecs need even ones, FFV1 does not


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_package(tmp_path_factory.mktemp("pkg") / "tiny-pynq-z2")


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return [image(HEIGHT, WIDTH, seed=k) for k in range(N)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, frames: list[np.ndarray]) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mkv"
    assert write_video(path, frames, Fraction(12)) == N
    return path


def read_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_lossless_clip_decodes_to_its_frames(clip: Path, frames: list[np.ndarray]) -> None:
    decoded = read_frames(clip)
    assert len(decoded) == N
    for k, (got, want) in enumerate(zip(decoded, frames, strict=True)):
        np.testing.assert_array_equal(got, want, err_msg=f"frame {k}")
    with open_source(str(clip)) as source:
        assert source.fps == 12 and source.size == (WIDTH, HEIGHT) and not source.live
        assert [f.index for f in source] == list(range(N))


def test_masks_equal_segment_of_each_frame_byte_for_byte(
    package: Path, clip: Path, frames: list[np.ndarray], tmp_path: Path, capsys
) -> None:
    masks, out = tmp_path / "masks", tmp_path / "overlay.mkv"
    code = main(["video", str(clip), "-o", str(out), "--masks", str(masks)]
                + ["--package", str(package)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"video: {N} frame(s)" in err and "0 dropped" in err
    stills = tmp_path / "stills"
    stills.mkdir()
    for k, rgb in enumerate(frames):
        Image.fromarray(rgb).save(stills / f"frame_{k:06d}.png")
    seg_out = tmp_path / "segment"
    assert main(["segment", str(stills), "-o", str(seg_out), "--package", str(package)]) == 0
    for k in range(N):
        name = f"frame_{k:06d}.png"
        assert (masks / name).read_bytes() == (seg_out / name).read_bytes(), name
    assert (masks / "classes.json").read_bytes() == (seg_out / "classes.json").read_bytes()
    assert not (masks / f"frame_{N:06d}.png").exists()
    # the overlay video (FFV1: lossless) is the overlay of each frame, pixel for pixel
    seg = Segmenter.load(package)
    table = ClassTable.of(len(seg.output_scale), seg.classes, seg.palette)
    clear = tuple(i for i, name in enumerate(table.names) if name == "background")
    pictures = read_frames(out)
    assert len(pictures) == N
    for k, rgb in enumerate(frames):
        want = overlay(rgb, seg(rgb), seg.palette, 0.5, clear)
        np.testing.assert_array_equal(pictures[k], want, err_msg=f"overlay of frame {k}")


def test_image_sequence_in_natural_order(package: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "seq"
    folder.mkdir()
    pictures = {k: image(24 + k, 31, seed=40 + k) for k in (1, 2, 10)}  # mixed sizes
    for k, rgb in pictures.items():
        Image.fromarray(rgb).save(folder / f"shot{k}.png")
    (folder / "notes.txt").write_text("not a frame")
    assert [p.name for p in sorted(folder.glob("shot*"), key=natural_key)] == [
        "shot1.png", "shot2.png", "shot10.png"
    ]  # fmt: skip
    masks = tmp_path / "masks"
    for spec in (str(folder), str(folder / "shot*.png")):
        code = main(["video", spec, "--masks", str(masks), "--package", str(package)]
                    + ["--overwrite"])  # fmt: skip
        assert code == 0, capsys.readouterr().err
        seg = Segmenter.load(package)
        for index, k in enumerate((1, 2, 10)):
            with Image.open(masks / f"frame_{index:06d}.png") as mask:
                np.testing.assert_array_equal(np.asarray(mask), seg(pictures[k]))


def test_areas_size_and_hud(package: Path, clip: Path, tmp_path: Path, capsys) -> None:
    areas, masks, out = tmp_path / "areas.json", tmp_path / "m", tmp_path / "small.mp4"
    code = main(
        ["video", str(clip), "-o", str(out), "--masks", str(masks), "--areas", str(areas)]
        + ["--size", "40", "30", "--hud", "--package", str(package), "--max-frames", "5"]
        + ["--capture-size", "8", "8"]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"note: {clip}: not a camera, --capture-size ignored" in err
    document = json.loads(areas.read_text())
    assert document["complete"] is True and document["fps"] == 12.0
    assert [f["index"] for f in document["frames"]] == list(range(5))
    for entry in document["frames"]:
        with Image.open(masks / f"frame_{entry['index']:06d}.png") as mask:
            labels = np.asarray(mask)
        assert labels.shape == (30, 40) and entry["size"] == [40, 30]
        assert entry["pixels"] == np.bincount(labels.ravel(), minlength=3).tolist()
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (40, 30)
        assert sum(1 for _ in container.decode(stream)) == 5


def test_hud_draws_in_the_corner_only() -> None:
    picture = np.full((120, 160, 3), 128, dtype=np.uint8)
    drawn = draw_hud(picture, " 12.5 fps")
    assert (picture == 128).all()  # the input is kept
    changed = np.argwhere((drawn != picture).any(axis=2))
    assert len(changed) > 0 and changed[:, 0].max() < 30 and changed[:, 1].max() < 100
    rate = Rate(window=4)
    assert rate.tick(0.0) == 0.0
    assert [rate.tick(t) for t in (0.1, 0.2)] == pytest.approx([10.0, 10.0])


def test_audio_is_dropped_with_a_note(package: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "talk.mkv"
    with av.open(str(path), "w") as container:
        video = container.add_stream("ffv1", rate=10)
        video.width, video.height, video.pix_fmt = 32, 24, "bgr0"
        audio = container.add_stream("pcm_s16le", rate=8000)
        for k in range(3):
            frame = av.VideoFrame.from_ndarray(image(24, 32, seed=k), format="rgb24")
            frame.pts = k
            container.mux(video.encode(frame))
        samples = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono"
        )
        samples.sample_rate, samples.pts = 8000, 0
        container.mux(audio.encode(samples))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    code = main(["video", str(path), "--areas", str(tmp_path / "a.json")]
                + ["--package", str(package)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert "audio dropped" in err and "video: 3 frame(s)" in err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["{clip}"], "nothing to write"),
        (["{clip}", "-o", "{tmp}/x.gif"], "output videos end in .mp4"),
        (["{tmp}/missing.mp4", "-o", "{tmp}/x.mp4"], "no such file, folder or camera"),
        (["camera:97", "-o", "{tmp}/x.mp4"], "no such camera (/dev/video97"),
        (["{tmp}/garbage.mp4", "-o", "{tmp}/x.mp4"], "not a video FFmpeg can read"),
        (["{tmp}", "-o", "{tmp}/x.mp4"], "no image files found"),
        (["{clip}", "-o", "{tmp}/exists.mp4"], "exists: use --overwrite"),
    ],
)
def test_refusals_are_one_line_exit_2(
    package: Path, clip: Path, tmp_path: Path, capsys, args: list[str], says: str
) -> None:
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    (tmp_path / "exists.mp4").write_bytes(b"keep me")
    argv = [a.format(clip=clip, tmp=tmp_path) for a in args] + ["--package", str(package)]
    code = main(["video", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("fcnseg: error: ") and says in err, err
    assert not (tmp_path / "x.mp4").exists()
    assert (tmp_path / "exists.mp4").read_bytes() == b"keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries


def test_without_pyav_one_line_names_the_extra(
    clip: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError(name="av")
    monkeypatch.setitem(sys.modules, "cv2", None)  # and no cv2 to fall back on
    code = main(["video", str(clip), "-o", str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "pip install 'fcnseg[video]'" in err and "python3-opencv" in err, err
    # asked for by name, PyAV's absence is the console script's line naming the extra
    code = main(["video", str(clip), "-o", str(tmp_path / "x.mp4"), "--video-library", "av"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "pip install 'fcnseg[video]'" in err and "needs av" in err, err
    assert not (tmp_path / "x.mp4").exists()


def test_the_command_imports_no_video_library_until_a_video_is_opened() -> None:
    code = (
        "import sys; import fcnseg.host.video.cli, fcnseg.host.video.run, "
        "fcnseg.host.video.sinks, fcnseg.host.video.sources, fcnseg.host.video.hud, "
        "fcnseg.host.video.library, fcnseg.host.video.pyav, fcnseg.host.video.opencv; "
        "from fcnseg.cli import cli; cli.get_command(None, 'video'); "
        "print(sorted(m for m in ('av', 'cv2', 'torch') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_capture_size_is_the_v4l2_video_size_option(monkeypatch) -> None:
    """PyAV asks the camera with the v4l2 input's ``video_size``; the stream says what the
    driver chose (a fake ``av.open``: there is no camera here)."""
    from fcnseg.host.video import pyav

    calls: list[tuple[str, dict]] = []

    class Stream:
        average_rate, guessed_rate = Fraction(30), None

        class codec_context:  # noqa: N801 (PyAV's attribute)
            width, height = 352, 288

    class Container:
        class streams:  # noqa: N801
            video = [Stream()]

        def close(self) -> None:
            pass

    def fake_open(device: str, format: str, options: dict) -> Container:
        calls.append((format, options))
        return Container()

    monkeypatch.setattr(pyav, "import_av", lambda: type("av", (), {"open": fake_open}))
    camera = pyav.CameraSource("/dev/video3", (320, 240))
    assert calls == [("v4l2", {"video_size": "320x240"})]
    assert camera.size == (352, 288) and camera.fps == 30
    assert camera.notes == (
        "/dev/video3: asked for 320x240, the camera delivers 352x288 (its nearest mode)",
    )
    pyav.CameraSource("/dev/video3", None)
    assert calls[-1] == ("v4l2", {})
