"""Where frames come from: a video file, an image sequence or a camera (:func:`open_source`).

Every source is an iterable of :class:`Frame` (RGB ``uint8``, its index and time) with the
frame rate and size known once it is open, and a :meth:`~Source.close`. Video files and cameras
are opened by the video library (:mod:`fcnseg.host.video.library`: PyAV or cv2, the same
interface); image sequences need none. Two policies:

- **Files and image sequences** give every frame, in order: the pipeline pulls the next one
  when it has room, so a slow accelerator slows the reading, never skips.
- **Cameras** are live: a reader thread grabs frames as the camera delivers them and keeps only
  the latest (:class:`LatestFrame`); the pipeline takes the newest one when it has room, and the
  frames overwritten meanwhile are counted as dropped. Latency then stays one frame in hand,
  not a queue that grows. A camera that disappears (unplugged, the device read fails) ends the
  stream cleanly: the frames before it are finished and written, and a note says why.

A file that breaks part-way (a corrupt packet, or a truncated file that ends before the
duration or frame count its header declares) raises :class:`~fcnseg.errors.UserError` after
the frames decoded before it: :class:`fcnseg.host.pipeline.Pipeline` finishes those first (its
failed listing comes last), so the outputs hold every frame decoded.

Audio is not read. Image sequences decode like ``fcnseg segment``'s inputs
(:func:`fcnseg.host.images.load_image`), so frame k of a sequence is segmented bit for bit like
the image file itself.
"""

from __future__ import annotations

import glob
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcnseg.errors import UserError

if TYPE_CHECKING:
    from fcnseg.host.video.library import VideoLibrary

#: Frame rate given to image sequences (they have none of their own).
SEQUENCE_FPS = Fraction(25)
#: A file whose last frame ends this many frame periods before its declared duration is
#: called truncated (headers round durations; one or two periods is container slack).
TRUNCATED_PERIODS = 2.5
_CAMERA = re.compile(r"^camera:(\d+)$")
_GLOB = re.compile(r"[*?\[]")


@dataclass
class Frame:
    """One frame: ``rgb (H, W, 3) uint8``, its position and its time in seconds."""

    index: int
    time_s: float
    rgb: np.ndarray


