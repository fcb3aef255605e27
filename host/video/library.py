"""The video library: one small interface (:class:`VideoLibrary`), two implementations.

- **PyAV** (``av``, the ``[video]`` extra: :mod:`~fcnseg.host.video.pyav`): its wheels bundle
  FFmpeg (decoders for mp4/avi/mkv/webm, the V4L2 camera input, and encoders: H.264, MPEG-4,
  VP9, FFV1, MJPEG) and need no numpy, so one pin installs in the numpy-2 and the numpy-1
  environment, on x86-64 and aarch64 (ZCU104, KV260). It has no armv7l wheels (Pynq-Z2).
- **OpenCV** (``cv2``: :mod:`~fcnseg.host.video.opencv`): what a PYNQ image has already
  (Debian's ``python3-opencv``, seen by the PYNQ venv through the system site-packages), so on a
  Pynq-Z2 ``fcnseg video`` runs with nothing to install. It tells less (no timestamps, no audio
  streams, a truncated file only by its frame count: docs/video.md).

:func:`choose` picks one: ``av`` or ``cv2`` by name, or ``auto``: PyAV where it imports, else
cv2. Neither is imported before a video is opened, so the host's import path stays numpy +
Pillow without them. A source or encoder is opened through the library (:meth:`open_file`,
:meth:`open_camera`, :meth:`encoder`); everything after (the pipeline, the sinks' temporary
names, the masks) is shared.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcnseg.errors import UserError

if TYPE_CHECKING:
    from fcnseg.host.video.sources import Source

#: ``--video-library`` choices.
NAMES = ("auto", "av", "cv2")
#: One line for a machine with neither library.
NONE_INSTALLED = (
    "`fcnseg video` needs a video library, which this environment lacks: "
    "pip install 'fcnseg[video]' (PyAV), or have cv2 (on a PYNQ image: Debian's python3-opencv)"
)


class Encoder:
    """An open video file being written: :meth:`write` RGB frames in order, :meth:`close` once.

    ``size`` (width, height) is what the file holds; a frame of another size is cropped to it
    by :meth:`fit` (cv2 writes even sizes only).
    """

    size: tuple[int, int] = (0, 0)

    def write(self, rgb: np.ndarray, pts: int) -> None:
        """Encode ``rgb (H, W, 3) uint8`` at ``pts`` (in frame periods; strictly increasing)."""
        raise NotImplementedError

    def close(self) -> None:
        """Flush the encoder and close the file (it then plays)."""
        raise NotImplementedError

    def abort(self) -> None:
        """Close without caring whether the file is whole (it is deleted after)."""
        self.close()

    def fit(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb`` cropped to :attr:`size` (top-left kept), or unchanged."""
        width, height = self.size
        return rgb if rgb.shape[:2] == (height, width) else rgb[:height, :width]


class VideoLibrary:
    """What ``fcnseg video`` asks of a video library (module docstring)."""

    name: str = ""
    #: output suffix -> the codec written, for the refusal line and the docs
    codecs: dict[str, str] = {}
    #: a camera run's video keeps the dropped frames' gaps in time (False: frames back to back)
    keeps_time: bool = True

    def open_file(self, path: str) -> Source:
        """Every frame of ``path``'s first video stream, in order."""
        raise NotImplementedError

    def open_camera(self, device: str, size: tuple[int, int] | None) -> Source:
        """The camera at ``device`` (``/dev/videoN``), asked for ``size`` (width, height)."""
        raise NotImplementedError

    def encoder(self, path: str, fps: Fraction, width: int, height: int) -> Encoder:
        """An :class:`Encoder` writing ``path`` (its suffix picks the codec)."""
        raise NotImplementedError

    def check_output(self, path: Path) -> str:
        """The codec ``path``'s suffix is written with, or one line listing the suffixes."""
        codec = self.codecs.get(path.suffix.lower())
        if codec is None:
            known = ", ".join(self.codecs)
            raise UserError(f"{path}: output videos end in {known}, got {path.suffix or 'none'!r}")
        return codec


def available(name: str) -> bool:
    """Whether the library ``name`` (``av`` or ``cv2``) is importable, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules (tests)
        return False


def choose(name: str = "auto") -> VideoLibrary:
    """The library ``name`` names (:data:`NAMES`); ``auto``: PyAV if importable, else cv2.

    Refusals are one line: ``av`` without PyAV names the extra (the ImportError of ``av``,
    which the console script turns into ``pip install 'fcnseg[video]'``), ``cv2`` without cv2
    and ``auto`` with neither say what to install.
    """
    if name not in NAMES:
        raise UserError(f"--video-library: one of {', '.join(NAMES)}, got {name!r}")
    if name == "auto":
        name = "av" if available("av") else "cv2" if available("cv2") else ""
        if not name:
            raise UserError(NONE_INSTALLED)
    if name == "av":
        from fcnseg.host.video.pyav import PyAv

        return PyAv()
    if not available("cv2"):
        raise UserError(
            "--video-library cv2: cv2 is not importable here (on a PYNQ image it is Debian's "
            "python3-opencv; elsewhere pip install opencv-python-headless)"
        )
    from fcnseg.host.video.opencv import OpenCv

    return OpenCv()


def resolve(library: VideoLibrary | str | Callable[[], VideoLibrary]) -> VideoLibrary:
    """A library given as itself, as a name (:func:`choose`) or as a callable that chooses it
    when first needed (the command line's ``--video-library``)."""
    if isinstance(library, VideoLibrary):
        return library
    if isinstance(library, str):
        return choose(library)
    return library()


def import_av() -> Any:
    """The ``av`` module, with FFmpeg's own log lines kept quiet (errors reach us as
    exceptions and are reported as one line each)."""
    import av  # the [video] extra

    av.logging.set_level(None)
    return av


def av_errors() -> tuple[type[BaseException], ...]:
    """The exceptions PyAV raises for unreadable or broken media (FFmpeg's errors)."""
    av = import_av()
    return (av.FFmpegError,)


def import_cv2() -> Any:
    """The ``cv2`` module, its log lines kept quiet: a writer or capture that fails is reported
    as one line of ours. ``cv2.setLogLevel(0)`` silences OpenCV's own; FFmpeg's (inside
    OpenCV) go through OpenCV's logger with ``OPENCV_FFMPEG_DEBUG`` and
    ``OPENCV_FFMPEG_LOGLEVEL=-8`` (quiet), read when the first capture or writer opens, from
    OpenCV 4.6 on (4.5.4 logs every FFmpeg line with them; without, an FFmpeg error line may
    precede ours there). A user's own settings of those variables are kept."""
    import cv2  # Debian's python3-opencv on a PYNQ image, or opencv-python(-headless)

    if hasattr(cv2, "setLogLevel"):
        cv2.setLogLevel(0)  # LOG_LEVEL_SILENT
    version = tuple(int(p) for p in re.findall(r"\d+", cv2.__version__)[:2])
    if version >= (4, 6) and "OPENCV_FFMPEG_DEBUG" not in os.environ:
        os.environ["OPENCV_FFMPEG_DEBUG"] = "1"
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    return cv2
