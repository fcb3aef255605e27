"""The OpenCV implementation of :class:`~fcnseg.host.video.library.VideoLibrary` (``cv2``):
what a PYNQ image has (Debian's ``python3-opencv``), so a Pynq-Z2 needs nothing installed.

What cv2 does differently from PyAV, and what follows (docs/video.md):

- Frames come as BGR: they are turned into RGB by reversing the channel axis (exact).
- ``CAP_PROP_FPS`` and ``CAP_PROP_FRAME_COUNT`` come from the container's header and may be 0,
  absurd or estimated (Matroska's count is its duration times its rate): the frame rate falls
  back to :data:`~fcnseg.host.video.sources.SEQUENCE_FPS` with a note, and the count is used
  only for the progress bar and the truncation check below, never to decide what to read.
- ``VideoCapture.read()`` returns False at the end and on a break alike, and FFmpeg skips a
  corrupt packet inside OpenCV without saying so. A **truncated** file is told apart by its
  frame count: fewer frames than the header declares (less
  :data:`~fcnseg.host.video.sources.TRUNCATED_PERIODS` of slack) is one error line after the
  frames read. A packet lost mid-file, or a damaged frame, is not seen.
- ``VideoWriter`` takes no timestamps (frames are written back to back at the rate given: a
  camera run's video plays its kept frames without the dropped ones' gaps) and writes even
  sizes only (a frame of odd width or height loses its last column or row in the video; the
  masks keep every pixel). ``.mp4`` is H.264 where the build has it (Debian's), else MPEG-4
  Part 2 (``mp4v``: the pip wheel's FFmpeg has no H.264 encoder); :data:`FOURCCS` lists them.
- Cameras: ``cv2.VideoCapture(device, cv2.CAP_V4L2)`` with a buffer of one frame; a capture
  size is asked for with ``CAP_PROP_FRAME_WIDTH``/``HEIGHT`` and the first frame says what the
  camera delivers. A read that fails ends the stream (the camera went away).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from fcnseg.errors import UserError
from fcnseg.host.video.library import Encoder, VideoLibrary, import_cv2
from fcnseg.host.video.sources import (
    SEQUENCE_FPS,
    TRUNCATED_PERIODS,
    Frame,
    Source,
    capture_note,
)

#: Output suffix -> the fourccs cv2 writes it with, the first this build has. MJPG in AVI works
#: in every build; FFV1 in Matroska is lossless (the exactness tests); ``.mp4`` is H.264 where
#: the build's FFmpeg has an H.264 encoder (Debian's: ``avc1``), else MPEG-4 Part 2 (the pip
#: wheel: ``mp4v``).
FOURCCS: dict[str, tuple[str, ...]] = {
    ".mp4": ("avc1", "mp4v"),
    ".mov": ("avc1", "mp4v"),
    ".mkv": ("FFV1",),
    ".avi": ("MJPG",),
    ".webm": ("VP80",),
}
#: Frame rates cv2 reports that are taken as "unknown" (0, NaN, or a header's nonsense).
MAX_FPS = 1000.0


def rgb_of(bgr: np.ndarray) -> np.ndarray:
    """cv2's ``(H, W, 3)`` BGR frame (or a grey ``(H, W)`` one) as contiguous RGB ``uint8``."""
    if bgr.ndim == 2:
        return np.repeat(bgr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(bgr[:, :, 2::-1])


def frame_rate(fps: float) -> Fraction | None:
    """cv2's ``CAP_PROP_FPS`` as a Fraction (29.97 -> 30000/1001), or None if it is unknown."""
    if not math.isfinite(fps) or fps <= 0 or fps > MAX_FPS:
        return None
    return Fraction(fps).limit_denominator(1001)


class Cv2FileSource(Source):
    """A video file read with ``cv2.VideoCapture`` (module docstring): every frame, in order."""

    def __init__(self, path: str) -> None:
        cv2 = self.cv2 = import_cv2()
        self.name = path
        self.capture: Any = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        if not self.capture.isOpened():
            self.capture.release()
            raise UserError(f"{path}: not a video cv2 can read")
        fps = frame_rate(self.capture.get(cv2.CAP_PROP_FPS))
        self.fps = fps or SEQUENCE_FPS
        count = self.capture.get(cv2.CAP_PROP_FRAME_COUNT)
        self.count = int(count) if math.isfinite(count) and count > 0 else None
        self.size = (
            int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
        self.notes = (
            () if fps else (f"{path}: cv2 reports no frame rate; {SEQUENCE_FPS} frames/s assumed",)
        )

    def frames(self) -> Iterator[Frame]:
        cv2, index = self.cv2, 0
        while True:
            try:
                ok, bgr = self.capture.read()
            except cv2.error as error:
                raise UserError(
                    f"{self.name}: broken after frame {index} ({error}); the {index} frame(s) "
                    "before it are written"
                ) from None
            if not ok or bgr is None:
                break
            msec = self.capture.get(cv2.CAP_PROP_POS_MSEC)
            time_s = msec / 1e3 if math.isfinite(msec) and msec >= 0 else index / self.fps
            yield Frame(index, float(time_s), rgb_of(bgr))
            index += 1
        if self.count and index < self.count - TRUNCATED_PERIODS:
            raise UserError(
                f"{self.name}: ends after {index} of the {self.count} frame(s) its header "
                f"declares (truncated?); the {index} frame(s) decoded are written"
            )

    def close(self) -> None:
        self.capture.release()


class Cv2CameraSource(Source):
    """A V4L2 camera read with ``cv2.VideoCapture`` (module docstring), asked for ``size``.
    ``capture`` is an open ``VideoCapture``-like object to read instead of opening ``device``
    (the tests: a fake camera, or a file posing as one)."""

    live = True

    def __init__(
        self, device: str, size: tuple[int, int] | None = None, capture: Any = None
    ) -> None:
        cv2 = self.cv2 = import_cv2()
        self.name = device
        self.capture = capture if capture is not None else cv2.VideoCapture(device, cv2.CAP_V4L2)
        if not self.capture.isOpened():
            self.capture.release()
            raise UserError(f"{device}: cannot open the camera (cv2's V4L2 capture failed)")
        self.capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the driver's queue: one stale frame
        if size:
            self.capture.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
            self.capture.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
        # the first frame says what the camera delivers (the properties may not)
        ok, bgr = self.capture.read()
        if not ok or bgr is None:
            self.capture.release()
            raise UserError(f"{device}: the camera opened but delivered no frame")
        self._first: np.ndarray | None = rgb_of(bgr)
        self.size = (self._first.shape[1], self._first.shape[0])
        self.fps = frame_rate(self.capture.get(cv2.CAP_PROP_FPS)) or Fraction(30)
        self.notes = capture_note(device, size, self.size)

    def frames(self) -> Iterator[Frame]:
        import time

        start, index = time.monotonic(), 0
        if self._first is not None:
            first, self._first = self._first, None
            yield Frame(0, 0.0, first)
            index = 1
        while True:
            ok, bgr = self.capture.read()
            if not ok or bgr is None:
                # the camera went away (unplugged, the device read failed): LatestFrame notes it
                raise OSError(f"no frame from the device after {index} frame(s)")
            yield Frame(index, time.monotonic() - start, rgb_of(bgr))
            index += 1

    def close(self) -> None:
        self.capture.release()


class Cv2Encoder(Encoder):
    """A video written with ``cv2.VideoWriter`` (module docstring): the fourcc of
    :data:`FOURCCS`, even sizes, frames back to back."""

    def __init__(self, path: str, fps: Fraction, width: int, height: int) -> None:
        cv2 = import_cv2()
        fourccs = FOURCCS[Path(path).suffix.lower()]
        self.size = (width - width % 2, height - height % 2)
        if min(self.size) < 2:
            raise UserError(f"{path}: cv2 cannot write a {width}x{height} video")
        for fourcc in fourccs:
            code = cv2.VideoWriter_fourcc(*fourcc)
            self.writer = cv2.VideoWriter(path, code, float(fps), self.size)
            if self.writer.isOpened():
                self.fourcc = fourcc
                return
            self.writer.release()
        raise UserError(
            f"{path}: this cv2 cannot write {' or '.join(fourccs)} video (its FFmpeg lacks it)"
        )

    def write(self, rgb: np.ndarray, pts: int) -> None:
        self.writer.write(np.ascontiguousarray(self.fit(rgb)[:, :, ::-1]))

    def close(self) -> None:
        self.writer.release()


class OpenCv(VideoLibrary):
    """OpenCV (module docstring). Constructing it imports ``cv2``."""

    name = "cv2"
    codecs = {suffix: " or ".join(fourccs) for suffix, fourccs in FOURCCS.items()}
    keeps_time = False

    def __init__(self) -> None:
        self.cv2: Any = import_cv2()

    def open_file(self, path: str) -> Source:
        return Cv2FileSource(path)

    def open_camera(self, device: str, size: tuple[int, int] | None) -> Source:
        return Cv2CameraSource(device, size)

    def encoder(self, path: str, fps: Fraction, width: int, height: int) -> Encoder:
        return Cv2Encoder(path, fps, width, height)
