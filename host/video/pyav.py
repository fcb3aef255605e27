"""The PyAV implementation of :class:`~fcnseg.host.video.library.VideoLibrary` (``av``, the
``[video]`` extra): files and V4L2 cameras decoded by FFmpeg, videos encoded by it.

PyAV gives each frame its timestamp, the container its declared duration and its audio
streams, and raises on a corrupt packet, so a file that breaks part-way is told apart from its
end (:class:`FileSource`), and a camera run's video keeps the dropped frames' gaps in time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from fcnseg.errors import UserError
from fcnseg.host.video.library import Encoder, VideoLibrary, av_errors, import_av
from fcnseg.host.video.sources import (
    SEQUENCE_FPS,
    TRUNCATED_PERIODS,
    Frame,
    Source,
    capture_note,
)


@dataclass(frozen=True)
class Codec:
    """An FFmpeg encoder for a container, its pixel format and options; ``odd_pix_fmt`` for
    frames of odd width or height (4:2:0 needs both even)."""

    name: str
    pix_fmt: str
    odd_pix_fmt: str
    options: tuple[tuple[str, str], ...] = ()


#: Output suffix -> its encoder. H.264 at "veryfast" keeps up on an ARM core for small frames;
#: FFV1 (lossless) in Matroska, so an overlay video can be compared pixel for pixel.
CODECS: dict[str, Codec] = {
    ".mp4": Codec("libx264", "yuv420p", "yuv444p", (("preset", "veryfast"), ("crf", "20"))),
    ".mov": Codec("libx264", "yuv420p", "yuv444p", (("preset", "veryfast"), ("crf", "20"))),
    ".mkv": Codec("ffv1", "bgr0", "bgr0"),
    ".avi": Codec("mjpeg", "yuvj420p", "yuvj444p", (("q", "3"),)),
    ".webm": Codec("libvpx-vp9", "yuv420p", "yuv444p", (("deadline", "realtime"),)),
}


def _reason(error: BaseException) -> str:
    """FFmpeg's message without PyAV's errno prefix and file name."""
    text = getattr(error, "strerror", None) or str(error)
    return str(text).rstrip(".")


class FileSource(Source):
    """A video file decoded with PyAV: every frame of its first video stream, in order."""

    def __init__(self, path: str) -> None:
        av = import_av()
        self.name = path
        try:
            self.container = av.open(path)
        except av_errors() as error:
            raise UserError(f"{path}: not a video FFmpeg can read ({_reason(error)})") from None
        except OSError as error:
            raise UserError(f"{path}: cannot open ({error.strerror or error})") from None
        if not self.container.streams.video:
            self.container.close()
            raise UserError(f"{path}: has no video stream")
        self.stream = self.container.streams.video[0]
        rate = self.stream.average_rate or self.stream.guessed_rate or SEQUENCE_FPS
        self.fps = Fraction(rate)
        self.count = self.stream.frames or None  # 0 where the container does not say
        self.size = (self.stream.codec_context.width, self.stream.codec_context.height)
        duration = self.container.duration  # microseconds (AV_TIME_BASE), None if unknown
        self.duration_s = duration / 1e6 if duration else None
        self.notes = (
            (f"{path}: audio dropped (the output video has none)",)
            if self.container.streams.audio
            else ()
        )

    def frames(self) -> Iterator[Frame]:
        index, end = 0, 0.0
        try:
            for frame in self.container.decode(self.stream):
                time_s = float(frame.time) if frame.time is not None else index / self.fps
                yield Frame(index, time_s, frame.to_ndarray(format="rgb24"))
                index, end = index + 1, time_s + float(1 / self.fps)
        except av_errors() as error:
            raise UserError(
                f"{self.name}: broken after frame {index} ({_reason(error)}); the {index} "
                "frame(s) before it are written"
            ) from None
        declared = self.duration_s
        if declared and end < declared - TRUNCATED_PERIODS / float(self.fps):
            raise UserError(
                f"{self.name}: ends at {end:.2f} s of the {declared:.2f} s its header declares "
                f"(truncated?); the {index} frame(s) decoded are written"
            )

    def close(self) -> None:
        self.container.close()


class CameraSource(Source):
    """A V4L2 camera read with PyAV (``/dev/videoN``), frames as the device delivers them.

    ``size`` is asked for with the v4l2 input's ``video_size`` option; the driver picks its
    nearest mode, and :attr:`size` is what it delivers (a note says so when it differs)."""

    live = True

    def __init__(self, device: str, size: tuple[int, int] | None = None) -> None:
        av = import_av()
        self.name = device
        options = {"video_size": f"{size[0]}x{size[1]}"} if size else {}
        try:
            self.container = av.open(device, format="v4l2", options=options)
        except (*av_errors(), OSError) as error:
            raise UserError(f"{device}: cannot open the camera ({_reason(error)})") from None
        self.stream = self.container.streams.video[0]
        self.fps = Fraction(self.stream.average_rate or self.stream.guessed_rate or 30)
        self.size = (self.stream.codec_context.width, self.stream.codec_context.height)
        self.notes = capture_note(device, size, self.size)

    def frames(self) -> Iterator[Frame]:
        index, start = 0, None
        try:
            for frame in self.container.decode(self.stream):
                t = float(frame.time) if frame.time is not None else index / float(self.fps)
                start = t if start is None else start
                yield Frame(index, t - start, frame.to_ndarray(format="rgb24"))
                index += 1
        except (*av_errors(), OSError) as error:
            # the camera went away: the stream ends, and LatestFrame notes why
            raise OSError(f"{_reason(error)} after {index} frame(s)") from None

    def close(self) -> None:
        self.container.close()


class AvEncoder(Encoder):
    """A video written with PyAV: the codec of :data:`CODECS` for the suffix, any size
    (odd sizes in 4:4:4), each frame at its own timestamp."""

    def __init__(self, path: str, fps: Fraction, width: int, height: int) -> None:
        av = self.av = import_av()
        codec = CODECS[Path(path).suffix.lower()]
        self.size = (width, height)
        self.container = av.open(path, "w")
        odd = width % 2 or height % 2
        stream = self.container.add_stream(codec.name, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = codec.odd_pix_fmt if odd else codec.pix_fmt
        stream.options = dict(codec.options)
        self.stream = stream

    def write(self, rgb: np.ndarray, pts: int) -> None:
        video = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        video.pts = pts
        for packet in self.stream.encode(video):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):  # flush the encoder's delayed frames
            self.container.mux(packet)
        self.container.close()

    def abort(self) -> None:
        self.container.close()


class PyAv(VideoLibrary):
    """PyAV (module docstring). Constructing it imports ``av`` (its ImportError names the
    extra)."""

    name = "av"
    codecs = {suffix: codec.name for suffix, codec in CODECS.items()}
    keeps_time = True

    def __init__(self) -> None:
        self.av: Any = import_av()

    def open_file(self, path: str) -> Source:
        return FileSource(path)

    def open_camera(self, device: str, size: tuple[int, int] | None) -> Source:
        return CameraSource(device, size)

    def encoder(self, path: str, fps: Fraction, width: int, height: int) -> Encoder:
        return AvEncoder(path, fps, width, height)
