"""``fcnseg segment`` (and the ``bench`` placeholder): the host's command line.

Imports stay light: numpy, Pillow, tqdm, click, and the host modules; the backend (pynq on a
board) is imported only when chosen.

Outputs for an input ``photo.jpg`` in ``OUT``: ``photo.png`` (the mask, a palette PNG whose pixel
values are class indices), ``photo_overlay.jpg`` (``--overlay``) and ``photo_scores.npy``
(``--scores``: the integer score map over the canvas, ``(Hc/d, Wc/d, C)`` int32; logits are
``scores * output_scale + output_bias`` from the package). Files found under a folder argument keep
their path relative to that folder. Existing outputs are kept (the image is skipped) unless
``--overwrite``.

How a batch runs (issue 9):

- The package is verified (sha256 of every file, format version, board, driver settings) before
  any image is read or output written; a bad one is one ``fcnseg: error:`` line, exit 2.
- Images go through :class:`fcnseg.host.pipeline.Pipeline` (decoding, accelerator calls and
  upsampling + writing overlap in threads). Images above :data:`STREAM_PIXELS` (and any binary
  PPM/PGM) are segmented in strips instead (:meth:`fcnseg.host.segmenter.Segmenter.stream`,
  memory bounded by a row of tiles; mask and scores written row by row), unless ``--overlay``
  or ``--shift-stitch`` needs the whole image.
- A bad input is one ``fcnseg: FILE: reason`` line; the batch goes on; exit status 1 at the end.
  Anything that is not a :class:`~fcnseg.errors.UserError` (a bug) is one line too, with its
  type, or a traceback under ``--debug``.
- Every output is written to a hidden temporary file and renamed (atomic); the mask is written
  last, so an existing mask means a finished image. Ctrl-C stops the batch (exit 130, one
  line): images in the middle of being written finish, the rest are untouched. After a SIGKILL
  the next run removes the temporary files left behind. Re-running the same command skips
  finished images and does the rest.
"""

from __future__ import annotations

import contextlib
import glob
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from fcnseg.errors import UserError

#: Suffixes picked up from folders (files named explicitly may have any suffix Pillow reads).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm")


@dataclass
class Job:
    """One input image and the stem (relative path without suffix) of its outputs."""

    source: Path
    stem: Path


@dataclass
class Summary:
    """What happened, for the last line."""

    done: int = 0
    skipped: int = 0
    pixels: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


def collect_inputs(
    inputs: tuple[str, ...], exclude: Path | None = None
) -> tuple[list[Job], list[str]]:
    """Expand files, folders (recursively, image suffixes) and globs into jobs; unmatched -> errors.

    Two inputs that would write the same outputs are an error for the second one. Folder scans
    skip everything under ``exclude`` (the output folder, so a re-run never reads its own masks).
    """
    skip = exclude.resolve() if exclude is not None else None
    jobs: list[Job] = []
    errors: list[str] = []
    taken: dict[Path, Path] = {}

    def add(source: Path, stem: Path) -> None:
        if stem in taken and taken[stem] != source:
            errors.append(f"{source}: its outputs would overwrite those of {taken[stem]}")
            return
        if stem not in taken:
            taken[stem] = source
            jobs.append(Job(source, stem))

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in IMAGE_SUFFIXES
                and not (skip is not None and p.resolve().is_relative_to(skip))
            )
            if not found:
                errors.append(f"{path}: no images in this folder")
            for p in found:
                add(p, p.relative_to(path).with_suffix(""))
        elif path.exists():
            add(path, Path(path.stem))
        else:
            matches = sorted(glob.glob(item, recursive=True))
            files = [Path(m) for m in matches if Path(m).is_file()]
            if not files:
                errors.append(f"{item}: no such file or folder, and no file matches it")
            for p in files:
                add(p, Path(p.stem))
    return jobs, errors


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(isinstance(root.obj, dict) and root.obj.get("debug"))


