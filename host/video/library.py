"""The video library: PyAV (``av``), the ``[video]`` extra, imported only when a video is opened.

Why PyAV (docs/video.md): its wheels bundle FFmpeg (decoders for mp4/avi/mkv/webm, the V4L2
camera input, and encoders: H.264, MPEG-4, VP8, FFV1, MJPEG) and need no numpy, so the same pin
installs in the numpy-2 and the numpy-1 environment; wheels exist for x86-64 and aarch64 (ZCU104,
KV260). ``opencv-python-headless`` 5.x requires numpy >= 2, which the board environment cannot
have (pynq 4.0.0 needs numpy < 2).

Without the extra, :func:`import_av` raises the :class:`ImportError` of ``av``, which the
console script turns into one line naming the extra (``fcnseg.cli.MODULE_EXTRAS``).
"""

from __future__ import annotations

from typing import Any


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
