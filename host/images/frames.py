"""Multi-frame images (animated GIF, WebP and PNG, multi-page TIFF, MPO): how many frames a file
has, and its frames decoded one after another.

:func:`frame_count` reads the count from the header: Pillow's ``n_frames`` on an opened, not
decoded, image. For GIF it walks the file's blocks without decoding them; for TIFF it follows the
IFD chain (Pillow stops at a chain that loops); WebP, APNG and MPO state it in a header. A count
is refused when the file is too small to hold that many frames (every frame takes at least
:data:`MIN_FRAME_BYTES`, so a 1 kB APNG cannot claim a million), and ``--frames all`` refuses
more than :data:`MAX_FRAMES` frames in one file: each frame is a job of its own, with its own
outputs and summary record, and an animation that long is a video to split first.

:class:`FrameSource` decodes the frames of one file for its frame jobs. A GIF, WebP or APNG
frame is a delta on the frames before it, so Pillow's ``seek(k)`` on a freshly opened file
decodes frames 0..k: k jobs opening the file afresh would decode k(k+1)/2 frames (measured here
on a GIF of 200 frames of 320x240, decoding every frame to RGB: 49 s from fresh opens, 0.68 s in
order). The source keeps the file open between jobs while frames are asked for in increasing
order (the batch's decoder takes jobs in input order), starts again from the file when an earlier
frame is asked for, and closes the file after its last frame or a failure.

An MPO counts every picture Pillow finds in it: the views of a stereo camera, and the second
picture some phones store beside the photo (Pillow leaves Ultra HDR gain maps out itself), so
the note names the file's count and ``--frames all`` segments each picture.

Each frame is converted like a single image (:mod:`fcnseg.host.images.decode`): its own size
guarded, EXIF orientation applied (Pillow turns TIFF pages by their own tags), modes by
:mod:`fcnseg.host.images.modes`. Pillow gives GIF frames after the first as ``RGB`` or ``RGBA``
(composited on the frames before them), the first as ``P``; both reach the same RGB rules.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from fcnseg.host.images.decode import frame_rgb, one_line
from fcnseg.host.images.guard import MAX_PIXELS, check_pixels, open_unguarded
from fcnseg.host.images.messages import frame_label, image_error, reason

#: Most frames ``--frames all`` takes from one file (each is a job with its own outputs).
MAX_FRAMES = 100_000
#: Fewest bytes any supported format spends on a frame (a GIF image descriptor alone is 10, an
#: APNG ``fcTL`` chunk 38, a TIFF IFD 18): a count above ``file size / MIN_FRAME_BYTES`` is a lie.
MIN_FRAME_BYTES = 8


def frame_count(path: str | os.PathLike[str]) -> int | None:
    """How many frames ``path`` has, from its header (nothing decoded); None when Pillow cannot
    open it at all (decoding it then says why). A count the file cannot hold, or one Pillow
    fails to read, is a :class:`~fcnseg.errors.UserError` line."""
    path = Path(path)
    try:
        size = path.stat().st_size
        image = open_unguarded(path)
    except Exception:
        return None
    with image:
        try:
            count = int(getattr(image, "n_frames", 1))
        except Exception as error:  # a damaged block after the first frame (GIF: IndexError)
            raise image_error(path, "frame_count", reason=reason(error)) from None
    if count < 1 or count > max(1, size // MIN_FRAME_BYTES):
        raise image_error(path, "frames_claimed", count=count, size=size)
    return count


def check_frames(path: str | os.PathLike[str], count: int) -> None:
    """Refuse ``--frames all`` on a file of more than :data:`MAX_FRAMES` frames (one line)."""
    if count > MAX_FRAMES:
        raise image_error(path, "too_many_frames", count=count, limit=MAX_FRAMES)


class FrameSource:
    """The frames of one multi-frame file, decoded in increasing order from one open image
    (module docstring); shared by the file's frame jobs, safe to call from any thread."""

    def __init__(self, path: str | os.PathLike[str], count: int) -> None:
        self.path = Path(path)
        self.count = count
        self._image: Image.Image | None = None
        self._lock = threading.Lock()

    def load(self, frame: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
        """Frame ``frame`` as upright ``(H, W, 3) uint8`` RGB; a failure is one
        :class:`~fcnseg.errors.UserError` line naming the frame (and closes the file)."""
        label = frame_label(self.path, frame)
        with self._lock:
            try:
                if self._image is not None and self._image.tell() > frame:
                    self._close()  # an earlier frame: from the start again
                if self._image is None:
                    self._image = self._open(label, max_pixels)
                rgb = frame_rgb(self._image, label, frame, max_pixels)
            except BaseException:
                self._close()
                raise
            if frame >= self.count - 1:
                self._close()
            return rgb

    def _open(self, label: str, max_pixels: int) -> Image.Image:
        with one_line(label):
            image = open_unguarded(self.path)
            try:
                check_pixels(label, *image.size, max_pixels)
            except BaseException:
                image.close()
                raise
            return image

    def _close(self) -> None:
        if self._image is not None:
            self._image.close()
            self._image = None

    def close(self) -> None:
        """Close the file if a frame job left it open (the file's last frame was not asked for)."""
        with self._lock:
            self._close()