#: Images above this many pixels are segmented in strips (:meth:`Segmenter.stream`), with
#: memory bounded by a row of tiles instead of the image (when the options allow, see --help).
STREAM_PIXELS = 4096 * 4096


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    default="out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Output folder.",
)
@click.option(
    "--package", type=click.Path(), default=None, help="Package folder [default: shipped]."
)
@click.option("--backend", default="sim", show_default=True, help="sim | pynq.")
@click.option(
    "--board",
    default=None,
    help="Refuse a package built for another board (e.g. pynq-z2) [default: with --backend "
    "pynq, the PYNQ image's BOARD].",
)
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
    "--alpha", default=0.5, show_default=True, type=click.FloatRange(0, 1), help="Overlay opacity."
)
@click.option("--scores", is_flag=True, help="Also write the integer score map (.npy).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Threads finishing images (upsample, argmax, writing) in the pipeline.",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=None,
    help="Refuse images with more pixels (decompression bomb guard) [default: 2**28 = 268 "
    "Mpx]. Raise it for bigger images: PPM/PGM and 8-bit PNG are segmented in bounded memory.",
)
@click.option("--debug", "debug_here", is_flag=True, help="Show tracebacks for failed images.")
@click.pass_context
def segment(
    ctx: click.Context,
    inputs: tuple[str, ...],
    output: str,
    package: str | None,
    backend: str,
    board: str | None,
    shift_stitch: str,
    overlap: int | None,
    overlay: bool,
    alpha: float,
    scores: bool,
    overwrite: bool,
    workers: int,
    max_pixels: int | None,
    debug_here: bool,
) -> None:
    """Segment images (files, folders, globs) into masks under OUT.

    For each image: OUT/NAME.png (palette PNG, pixel = class index), with --overlay
    OUT/NAME_overlay.jpg, with --scores OUT/NAME_scores.npy (integer scores over the padded
    canvas). Outputs are written atomically; existing masks are skipped (re-run an interrupted
    batch to finish it), --overwrite redoes them. Images above 16 Mpx (and any PPM/PGM) are
    segmented in strips unless --overlay or --shift-stitch needs the whole image: memory is
    bounded by a row of tiles for PPM/PGM and 8-bit PNG; other formats are decoded whole
    first. Exit status 1 if any input failed, 130 if interrupted.
    """
    from fcnseg.host.images import MAX_PIXELS
    from fcnseg.host.segmenter import Segmenter

    debug = debug_here or _debug(ctx)
    run = _Run(
        out_dir=Path(output),
        overlay=overlay,
        alpha=alpha,
        scores=scores,
        max_pixels=max_pixels or MAX_PIXELS,
        debug=debug,
    )
    jobs, failures = collect_inputs(inputs, exclude=Path(output))
    for line in failures:
        click.echo(f"fcnseg: {line}", err=True)
    # Everything about the package (sha256, format, board, driver settings) is checked here,
    # before any image is read or any output written.
    run.seg = Segmenter.load(
        package, backend, shift_stitch=int(shift_stitch), overlap=overlap, board=board
    )
    # A "background" class (VOC's, the synthetic scenes') is left clear in overlays.
    run.clear = tuple(i for i, name in enumerate(run.seg.classes or []) if name == "background")
    run.summary.failures.extend(failures)
    try:
        run.all(jobs, overwrite=overwrite, workers=workers)
    except KeyboardInterrupt:
        run.close()
        click.echo(
            f"fcnseg: interrupted after {run.summary.done} image(s); finished outputs are "
            "complete, run the same command again to do the rest",
            err=True,
        )
        raise SystemExit(130) from None
    run.close()
    summary = run.summary
    mpx = summary.pixels / 1e6
    rate = mpx / summary.seconds if summary.seconds > 0 else 0.0
    click.echo(
        f"segmented {summary.done} image(s), {mpx:.2f} Mpx in {summary.seconds:.1f} s "
        f"({rate:.2f} Mpx/s) -> {run.out_dir}; skipped {summary.skipped}; "
        f"failed {len(summary.failures)}"
    )
    if summary.failures:
        raise SystemExit(1)


