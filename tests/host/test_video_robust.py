"""``fcnseg video`` when things go wrong (issue 19, item 4): what is left behind is valid.

- A truncated file and a corrupt one: one error line, exit 1, and the outputs hold exactly the
  frames FFmpeg could decode (the video reopened and counted, one mask each).
- A camera that stops delivering mid-stream ends the run cleanly (exit 0, a note), its frames
  written; a camera faster than the accelerator has its stale frames dropped and counted.
- Ctrl-C (a real subprocess and SIGINT): exit 130, one line, no traceback; the video is
  finalised with as many frames as there are masks; no temporary file stays.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.cli import main
from fcnseg.host.images import ClassTable
from fcnseg.host.segmenter import Segmenter
from tests.helpers.images import image
from tests.helpers.packages import tiny_package

av = pytest.importorskip("av", reason="the [video] extra (PyAV) is not installed")

from fcnseg.host.video.run import VideoRun  # noqa: E402
from fcnseg.host.video.sinks import AreasSink, MaskSink, VideoSink, write_video  # noqa: E402
from fcnseg.host.video.sources import Frame, LatestFrame, Source  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_package(tmp_path_factory.mktemp("pkg") / "tiny-pynq-z2")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mkv"
    write_video(path, (image(48, 64, seed=k) for k in range(40)), Fraction(10))
    return path


def decodable(path: Path) -> int:
    """Frames FFmpeg decodes from ``path`` before it ends or fails."""
    count = 0
    try:
        with av.open(str(path)) as container:
            for _ in container.decode(video=0):
                count += 1
    except av.FFmpegError:
        pass
    return count


def frames_in(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def masks_in(folder: Path) -> list[Path]:
    return sorted(folder.glob("frame_*.png"))


def no_temporaries(*folders: Path) -> bool:
    return not [p for f in folders for p in f.iterdir() if p.name.startswith(".")]


def _broken(clip: Path, tmp_path: Path, how: str) -> Path:
    data = bytearray(clip.read_bytes())
    middle = len(data) // 2
    if how == "truncated":
        data = data[:middle]
    else:
        data[middle : middle + 3000] = np.random.default_rng(1).bytes(3000)
    path = tmp_path / f"{how}.mkv"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(("how", "says"), [("truncated", "truncated?"), ("corrupt", "broken")])
def test_a_broken_file_keeps_every_frame_decoded(
    package: Path, clip: Path, tmp_path: Path, capsys, how: str, says: str
) -> None:
    broken = _broken(clip, tmp_path, how)
    expected = decodable(broken)
    assert 0 < expected < 40
    out, masks = tmp_path / "out.mp4", tmp_path / "masks"
    code = main(["video", str(broken), "-o", str(out), "--masks", str(masks)]
                + ["--package", str(package)])  # fmt: skip
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"fcnseg: {broken}")]
    assert code == 1, err
    assert len(lines) == 1 and says in lines[0], err
    assert f"the {expected} frame(s)" in lines[0] and "Traceback" not in err
    assert frames_in(out) == expected  # the output video is valid: it reopens, every frame
    assert len(masks_in(masks)) == expected
    assert no_temporaries(tmp_path, masks)


class FakeCamera(Source):
    """Frames as fast as ``period`` allows, until ``fail_after`` (then it raises, like a
    camera unplugged) or ``count``."""

    def __init__(self, count: int, period: float = 0.0, fail_after: int | None = None) -> None:
        self.name, self.fps, self.size = "fake-camera", Fraction(30), (40, 30)
        self.count, self.period, self.fail_after = count, period, fail_after
        self.delivered = 0
        self.pictures = [image(30, 40, seed=k) for k in range(7)]  # made up front: fast

    def frames(self) -> Iterator[Frame]:
        for k in range(self.count):
            if self.fail_after is not None and k == self.fail_after:
                raise OSError("No such device")
            time.sleep(self.period)
            self.delivered += 1
            yield Frame(k, k / 30, self.pictures[k % 7])


def _run_live(package: Path, camera: Source, folder: Path) -> tuple[VideoRun, object]:
    seg = Segmenter.load(package)
    table = ClassTable.of(len(seg.output_scale), seg.classes, seg.palette)
    source = LatestFrame(camera)
    sinks = [
        VideoSink(folder / "live.mp4", source.fps),
        MaskSink(folder / "masks", seg.palette, table, None),
        AreasSink(folder / "areas.json", table.names, "fake-camera", source.fps),
    ]
    run = VideoRun(seg, source, sinks, progress=False)
    return run, run.run()


def test_a_camera_that_disappears_ends_the_run_cleanly(package: Path, tmp_path: Path) -> None:
    camera = FakeCamera(100, period=0.03, fail_after=12)
    _, summary = _run_live(package, camera, tmp_path)
    assert summary.status == 0 and summary.error is None
    assert summary.note is not None and "stopped delivering frames" in summary.note
    assert 0 < summary.frames <= 12 and summary.frames + summary.dropped == 12
    assert frames_in(tmp_path / "live.mp4") == summary.frames
    assert len(masks_in(tmp_path / "masks")) == summary.frames


def test_a_fast_camera_has_stale_frames_dropped(package: Path, tmp_path: Path) -> None:
    camera = FakeCamera(300, period=0.001)  # ~1000 frames/s, far above the simulator's rate
    _, summary = _run_live(package, camera, tmp_path)
    assert summary.status == 0 and summary.note is None
    assert summary.dropped > 0 and summary.frames + summary.dropped == camera.delivered == 300
    indices = [int(p.stem.split("_")[1]) for p in masks_in(tmp_path / "masks")]
    assert len(indices) == summary.frames and indices == sorted(indices)
    assert indices[-1] == 299  # the newest frame is never lost at the end


def test_ctrl_c_finalises_the_outputs(package: Path, tmp_path: Path) -> None:
    clip = tmp_path / "long.mkv"
    write_video(clip, (image(64, 96, seed=k % 5) for k in range(400)), Fraction(25))
    out, masks = tmp_path / "out" / "video.mp4", tmp_path / "masks"
    cmd = [sys.executable, "-m", "fcnseg.cli", "video", str(clip), "-o", str(out)]
    cmd += ["--masks", str(masks), "--package", str(package)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.append(proc.stderr.read()), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(masks_in(masks) if masks.is_dir() else []) < 5:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=60)
    reader.join(timeout=10)
    err = stderr[0]
    assert code == 130, err
    assert "interrupted after" in err and "Traceback" not in err
    written = len(masks_in(masks))
    assert 5 <= written < 400
    assert frames_in(out) == written
    assert f"video: {written} frame(s)" in err
    assert no_temporaries(out.parent, masks)
    with Image.open(masks_in(masks)[-1]) as last:
        assert last.size == (96, 64)  # the last mask is whole
