"""``fcnseg segment`` (and the ``bench`` placeholder): the host's command line.

Imports stay light: numpy, Pillow, tqdm, click, and the host modules; the backend (pynq on a
board) is imported only when chosen.

Outputs for an input ``photo.jpg`` in ``OUT``: ``photo.png`` (the mask, a palette PNG whose pixel
values are class indices), ``photo_overlay.jpg`` (``--overlay``) and ``photo_scores.npy``
(``--scores``: the integer score map over the canvas, ``(Hc/d, Wc/d, C)`` int32; logits are
``scores * output_scale + output_bias`` from the package). Files found under a folder argument keep
their path relative to that folder. Existing outputs are kept (the image is skipped) unless
``--overwrite``.
"""

from __future__ import annotations

import glob
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

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
@click.option("--debug", "debug_here", is_flag=True, help="Show tracebacks for failed images.")
@click.pass_context
def segment(
    ctx: click.Context,
    inputs: tuple[str, ...],
    output: str,
    package: str | None,
    backend: str,
    shift_stitch: str,
    overlap: int | None,
    overlay: bool,
    alpha: float,
    scores: bool,
    overwrite: bool,
    debug_here: bool,
) -> None:
    """Segment images (files, folders, globs) into masks under OUT.

    For each image: OUT/NAME.png (palette PNG, pixel = class index), with --overlay
    OUT/NAME_overlay.jpg, with --scores OUT/NAME_scores.npy (integer scores over the padded
    canvas). Exit status 1 if any input failed.
    """
    import numpy as np
    from fcnseg.host.images import load_image, save_array, save_mask, save_overlay
    from fcnseg.host.segmenter import Segmenter
    from tqdm import tqdm

    debug = debug_here or _debug(ctx)
    jobs, failures = collect_inputs(inputs, exclude=Path(output))
    for line in failures:
        click.echo(f"fcnseg: {line}", err=True)
    seg = Segmenter.load(package, backend, shift_stitch=int(shift_stitch), overlap=overlap)
    # A "background" class (VOC's, the synthetic scenes') is left clear in overlays.
    clear = tuple(i for i, name in enumerate(seg.classes or []) if name == "background")
    out_dir = Path(output)
    summary = Summary(failures=list(failures))
    warned: set[tuple[int, int]] = set()
    start = time.perf_counter()
    bar = tqdm(jobs, unit="img", desc="segment", file=sys.stderr, disable=None)

    def say(line: str) -> None:  # one line on stderr, above the progress bar
        tqdm.write(line, file=sys.stderr)

    for job in bar:
        mask_path = out_dir / job.stem.with_suffix(".png")
        if mask_path.exists() and not overwrite:
            summary.skipped += 1
            say(f"fcnseg: {job.source}: {mask_path} exists, skipped (use --overwrite)")
            continue
        try:
            image = load_image(job.source)
            plan = seg.plan(*image.shape[:2])
            if not plan.exact and plan.canvas not in warned:
                warned.add(plan.canvas)
                say(
                    f"fcnseg: note: overlap {plan.overlap} px leaves {plan.guard} px of context, "
                    f"the receptive field needs {seg.geometry.margin}: tiles are not exact"
                )
            result = seg.segment(image)
            save_mask(mask_path, result.labels, seg.palette)
            if overlay:
                path = out_dir / job.stem.parent / f"{job.stem.name}_overlay.jpg"
                save_overlay(path, image, result.labels, seg.palette, alpha, clear)
            if scores:
                path = out_dir / job.stem.parent / f"{job.stem.name}_scores.npy"
                save_array(path, result.scores.astype(np.int32))
        except UserError as error:
            summary.failures.append(str(error))
            say(f"fcnseg: {error}")
            continue
        except Exception as error:  # a bug, or an OS error while writing: one line, go on
            if debug:
                raise
            summary.failures.append(f"{job.source}: {type(error).__name__}: {error}")
            say(f"fcnseg: {job.source}: {type(error).__name__}: {error} (--debug: traceback)")
            continue
        summary.done += 1
        summary.pixels += image.shape[0] * image.shape[1]
    bar.close()
    summary.seconds = time.perf_counter() - start
    mpx = summary.pixels / 1e6
    rate = mpx / summary.seconds if summary.seconds > 0 else 0.0
    click.echo(
        f"segmented {summary.done} image(s), {mpx:.2f} Mpx in {summary.seconds:.1f} s "
        f"({rate:.2f} Mpx/s) -> {out_dir}; skipped {summary.skipped}; "
        f"failed {len(summary.failures)}"
    )
    if summary.failures:
        raise SystemExit(1)


@click.command()
@click.option("-o", "--output", default="bench", show_default=True)
def bench(output: str) -> None:
    """Run the benchmark suite (not in this version)."""
    raise UserError("`fcnseg bench` is not implemented yet")
