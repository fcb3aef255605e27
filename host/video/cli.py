"""``fcnseg video INPUT -o OUT``: segment a video file, an image sequence or a camera.

INPUT: a video file (mp4, avi, mkv, webm, ...: what FFmpeg reads), an image sequence (a folder,
or a quoted glob, sorted naturally) or a camera (``camera:0``, ``/dev/video0``). Outputs, any of:
``-o OUT`` a video of the overlays (same frame rate and size, or ``--size``; the codec follows
the suffix: :data:`fcnseg.host.video.pyav.CODECS`, :data:`fcnseg.host.video.opencv.FOURCCS`),
``--masks DIR`` one mask PNG per frame
(``frame_000000.png``, ...: the same files ``fcnseg segment`` writes for that frame as an
image), ``--areas FILE`` a JSON of per-frame pixels per class.

Exit status: 0 done (also a camera that went away: a note says so), 1 the input broke part-way
or a write failed (one line; every frame before it is written and the outputs are valid),
2 refused before any frame (bad input, package or option; no video library: one line naming
``pip install 'fcnseg[video]'`` and cv2), 130 interrupted (the outputs are finalised with the frames
done). Existing outputs are refused unless ``--overwrite``.

``--video-library av|cv2`` picks the video library (default ``auto``: PyAV if installed, else
cv2, which a PYNQ image has); ``--capture-size W H`` asks a camera for that size (``--size``
stays the size frames are segmented and written at).

The imports here are click and the host's light modules; the video library is imported when a
video is opened (:mod:`fcnseg.host.video.library`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fcnseg.errors import UserError
from fcnseg.host.cli import board_option


@click.command()
@click.argument("input_", metavar="INPUT")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), default=None, help="Overlay video file."
)
@click.option(
    "--masks",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for one mask PNG per frame (frame_000000.png, ...) and classes.json.",
)
@click.option(
    "--areas",
    type=click.Path(dir_okay=False),
    default=None,
    help="JSON file of per-frame pixels per class.",
)
@click.option(
    "--size",
    type=(click.IntRange(min=1), click.IntRange(min=1)),
    default=None,
    metavar="W H",
    help="Resize frames to W x H before segmenting (smaller is faster) [default: as read].",
)
@click.option(
    "--capture-size",
    type=(click.IntRange(min=1), click.IntRange(min=1)),
    default=None,
    metavar="W H",
    help="Ask a camera for W x H frames (it picks its nearest mode; a note says what it gives).",
)
@click.option(
    "--video-library",
    type=click.Choice(["auto", "av", "cv2"]),
    default="auto",
    show_default=True,
    help="Read and write video with PyAV (the video extra) or cv2; auto: PyAV if installed.",
)
@click.option("--hud", is_flag=True, help="Draw the frames/s (and frames dropped) on the video.")
@click.option(
    "--package", type=click.Path(), default=None, help="Package folder [default: shipped]."
)
@click.option("--backend", default="sim", show_default=True, help="sim | pynq.")
@board_option
@click.option(
    "--overlap",
    type=click.IntRange(min=0),
    default=None,
    help="Tile overlap in pixels [default: the exact one]; smaller is faster, not exact.",
)
@click.option(
    "--alpha", default=0.5, show_default=True, type=click.FloatRange(0, 1), help="Overlay opacity."
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Threads finishing frames (upsample, argmax, overlay).",
)
@click.option(
    "--max-frames",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many frames (a camera runs until Ctrl-C otherwise).",
)
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
def video(input_: str, **options: Any) -> None:
    """Segment a video file, an image sequence (folder or glob) or a camera (camera:0,
    /dev/video0) frame by frame: -o OUT a video of the overlays, --masks DIR a mask PNG per
    frame, --areas FILE per-frame class areas (JSON). Audio is dropped. Exit 0 done, 1 the
    input broke part-way (every frame before is written), 2 refused, 130 interrupted."""
    raise SystemExit(_run(input_, options))


def _outputs(options: dict[str, Any], library: Any) -> tuple[Path | None, Path | None, Path | None]:
    """The outputs asked for, checked before any frame: at least one, none existing unless
    ``--overwrite``, the video's suffix one ``library`` writes."""
    from fcnseg.host.video.sinks import MASK_NAME

    out, masks, areas = (
        Path(options[k]) if options[k] else None for k in ("output", "masks", "areas")
    )
    if out is None and masks is None and areas is None:
        raise UserError("nothing to write: give -o OUT (a video), --masks DIR or --areas FILE")
    if out is not None:
        library().check_output(out)
    if not options["overwrite"]:
        taken = [p for p in (out, areas) if p is not None and p.exists()]
        if masks is not None and masks.is_dir():
            taken += sorted(masks.glob(MASK_NAME.replace("{index:06d}", "*")))[:1]
        if taken:
            raise UserError(f"{taken[0]} exists: use --overwrite to replace it")
    return out, masks, areas


class _Library:
    """The ``--video-library`` choice, made when first needed (an image sequence written only
    as masks needs no video library)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._library: Any = None

    def __call__(self) -> Any:
        from fcnseg.host.video.library import choose

        if self._library is None:
            self._library = choose(self.name)
        return self._library


def _run(spec: str, options: dict[str, Any]) -> int:
    from fcnseg.host.cli import _open_segmenter
    from fcnseg.host.images import ClassTable
    from fcnseg.host.images.decode import quiet_pillow
    from fcnseg.host.video.run import VideoRun
    from fcnseg.host.video.sinks import AreasSink, MaskSink, VideoSink
    from fcnseg.host.video.sources import open_source

    quiet_pillow()
    library = _Library(options["video_library"])
    out, masks, areas = _outputs(options, library)
    seg = _open_segmenter({**options, "shift_stitch": "1"})
    table = ClassTable.of(len(seg.output_scale), seg.classes, seg.palette)
    clear = tuple(i for i, name in enumerate(table.names) if name == "background")
    source = open_source(spec, options["capture_size"], library)
    try:
        for note in source.notes:
            click.echo(f"fcnseg: note: {note}", err=True)
        if options["capture_size"] and not source.live:
            click.echo(f"fcnseg: note: {spec}: not a camera, --capture-size ignored", err=True)
        sinks: list[Any] = []
        if out is not None:
            sinks.append(VideoSink(out, source.fps, library()))
            if source.live and not library().keeps_time:
                click.echo(
                    f"fcnseg: note: {out}: {library().name} writes frames back to back (no "
                    "timestamps): the video plays the frames kept without the dropped ones' gaps",
                    err=True,
                )
        if masks is not None:
            package = getattr(seg.package, "path", None)
            sinks.append(MaskSink(masks, seg.palette, table, str(package) if package else None))
        if areas is not None:
            sinks.append(AreasSink(areas, table.names, spec, source.fps))
    except BaseException:
        source.close()
        raise
    summary = VideoRun(
        seg,
        source,
        sinks,
        overlay=out is not None,
        alpha=options["alpha"],
        clear=clear,
        size=options["size"],
        hud=options["hud"],
        workers=options["workers"],
        max_frames=options["max_frames"],
    ).run()
    for sink in sinks:
        if getattr(sink, "note", None):
            click.echo(f"fcnseg: note: {sink.note}", err=True)
    if summary.note:
        click.echo(f"fcnseg: note: {summary.note}", err=True)
    if summary.error:
        click.echo(f"fcnseg: {summary.error}", err=True)
    if summary.interrupted:
        click.echo(
            f"fcnseg: interrupted after {summary.frames} frame(s); the outputs hold them", err=True
        )
    click.echo(f"fcnseg: {summary.line()}", err=True)
    return summary.status
