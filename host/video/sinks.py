"""Where a video run's results go: the overlay video, per-frame masks, per-frame class areas.

Each sink takes the frames in order (:meth:`Sink.add`) and is closed once (:meth:`Sink.close`);
``close(complete=False)`` after a broken input, a camera that went away or Ctrl-C still
finalises what was written, so **an output always holds every frame finished before the run
ended** and is valid (a video is flushed and its container closed: it plays, and reopening it
counts those frames):

- :class:`VideoSink`: the overlay encoded by the video library (PyAV or cv2:
  :mod:`fcnseg.host.video.library`) into a temporary next to ``OUT``
  (``.OUT.<owner>.<random>.tmp.mp4``, :func:`fcnseg.atomic.owned_temp`, the suffix kept so the
  container follows it) and renamed onto ``OUT`` at the end. The codec follows the suffix
  (the library's ``codecs``); with PyAV frames keep their times (a camera's dropped frames
  leave gaps in time, not a faster video); cv2's writer has no timestamps.
- :class:`MaskSink`: ``DIR/frame_000000.png``, ... (the source's frame index), each the same
  palette PNG ``fcnseg segment`` writes for that frame as an image, each written atomically,
  and ``DIR/classes.json`` first.
- :class:`AreasSink`: one JSON file (written atomically at the end): the classes and, per frame,
  its index, time and pixels per class.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcnseg.atomic import atomic_write_text, file_mode, owned_temp
from fcnseg.errors import UserError
from fcnseg.host.video.sources import resized

if TYPE_CHECKING:
    from fcnseg.host.video.library import Encoder, VideoLibrary


#: Mask file name of frame ``index`` in ``--masks DIR``.
MASK_NAME = "frame_{index:06d}.png"


@dataclass
class Finished:
    """One frame as the sinks get it: the source frame's index and time, the RGB it was
    segmented at, the labels and the overlay picture (None if no sink wants one)."""

    index: int
    time_s: float
    labels: np.ndarray
    picture: np.ndarray | None = None


class Sink:
    """Takes finished frames in order; closed once, finalising what it has (module docstring)."""

    path: Path
    frames: int = 0

    def add(self, frame: Finished) -> None:
        raise NotImplementedError

    def close(self, complete: bool = True) -> None:
        """Finalise the output (also when ``complete`` is False: the run ended early)."""


class VideoSink(Sink):
    """The overlay as a video file, encoded as frames arrive by the video library's
    :class:`~fcnseg.host.video.library.Encoder` (module docstring)."""

    def __init__(
        self,
        path: Path,
        fps: Fraction,
        library: VideoLibrary | str | Callable[[], VideoLibrary] = "auto",
    ) -> None:
        from fcnseg.host.video.library import resolve

        self.library = resolve(library)
        self.path, self.fps = Path(path), Fraction(fps)
        self.library.check_output(self.path)
        self.tmp: str | None = None
        self.encoder: Encoder | None = None
        self.last_pts = -1
        self.first: tuple[int, int] = (0, 0)  #: (width, height) of the first frame
        self.note: str | None = None  #: one line for the run's end (a size cv2 cannot write)

    def _open(self, width: int, height: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = owned_temp(self.path, keep_suffix=True)
        try:
            self.encoder = self.library.encoder(self.tmp, self.fps, width, height)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            raise
        if self.encoder.size != (width, height):
            w, h = self.encoder.size
            self.note = (
                f"{self.path}: {self.library.name} writes even sizes only: the video is {w}x{h} "
                f"of the {width}x{height} frames (the masks keep every pixel)"
            )

    def add(self, frame: Finished) -> None:
        assert frame.picture is not None
        self.add_picture(frame.picture, frame.time_s)

    def add_picture(self, picture: np.ndarray, time_s: float) -> None:
        """Encode ``picture (H, W, 3) uint8`` shown at ``time_s`` seconds."""
        if self.encoder is None:
            self._open(picture.shape[1], picture.shape[0])
            self.first = (picture.shape[1], picture.shape[0])
        elif (picture.shape[1], picture.shape[0]) != self.first:
            # an image sequence of mixed sizes: the video keeps its first frame's size
            picture = resized(picture, self.first)
        assert self.encoder is not None
        # the frame's own time, on the output's clock; strictly increasing
        pts = max(self.last_pts + 1, round(time_s * self.fps))
        self.encoder.write(picture, pts)
        self.last_pts = pts
        self.frames += 1

    def close(self, complete: bool = True) -> None:
        if self.encoder is None:
            return
        encoder, self.encoder = self.encoder, None
        try:
            encoder.close()
            assert self.tmp is not None
            os.chmod(self.tmp, file_mode())
            os.replace(self.tmp, self.path)
        except BaseException:
            with contextlib.suppress(Exception):
                encoder.abort()
            with contextlib.suppress(OSError):
                os.unlink(self.tmp or "")
            raise


class MaskSink(Sink):
    """One mask PNG per frame in a folder, as ``fcnseg segment`` writes them (module
    docstring)."""

    def __init__(self, folder: Path, palette: np.ndarray, table: Any, package: str | None) -> None:
        from fcnseg.host.images import write_classes_json

        self.path, self.palette, self.table = Path(folder), palette, table
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            write_classes_json(self.path, table, package=package)
        except OSError as error:
            raise UserError(
                f"{self.path}: cannot write masks ({error.strerror or error})"
            ) from None

    def add(self, frame: Finished) -> None:
        from fcnseg.host.images import save_mask

        save_mask(self.path / MASK_NAME.format(index=frame.index), frame.labels, self.palette,
                  self.table)  # fmt: skip
        self.frames += 1


class AreasSink(Sink):
    """Pixels per class of every frame, one JSON file written at the end (module docstring)."""

    def __init__(self, path: Path, classes: list[str], source: str, fps: Fraction) -> None:
        self.path, self.classes = Path(path), list(classes)
        self.document: dict[str, Any] = {
            "input": source,
            "fps": float(fps),
            "classes": self.classes,
            "complete": False,
            "frames": [],
        }

    def add(self, frame: Finished) -> None:
        pixels = np.bincount(frame.labels.ravel(), minlength=len(self.classes))
        self.document["frames"].append(
            {
                "index": frame.index,
                "time_s": round(frame.time_s, 6),
                "size": [int(frame.labels.shape[1]), int(frame.labels.shape[0])],
                "pixels": [int(v) for v in pixels],
            }
        )
        self.frames += 1

    def close(self, complete: bool = True) -> None:
        self.document["complete"] = complete
        try:
            atomic_write_text(self.path, json.dumps(self.document, indent=1) + "\n")
        except OSError as error:
            raise UserError(f"{self.path}: cannot write ({error.strerror or error})") from None


def write_video(
    path: str | os.PathLike[str],
    pictures: Iterable[np.ndarray],
    fps: Fraction,
    library: VideoLibrary | str = "auto",
) -> int:
    """Encode ``pictures`` as a video at ``fps`` with ``library`` (the codec follows the suffix;
    ``.mkv`` is lossless FFV1 in both libraries); returns how many. For clips made from images
    (``scripts/make_clip.py``) and the tests."""
    sink = VideoSink(Path(path), Fraction(fps), library)
    try:
        for index, picture in enumerate(pictures):
            sink.add_picture(np.asarray(picture, dtype=np.uint8), float(index / sink.fps))
    finally:
        sink.close()
    return sink.frames
