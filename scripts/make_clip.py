"""Write the short clip ``fcnseg video`` and ``notebooks/06-camera.ipynb`` run on without a camera.

A camera pan made from the two synthetic sample scenes (``samples/scene-*.jpg``, the kind of
scene the default model is trained on): a ``W x H`` window slides across each scene from left
to right, ``--frames`` frames per scene, so consecutive frames differ by a few pixels as a
moving camera's do. Nothing is downloaded; the frames are deterministic (the encoder's output
may differ by a few bytes between FFmpeg builds).

Run from the repository root, in an environment with the ``[video]`` extra::

    .venv/bin/python scripts/make_clip.py                       # samples/pan-320x240.mp4
    .venv/bin/python scripts/make_clip.py --size 640 480 --frames 60 -o /tmp/pan-640x480.mp4

The codec follows the suffix (:data:`fcnseg.host.video.pyav.CODECS`: ``.mp4`` H.264,
``.mkv`` lossless FFV1); ``--video-library cv2`` writes with cv2 instead
(:data:`fcnseg.host.video.opencv.FOURCCS`: ``.mp4`` MPEG-4 Part 2, ``.mkv`` FFV1). The shipped
clip is written with PyAV.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCENES = ("scene-240x700.jpg", "scene-333x517.jpg")


def pan(scene: Image.Image, size: tuple[int, int], frames: int) -> Iterator[np.ndarray]:
    """``frames`` windows of ``size`` (width, height) sliding left to right across
    ``scene``, which is first scaled so its height is the window's (and its width at least
    the window's)."""
    width, height = size
    scale = max(height / scene.height, width / scene.width)
    scaled = scene.resize(
        (max(width, round(scene.width * scale)), max(height, round(scene.height * scale))),
        Image.Resampling.LANCZOS,
    )
    travel = scaled.width - width
    top = (scaled.height - height) // 2
    for k in range(frames):
        left = round(travel * k / max(1, frames - 1))
        yield np.asarray(scaled.crop((left, top, left + width, top + height)).convert("RGB"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=None)
    parser.add_argument("--size", type=int, nargs=2, default=(320, 240), metavar=("W", "H"))
    parser.add_argument("--frames", type=int, default=24, help="frames per scene")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--samples", type=Path, default=ROOT / "samples")
    parser.add_argument("--video-library", choices=("auto", "av", "cv2"), default="auto")
    args = parser.parse_args()
    from fcnseg.host.video.sinks import write_video

    size = (args.size[0], args.size[1])
    out = args.output or args.samples / f"pan-{size[0]}x{size[1]}.mp4"

    def pictures() -> Iterator[np.ndarray]:
        for name in SCENES:
            with Image.open(args.samples / name) as scene:
                yield from pan(scene, size, args.frames)

    count = write_video(out, pictures(), Fraction(args.fps), args.video_library)
    print(f"{out}: {count} frames of {size[0]}x{size[1]} at {args.fps} frames/s, "
          f"{out.stat().st_size // 1024} KB")  # fmt: skip


if __name__ == "__main__":
    main()
