"""Ctrl-C while ``fcnseg video`` is writing a frame (issue 19, item 4), with each video library.

A real subprocess runs the command with the library's encoder slowed down: after the encoder
has taken frame 3 (and before the masks of that frame are written) it sleeps, and the test
sends SIGINT then. The frame being written is finished in every sink before the run stops: exit
130, one "interrupted" line and no traceback, the video reopens with exactly 4 frames, there
are exactly 4 masks, and no temporary file is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest
from PIL import Image

from fcnseg.host.video.library import available
from tests.helpers.images import image
from tests.helpers.packages import tiny_package

ROOT = Path(__file__).resolve().parents[2]
#: the frame during whose write SIGINT arrives (0-based)
SLOW_FRAME = 3
#: the subprocess: the command, with the encoder sleeping after it took frame SLOW_FRAME
SLOW_WRITE = """
import sys, time
from pathlib import Path
from importlib import import_module
module, name, marker, slow = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
encoder = getattr(import_module(module), name)
write, written = encoder.write, []
def slow_write(self, rgb, pts):
    write(self, rgb, pts)
    written.append(pts)
    if len(written) == slow + 1:
        marker.write_text("inside the write of frame %d" % slow)
        time.sleep(2)  # SIGINT arrives here; the handler returns and the sleep resumes
encoder.write = slow_write
from fcnseg.cli import main
raise SystemExit(main(sys.argv[5:]))
"""
LIBRARIES = [
    pytest.param(
        "av",
        "fcnseg.host.video.pyav",
        "AvEncoder",
        ".mp4",
        marks=pytest.mark.skipif(not available("av"), reason="PyAV is not installed"),
        id="av",
    ),
    pytest.param(
        "cv2",
        "fcnseg.host.video.opencv",
        "Cv2Encoder",
        ".avi",
        marks=pytest.mark.skipif(not available("cv2"), reason="cv2 is not installed"),
        id="cv2",
    ),
]


def frames_in(library: str, path: Path) -> int:
    """Frames ``library`` decodes from ``path``."""
    from fcnseg.host.video.sources import open_source

    with open_source(str(path), library=library) as source:
        return sum(1 for _ in source)


@pytest.mark.parametrize(("library", "module", "encoder", "suffix"), LIBRARIES)
def test_ctrl_c_during_a_frame_write_finishes_that_frame(
    tmp_path: Path, library: str, module: str, encoder: str, suffix: str
) -> None:
    from fcnseg.host.video.sinks import write_video

    package = tiny_package(tmp_path / "tiny-pynq-z2")
    clip = tmp_path / "long.mkv"
    write_video(clip, (image(48, 64, seed=k % 5) for k in range(200)), Fraction(25), library)
    out, masks, marker = tmp_path / "out" / f"video{suffix}", tmp_path / "masks", tmp_path / "in"
    cmd = [sys.executable, "-c", SLOW_WRITE, module, encoder, str(marker), str(SLOW_FRAME)]
    cmd += ["video", str(clip), "-o", str(out), "--masks", str(masks)]
    cmd += ["--package", str(package), "--video-library", library]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, "the run ended before it could be interrupted"
            assert time.monotonic() < deadline, "the slow write never came"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    done = SLOW_FRAME + 1
    assert [line for line in err.splitlines() if "interrupted" in line] == [
        f"fcnseg: interrupted after {done} frame(s); the outputs hold them"
    ], err
    assert f"video: {done} frame(s)" in err
    assert frames_in(library, out) == done  # valid: it reopens, a whole number of frames
    written = sorted(masks.glob("frame_*.png"))
    assert [p.name for p in written] == [f"frame_{k:06d}.png" for k in range(done)]
    with Image.open(written[-1]) as last:
        assert last.size == (64, 48)  # the mask of the frame being written is whole
    assert not [p for f in (out.parent, masks, tmp_path) for p in f.iterdir()
                if p.name.startswith(".")]  # fmt: skip