class Source:
    """A stream of :class:`Frame` (module docstring). Subclasses set ``fps`` and ``size``
    (width, height) when opened, and implement :meth:`frames`."""

    name: str = ""
    live: bool = False  #: a camera: latest-frame policy
    fps: Fraction = SEQUENCE_FPS
    size: tuple[int, int] = (0, 0)  #: (width, height)
    notes: tuple[str, ...] = ()  #: one-line notes to show (audio dropped, ...)
    count: int | None = None  #: frames there are, if known (the progress bar's total)

    @property
    def dropped(self) -> int:
        """Frames the camera delivered that were never processed (0 for files)."""
        return 0

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def stop(self) -> None:
        """Stop delivering frames (a live source's reader; nothing for files)."""

    def close(self) -> None:
        """Release the file or device (idempotent)."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def natural_key(path: str | os.PathLike[str]) -> list[Any]:
    """Sort key putting ``frame2`` before ``frame10``: digit runs compare as numbers."""
    parts = re.split(r"(\d+)", os.fspath(path))
    return [int(p) if p.isdigit() else p for p in parts]


class SequenceSource(Source):
    """Image files as frames, sorted naturally (``f2.png`` before ``f10.png``)."""

    def __init__(self, name: str, paths: list[Path], fps: Fraction = SEQUENCE_FPS) -> None:
        from fcnseg.host.images import image_size

        if not paths:
            raise UserError(f"{name}: no image files found")
        self.name, self.paths, self.fps = name, paths, Fraction(fps)
        self.count = len(paths)
        size = image_size(paths[0])
        if size is None:
            raise UserError(f"{paths[0]}: not an image Pillow can read")
        self.size = (size[1], size[0])

    def frames(self) -> Iterator[Frame]:
        from fcnseg.host.images import load_image

        for index, path in enumerate(self.paths):
            try:
                rgb = load_image(path)
            except OSError as error:
                raise UserError(f"{path}: cannot read this frame ({error})") from None
            yield Frame(index, float(index / self.fps), rgb)


def _sequence(spec: str) -> SequenceSource | None:
    """The image sequence ``spec`` names (a folder, or a glob), or None if it names neither."""
    from fcnseg.host.inputs import IMAGE_SUFFIXES

    path = Path(spec)
    if path.is_dir():
        found = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    elif _GLOB.search(spec) and not path.exists():
        found = [Path(p) for p in glob.glob(spec) if Path(p).is_file()]
    else:
        return None
    return SequenceSource(spec, sorted(found, key=natural_key))


class LatestFrame(Source):
    """A live source read by its own thread, of which only the newest frame is kept.

    The consumer (the pipeline's decode stage) takes the newest frame when it is ready for
    one; frames the reader replaced before anyone took them are :attr:`dropped`. When the
    reader's stream ends or fails (a camera unplugged), the consumer gets the frames already
    taken and then the end: :attr:`ended` says why, for the summary.
    """

    live = True

    def __init__(self, inner: Source) -> None:
        self.inner, self.name = inner, inner.name
        self.fps, self.size, self.notes = inner.fps, inner.size, inner.notes
        self._latest: Frame | None = None
        self._done = False
        self._dropped = 0
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self.ended: str | None = None  #: why the live stream ended, if it did by itself
        self._thread = threading.Thread(target=self._read, name="fcnseg-camera", daemon=True)
        self._started = False

    @property
    def dropped(self) -> int:
        return self._dropped

    def _read(self) -> None:
        try:
            for frame in self.inner:
                with self._cv:
                    if self._latest is not None:
                        self._dropped += 1
                    self._latest = frame
                    self._cv.notify_all()
                if self._stop.is_set():
                    break
        except Exception as error:  # a source that fails mid-stream: the run ends cleanly
            self.ended = f"{self.name}: stopped delivering frames ({error})"
        finally:
            with self._cv:
                self._done = True
                self._cv.notify_all()

    def frames(self) -> Iterator[Frame]:
        if not self._started:
            self._started = True
            self._thread.start()
        while True:
            with self._cv:
                while self._latest is None and not self._done:
                    self._cv.wait(timeout=0.1)
                if self._latest is None:
                    return
                frame, self._latest = self._latest, None
            yield frame

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._done = True  # the consumer gets no more frames
            self._cv.notify_all()

    def close(self) -> None:
        """Stop the reader, let it leave the device's read (one frame period at most), then
        release the device: a capture released under a read in progress is not safe (cv2)."""
        self.stop()
        if self._started:
            self._thread.join(timeout=2)
        self.inner.close()


def capture_note(
    device: str, asked: tuple[int, int] | None, got: tuple[int, int]
) -> tuple[str, ...]:
    """The one-line note for a camera that delivers another size than ``asked`` (``--capture-size``:
    cameras pick their nearest mode), or none."""
    if asked is None or tuple(asked) == tuple(got):
        return ()
    return (
        f"{device}: asked for {asked[0]}x{asked[1]}, the camera delivers {got[0]}x{got[1]} "
        "(its nearest mode)",
    )


def resized(rgb: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``rgb`` at ``size`` (width, height), bilinear (Pillow), or unchanged."""
    if size is None or (rgb.shape[1], rgb.shape[0]) == tuple(size):
        return rgb
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize(tuple(size), Image.Resampling.BILINEAR))


def camera_device(spec: str) -> str | None:
    """The V4L2 device ``spec`` names (``camera:N`` -> ``/dev/videoN``, or ``/dev/videoN``)."""
    if match := _CAMERA.match(spec):
        return f"/dev/video{match.group(1)}"
    if spec.startswith("/dev/video"):
        return spec
    return None


def open_source(
    spec: str,
    camera_size: tuple[int, int] | None = None,
    library: VideoLibrary | str | Callable[[], VideoLibrary] = "auto",
) -> Source:
    """Open what ``spec`` names: ``camera:N`` or ``/dev/videoN`` (a live camera, asked for
    ``camera_size``), a folder or a glob of images (a sequence: no video library needed), else a
    video file. Files and cameras are opened with ``library`` (a
    :class:`~fcnseg.host.video.library.VideoLibrary`, or its name for
    :func:`~fcnseg.host.video.library.resolve`). Refusals are one-line
    :class:`~fcnseg.errors.UserError`\\ s naming ``spec``."""
    from fcnseg.host.video.library import resolve

    if (device := camera_device(spec)) is not None:
        if not Path(device).exists():
            raise UserError(f"{spec}: no such camera ({device} does not exist)")
        video = resolve(library)
        return LatestFrame(video.open_camera(device, camera_size))
    if (sequence := _sequence(spec)) is not None:
        return sequence
    if not Path(spec).is_file():
        raise UserError(f"{spec}: no such file, folder or camera")
    video = resolve(library)
    return video.open_file(spec)