@dataclass
class _Run:
    """One ``fcnseg segment`` batch: routes images to the pipeline or the strip path, writes."""

    out_dir: Path
    overlay: bool
    alpha: float
    scores: bool
    max_pixels: int
    debug: bool
    seg: Any = None
    clear: tuple[int, ...] = ()
    summary: Summary = field(default_factory=Summary)
    warned: set[tuple[int, int]] = field(default_factory=set)
    bar: Any = None

    def say(self, line: str) -> None:
        """One line on stderr, above the progress bar."""
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def paths(self, job: Job) -> list[Path]:
        """The outputs of ``job``: the mask first."""
        out = [self.out_dir / job.stem.with_suffix(".png")]
        if self.overlay:
            out.append(self.out_dir / job.stem.parent / f"{job.stem.name}_overlay.jpg")
        if self.scores:
            out.append(self.out_dir / job.stem.parent / f"{job.stem.name}_scores.npy")
        return out

    def note_plan(self, height: int, width: int) -> None:
        plan = self.seg.plan(height, width)
        if not plan.exact and plan.canvas not in self.warned:
            self.warned.add(plan.canvas)
            self.say(
                f"fcnseg: note: overlap {plan.overlap} px leaves {plan.guard} px of context, "
                f"the receptive field needs {self.seg.geometry.margin}: tiles are not exact"
            )

    def fail(self, job: Job, error: BaseException) -> None:
        if isinstance(error, UserError):
            line = str(error)
            line = line if str(job.source) in line else f"{job.source}: {line}"
        else:
            if self.debug:
                raise error
            line = f"{job.source}: {type(error).__name__}: {error} (--debug: traceback)"
        self.summary.failures.append(line)
        self.say(f"fcnseg: {line}")

    def streamed(self, job: Job) -> bool:
        """Segment ``job`` in strips? (large, and no option needs the whole image)."""
        from fcnseg.host.images import image_size, is_netpbm

        if self.overlay or self.seg.shifts.factor != 1:
            return False
        if is_netpbm(job.source):
            return True
        size = image_size(job.source)
        return size is not None and size[0] * size[1] > STREAM_PIXELS

    def all(self, jobs: list[Job], *, overwrite: bool, workers: int) -> None:
        from tqdm import tqdm

        from fcnseg.host.images import remove_stale_temps

        start = time.perf_counter()
        self.bar = tqdm(total=len(jobs), unit="img", desc="segment", file=sys.stderr, disable=None)
        todo: list[Job] = []
        big: list[Job] = []
        for job in jobs:
            mask_path = self.paths(job)[0]
            if mask_path.exists() and not overwrite:
                self.summary.skipped += 1
                self.say(f"fcnseg: {job.source}: {mask_path} exists, skipped (use --overwrite)")
                self.bar.update()
                continue
            for path in self.paths(job):  # what a killed run may have left
                remove_stale_temps(path)
            (big if self.streamed(job) else todo).append(job)
        try:
            self.pipelined(todo, workers)
            for job in big:
                self.strips(job)
                self.bar.update()
        finally:
            self.summary.seconds = time.perf_counter() - start

    def pipelined(self, jobs: list[Job], workers: int) -> None:
        """Decode, accelerate and finish + write, overlapped (:mod:`fcnseg.host.pipeline`)."""
        from fcnseg.host.images import load_image
        from fcnseg.host.pipeline import Pipeline

        images: dict[int, Any] = {}  # decoded images kept for the overlay until it is written

        def decode(job: Job) -> Any:
            image = load_image(job.source, self.max_pixels)
            self.note_plan(*image.shape[:2])
            if self.overlay:
                images[id(job)] = image
            return image

        def write(result: Any) -> None:
            self.write(result.source, result, images.pop(id(result.source), None))

        pipe = Pipeline(self.seg, decode=decode, write=write, finish_workers=workers)
        for result in pipe.run(jobs):
            images.pop(id(result.source), None)
            if result.ok:
                self.summary.done += 1
                h, w = result.segmentation.labels.shape
                self.summary.pixels += h * w
            else:
                self.fail(result.source, result.exception or UserError(str(result.error)))
            self.bar.update()

    def write(self, job: Job, result: Any, image: Any) -> None:
        """Write one pipelined image's outputs (in a finish worker); the mask last, so its
        presence means the image is done."""
        import numpy as np

        from fcnseg.host.images import save_array, save_mask, save_overlay

        seg = result.segmentation
        paths = self.paths(job)
        if self.scores:
            save_array(paths[-1], seg.scores.astype(np.int32))
        if self.overlay:
            save_overlay(paths[1], image, seg.labels, self.seg.palette, self.alpha, self.clear)
        save_mask(paths[0], seg.labels, self.seg.palette)

    def strips(self, job: Job) -> None:
        """Segment one large image band by band, writing the mask (and scores) as it goes."""
        from fcnseg.host.images import npy_row_writer, open_rows, png_mask_writer

        paths = self.paths(job)
        try:
            rows = open_rows(job.source, self.max_pixels)
        except Exception as error:
            self.fail(job, error)
            return
        try:
            height, width = rows.height, rows.width
            self.note_plan(height, width)
            hc, wc = self.seg.plan(height, width).canvas
            s = self.seg.geometry.output_stride
            with contextlib.ExitStack() as stack:
                on_scores = None
                if self.scores:
                    shape = (hc // s, wc // s, len(self.seg.output_scale))
                    on_scores = stack.enter_context(npy_row_writer(paths[-1], shape, "int32"))
                mask = stack.enter_context(
                    png_mask_writer(paths[0], height, width, self.seg.palette)
                )
                self.seg.stream(rows, lambda _y, labels: mask(labels), on_scores)
        except Exception as error:
            self.fail(job, error)
            return
        finally:
            rows.close()
        self.summary.done += 1
        self.summary.pixels += height * width
