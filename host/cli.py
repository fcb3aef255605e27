"""``fcnseg segment``: the host's command line.

Imports stay light: numpy, Pillow, tqdm, click, and the host modules; the backend (pynq on a
board) is imported only when chosen.

Outputs for an input ``photo.jpg`` in ``OUT`` (:mod:`fcnseg.host.batch`): ``photo.png`` (the
mask: a palette PNG whose pixel values are class indices, class names in its text chunk),
``photo_overlay.jpg`` (``--overlay``; ``--legend`` adds a strip naming the classes;
``--overlay-format png``: ``photo_overlay.png``; ``--jpeg-quality``),
``photo_scores.npz`` (``--scores``: the integer scores cropped to the image with their scale,
bias, classes and stride, :mod:`fcnseg.host.images.scores`) and ``classes.json`` (names,
colours, palette indices) in each folder of masks. Files found under a folder argument keep
their path relative to that folder; same-stem inputs get distinct names
(:mod:`fcnseg.host.inputs`). Existing outputs are kept (the image is skipped) unless
``--overwrite``. ``--json FILE`` writes a per-image summary (:mod:`fcnseg.host.summary`).

How a batch runs (issue 9):

- The package is verified (sha256 of every file, format version, board, driver settings) before
  any image is read or output written; a bad one is one ``fcnseg: error:`` line, exit 2.
- Images go through :class:`fcnseg.host.pipeline.Pipeline` (decoding, accelerator calls and
  upsampling + writing overlap in threads). Images above :data:`~fcnseg.host.batch.STREAM_PIXELS`
  (and any binary PPM/PGM) are segmented in strips instead
  (:meth:`fcnseg.host.segmenter.Segmenter.stream`, memory bounded by a row of tiles; mask and
  scores written row by row), unless ``--overlay`` or ``--shift-stitch`` needs the whole image.
- A bad input is one ``fcnseg: FILE: reason`` line; the batch goes on; exit status 1 at the end.
  Anything that is not a :class:`~fcnseg.errors.UserError` (a bug) is one line too, with its
  type, or a traceback under ``--debug``.
- The output folder is checked before any image is read: a folder that cannot be made or
  written, a read-only file system, too little space for the first image's outputs: one
  ``fcnseg: error: OUT: ...`` line, exit 2 (:mod:`fcnseg.host.output_folder`).
- An image's outputs are all written to hidden temporaries, then renamed into place together,
  the mask last, so an existing mask means a finished image with all its outputs
  (:mod:`fcnseg.host.batch`). A disk that fills up (or turns read-only) mid-run stops the
  batch: one line naming the image, the rest not attempted, exit 1. Ctrl-C stops the batch
  (exit 130, one line): images in the middle of being written finish, the rest are untouched,
  and the ``--json`` summary says what was done. After a SIGKILL the next run removes the
  temporary files left behind. Re-running the same command skips finished images and does the
  rest.
- Concurrent runs on one output folder share the work: each image is claimed before it is
  worked on (:mod:`fcnseg.host.claims`), and a run leaves images another live run holds to it
  (``done by another run`` in its summary).
- ``--local-workers N`` / ``--scheduler ADDRESS`` run the batch on a Dask cluster instead, one
  task per image on workers that each own an accelerator, with the same outputs, claims and
  summary (:mod:`fcnseg.host.farm`).
- The closing line counts what happened; each failed input is listed above it with its reason,
  and ``--json`` records every input, also those that never became an image
  (:mod:`fcnseg.host.summary`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fcnseg.errors import ParameterError, UserError
from fcnseg.host.farm.options import tls_options
from fcnseg.host.inputs import IMAGE_SUFFIXES, Job, collect_inputs

if TYPE_CHECKING:
    from fcnseg.host.batch import Batch

__all__ = ["FLAGS", "IMAGE_SUFFIXES", "Job", "collect_inputs", "segment"]

#: Library parameter -> the option that sets it: the library's errors name its parameters
#: (:class:`~fcnseg.errors.ParameterError`), this command's messages name its options.
FLAGS = {
    "backend": "--backend",
    "board": "--board",
    "overlap": "--overlap",
    "shift_stitch": "--shift-stitch",
    "finish_workers": "--workers",
}


#: ``--board``, the same in every command that opens a package (segment, classify, video)
board_option = click.option(
    "--board",
    default=None,
    help="Refuse a package built for another board (e.g. pynq-z2) [default: with --backend "
    "pynq, the PYNQ image's BOARD].",
)


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(isinstance(root.obj, dict) and root.obj.get("debug"))


SCORES_HELP = (
    "Also write NAME_scores.npz: the integer scores (int32, H/stride x W/stride x classes, "
    "cropped to the image) with per-class 'scale' and 'bias' (logits = scores * scale + bias), "
    "'classes', 'stride', 'field', 'image_size' and 'meaning'; np.load(..., "
    "allow_pickle=False). Streamed for images segmented in strips."
)


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    default="out",
    show_default=True,
    type=click.Path(),  # not file_okay=False: the up-front check says what is wrong in one line
    help="Output folder.",
)
@click.option(
    "--package", type=click.Path(), default=None, help="Package folder [default: shipped]."
)
@click.option("--backend", default="sim", show_default=True, help="sim | pynq.")
@board_option
@click.option(
    "--shift-stitch",
    type=click.Choice(["1", "2", "4"]),
    default="1",
    show_default=True,
    help="Shift-and-stitch factor: output stride / f with f*f passes.",
)
@click.option(
    "--overlap",
    type=click.IntRange(min=0),
    default=None,
    help="Tile overlap in pixels, rounded up to a multiple of the net stride and capped at the "
    "tile minus it [default: the exact one, from the receptive field]; smaller is faster, "
    "not exact.",
)
@click.option("--overlay", is_flag=True, help="Also write an alpha-blended overlay (JPEG).")
@click.option(
    "--legend",
    is_flag=True,
    help="Draw a legend strip (colour + class name) under each overlay (implies --overlay).",
)
@click.option(
    "--alpha", default=0.5, show_default=True, type=click.FloatRange(0, 1), help="Overlay opacity."
)
@click.option(
    "--overlay-format",
    type=click.Choice(["jpeg", "png"]),
    default="jpeg",
    show_default=True,
    help="Overlay files: NAME_overlay.jpg, or lossless NAME_overlay.png (~80x slower to encode; "
    "masks are always lossless PNG).",
)
@click.option(
    "--jpeg-quality",
    type=click.IntRange(1, 95),
    default=90,
    show_default=True,
    help="Quality of JPEG overlays.",
)
@click.option("--scores", is_flag=True, help=SCORES_HELP)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write a per-input summary to this file at the end (also when interrupted or "
    "stopped): input, outputs, size, seconds, pixels per class, status done / skipped / "
    "another-run / failed / not-attempted with the reason.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option(
    "--frames",
    type=click.Choice(["first", "all"]),
    default="first",
    show_default=True,
    help="Of a multi-frame file (animated GIF/WebP/PNG, multi-page TIFF): frame 0 only (and a "
    "note saying so), or every frame, each its own image NAME_f000.png, NAME_f001.png, ...",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=2,  # = fcnseg.host.pipeline.FINISH_WORKERS (tested); this module imports no numpy
    show_default=True,
    help="Threads finishing images (upsample, argmax, writing) in the pipeline; two suit a "
    "Pynq-Z2's two cores (the finishing releases the GIL most of its time).",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=None,
    help="Refuse images with more pixels (decompression bomb guard) [default: 2**28 = 268 "
    "Mpx]. Raise it for bigger images: PPM/PGM and 8-bit PNG are segmented in bounded memory.",
)
@click.option(
    "--local-workers",
    type=click.IntRange(min=1),
    default=None,
    help="Spread the batch over a Dask cluster of N worker processes on this machine (one "
    "accelerator each: --backend sim, or pynq on a board); needs fcnseg[cluster].",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Spread the batch over the Dask cluster at ADDRESS (workers: `dask worker ADDRESS "
    "--nthreads 1 --resources FPGA=1`, each seeing INPUTS and OUT at the same paths); needs "
    "fcnseg[cluster].",
)
@tls_options
@click.option("--debug", "debug_here", is_flag=True, help="Show tracebacks for failed images.")
@click.pass_context
def segment(ctx: click.Context, inputs: tuple[str, ...], **options: Any) -> None:
    """Segment images (files, folders, globs) into masks under OUT.

    For each image: OUT/NAME.png (palette PNG, pixel = class index, class names in its text
    chunk) and OUT/classes.json (names, colours, indices); with --overlay OUT/NAME_overlay.jpg
    (--overlay-format png: .png; --legend: with the class colours named), with --scores
    OUT/NAME_scores.npz (integer scores cropped to the image, with their scale and bias).
    Outputs are written atomically; existing masks are skipped (re-run an interrupted batch to
    finish it), --overwrite redoes them. Same-stem inputs (a.png, a.bmp) get distinct outputs
    (a.png, a.bmp.png). Images above 16 Mpx (and any PPM/PGM) are segmented in strips unless
    --overlay or --shift-stitch needs the whole image: memory is bounded by a row of tiles for
    PPM/PGM and 8-bit PNG; other formats are decoded whole first. Exit status 1 if any input
    failed or the disk filled up, 2 if OUT cannot be used (checked before any image), 130 if
    interrupted.
    """
    debug = bool(options.pop("debug_here")) or _debug(ctx)
    raise SystemExit(_run(inputs, options, debug=debug))


def _open_segmenter(options: dict[str, Any]) -> Any:
    """The package verified and opened (before any image is read or output written)."""
    from fcnseg.host.segmenter import Segmenter

    try:
        return Segmenter.load(
            options["package"],
            options["backend"],
            shift_stitch=int(options["shift_stitch"]),
            overlap=options["overlap"],
            board=options["board"],
        )
    except ParameterError as error:
        raise UserError(error.spelled(FLAGS)) from None


def _run(inputs: tuple[str, ...], options: dict[str, Any], *, debug: bool) -> int:
    """Run one batch; the exit status (0, 1: some input failed or the disk filled up, 130:
    interrupted); a batch refused before any image raises :class:`UserError` (exit 2)."""
    from fcnseg.host.batch import Batch
    from fcnseg.host.images import MAX_PIXELS
    from fcnseg.host.images.decode import quiet_pillow
    from fcnseg.host.summary import ImageRecord

    quiet_pillow()
    local_workers, scheduler = options.get("local_workers"), options.get("scheduler")
    if local_workers is not None and scheduler is not None:
        raise UserError("--local-workers and --scheduler exclude each other: choose one cluster")
    farm = local_workers is not None or scheduler is not None
    out_dir = Path(options["output"])
    jobs, failures = collect_inputs(inputs, exclude=out_dir, frames=options["frames"])
    for line in failures:
        click.echo(f"fcnseg: {'note: ' if line.note else ''}{line}", err=True)
    failures = [line for line in failures if not line.note]
    batch = Batch(
        # a farm's client only plans and checks: the workers open the backend (:mod:`.farm`)
        _open_segmenter({**options, "backend": "sim"} if farm else options),
        out_dir,
        overlay=bool(options["overlay"] or options["legend"]),
        legend=bool(options["legend"]),
        alpha=options["alpha"],
        overlay_format=options["overlay_format"],
        jpeg_quality=options["jpeg_quality"],
        scores=bool(options["scores"]),
        max_pixels=options["max_pixels"] or MAX_PIXELS,
        debug=debug,
        flags=FLAGS,
    )
    for line in failures:
        batch.summary.add(ImageRecord(line.path, "failed", line))
    status, refused = 0, False
    try:
        if farm:
            from fcnseg.host.farm.client import run_farm

            run_farm(batch, jobs, options, local_workers=local_workers, scheduler=scheduler)
        else:
            batch.all(jobs, overwrite=options["overwrite"], workers=options["workers"])
    except KeyboardInterrupt:
        batch.summary.interrupted = True
        batch.summary.not_attempted("interrupted")
        status = 130
    except UserError:  # refused before any image (the output folder): one line, no summary
        refused = True
        raise
    finally:
        batch.close()
        if (
            options["json_path"]
            and not refused
            and not _write_summary(batch, Path(options["json_path"]), options["backend"])
        ):
            status = status or 1
    if status == 130:
        done = len(batch.summary.of_status("done"))
        click.echo(
            f"fcnseg: interrupted after {done} image(s); finished outputs are complete, run "
            "the same command again to do the rest",
            err=True,
        )
        return status
    for line in batch.summary.failure_lines():
        click.echo(line)
    click.echo(batch.summary.line(batch.out_dir))
    failed = batch.summary.of_status("failed") or batch.summary.stopped
    return 1 if status or failed else 0


def _write_summary(batch: Batch, path: Path, backend: str) -> bool:
    """``--json``: the batch's records, with the package, backend and output folder; False
    (and one line) if the file cannot be written."""
    package = getattr(batch.seg.package, "path", None)
    context = {"package": str(package) if package else None, "backend": backend}
    try:
        batch.summary.write(path, **context, output=str(batch.out_dir))
    except OSError as error:
        click.echo(
            f"fcnseg: {path}: cannot write the summary ({error.strerror or error})", err=True
        )
        return False
    return True
