"""``fcnseg classify``: a converted classifier slid over images (:mod:`fcnseg.host.classify`).

For each image it prints one line naming the image, its map(s) and scales, then the top-k
classes with their probabilities::

    photo.jpg: 6x6 cells at 384x384 (stride 32, mean)
      1. circles     0.8123
      2. squares     0.1310

``--json FILE`` / ``--csv FILE`` record every input (also the failed ones, with the reason):
per image the top-k (class, index, probability, logit), every class's probability (JSON), and
per scale the resized size, the map's cells and the stride. Both are written atomically
(:func:`fcnseg.atomic.atomic_write_text`) once the batch is done: a reader sees the previous
file or the whole new one. Interrupted (Ctrl-C), the reports are still written, atomically,
with the images that finished, the rest as ``not attempted`` (reason ``interrupted``) and
``"interrupted": true`` in the JSON; one line says how many finished, exit status 130.

Exit status: 0; 1 if any input failed (a name that matches nothing, an unreadable image, an
image too small for the classifier's window at the chosen size: one ``fcnseg: FILE: reason``
line each, the others go on) or a report could not be written; 2 when the run is refused
before any image is read (a package that does not load or is not a classifier, ``--top``
beyond the package's classes, a ``--stride`` the net cannot give: one ``fcnseg: error:`` line).

Imports stay light (click, the host modules); the backend is imported only when chosen.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fcnseg.errors import ParameterError, UserError
from fcnseg.host.cli import board_option

if TYPE_CHECKING:
    from fcnseg.host.classify import Classification, Classifier

#: Library parameter -> the option that sets it (:meth:`ParameterError.spelled`).
FLAGS = {
    "backend": "--backend",
    "board": "--board",
    "stride": "--stride",
    "pool": "--pool",
    "top": "--top",
    "size": "--size",
    "scale": "--scale",
}

#: Classes shown per image without ``--top`` (all of them for a package with fewer).
DEFAULT_TOP = 5

#: The CSV report's columns, one row per (image, rank); a failed image has one row, rank empty.
CSV_COLUMNS = (
    "input",
    "status",
    "rank",
    "class",
    "index",
    "probability",
    "logit",
    "sizes",
    "cells",
    "stride",
    "reason",
)


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--package",
    type=click.Path(),
    default=None,
    help="Classification package folder [default: the shipped classifier-pynq-z2].",
)
@click.option("--backend", default="sim", show_default=True, help="sim | pynq.")
@board_option
@click.option(
    "--size",
    "sizes",
    type=(click.IntRange(min=1), click.IntRange(min=1)),
    multiple=True,
    metavar="H W",
    help="Resize each image to H x W pixels before scoring; repeat for several scales "
    "[default, with no --scale either: the package's tile, one accelerator pass].",
)
@click.option(
    "--scale",
    "scales",
    type=click.FloatRange(min=0, min_open=True),
    multiple=True,
    help="Resize each image by this factor; repeat for several scales. Several scales "
    "(--size and --scale together: sizes first) average the per-scale pooled logits.",
)
@click.option(
    "--pool",
    type=click.Choice(["mean", "max"]),
    default="mean",
    show_default=True,
    help="How the dequantized class scores are pooled over the map's positions.",
)
@click.option(
    "--stride",
    type=int,
    default=None,
    help="Pixels between the classifier's positions: the package's output stride [default; 32 "
    "for the shipped classifiers], or a divisor of it by shifted passes interleaved (half: 4 "
    "passes, a quarter: 16).",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=None,
    help="Classes printed and recorded per image, at most the package's classes [default: 5, "
    "or all of them when the package has fewer].",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the per-image results (top-k, every class's probability, maps, scales) here.",
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the top-k per image as CSV rows here (one row per image and rank).",
)
@click.option(
    "--frames",
    type=click.Choice(["first", "all"]),
    default="first",
    show_default=True,
    help="Of a multi-frame file (animated GIF/WebP/PNG, multi-page TIFF): frame 0 only (and a "
    "note saying so), or every frame, each classified as its own image 'FILE (frame k)'.",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=None,
    help="Refuse images with more pixels (decompression bomb guard) [default: 2**28].",
)
@click.option("--debug", "debug_here", is_flag=True, help="Show tracebacks for failed images.")
@click.pass_context
def classify(ctx: click.Context, inputs: tuple[str, ...], **options: Any) -> None:
    """Classify images (files, folders, globs) with a converted classifier.

    Each image is resized to each scale (--size / --scale; default: the package's tile), the
    classifier runs over it in one pass per stride phase (tiled when the image exceeds the
    accelerator's tile, the score map stitched exactly), the dequantized class scores are
    pooled over positions (--pool) and averaged over scales, and the top --top classes are
    printed with their softmax probabilities. Exit status 1 if any input failed, 2 if the
    package or the options are refused (before any image).
    """
    root = ctx.find_root()
    debug = bool(options.pop("debug_here")) or bool(
        isinstance(root.obj, dict) and root.obj.get("debug")
    )
    raise SystemExit(_run(inputs, options, debug=debug))


def _open(options: dict[str, Any]) -> Classifier:
    """The package loaded and opened, the options checked against it (before any image)."""
    from fcnseg.host.classify import Classifier

    try:
        clf = Classifier.load(options["package"], options["backend"], board=options["board"])
        if options["stride"] is not None and options["stride"] not in clf.strides():
            raise ParameterError(
                f"{{stride}} must be one of {', '.join(map(str, clf.strides()))} for this package",
                stride=options["stride"],
            )
    except ParameterError as error:
        raise UserError(error.spelled(FLAGS)) from None
    if options["top"] is None:
        options["top"] = min(DEFAULT_TOP, len(clf.classes))
    elif options["top"] > len(clf.classes):
        raise UserError(f"--top {options['top']} exceeds the package's {len(clf.classes)} classes")
    return clf


def _run(inputs: tuple[str, ...], options: dict[str, Any], *, debug: bool) -> int:
    """Classify every input; the exit status (0, or 1: an input failed or a report did not
    write); a run refused before any image raises :class:`UserError` (exit 2)."""
    from fcnseg.host.images import MAX_PIXELS
    from fcnseg.host.images.decode import quiet_pillow
    from fcnseg.host.images.messages import frame_label
    from fcnseg.host.inputs import collect_inputs

    quiet_pillow()
    clf = _open(options)
    scales: list[Any] = [tuple(s) for s in options["sizes"]] + list(options["scales"])
    jobs, failures = collect_inputs(inputs, frames=options["frames"])
    records: list[dict[str, Any]] = []
    for line in failures:
        click.echo(f"fcnseg: {'note: ' if line.note else ''}{line}", err=True)
        if not line.note:
            records.append({"input": line.path, "status": "failed", "reason": line.reason})
    max_pixels = options["max_pixels"] or MAX_PIXELS
    attempted = 0
    try:
        for job in jobs:
            attempted += 1
            record = _classify_one(clf, job, scales, options, max_pixels, debug=debug)
            records.append(record)
            if record["status"] == "done":
                click.echo(_lines(record))
    except KeyboardInterrupt:  # Ctrl-C: report what finished, mark the rest, exit 130
        for job in jobs[max(0, attempted - 1) :]:
            label = frame_label(job.source, job.frame)
            records.append({"input": label, "status": "not attempted", "reason": "interrupted"})
        written = _write_reports(records, clf, options, interrupted=True)
        done = sum(r["status"] == "done" for r in records)
        reports = " (the reports hold them)" if written and _has_reports(options) else ""
        click.echo(f"fcnseg: interrupted after {done} image(s) classified{reports}", err=True)
        return 130
    written = _write_reports(records, clf, options)
    failed = [r for r in records if r["status"] == "failed"]
    done = len(records) - len(failed)
    click.echo(f"{done} image(s) classified, {len(failed)} failed")
    return 1 if failed or not written else 0


def _classify_one(
    clf: Classifier,
    job: Any,
    scales: list[Any],
    options: dict[str, Any],
    max_pixels: int,
    *,
    debug: bool,
) -> dict[str, Any]:
    """One input's record: ``done`` with its top-k, or ``failed`` with the reason (printed)."""
    from fcnseg.host.images.messages import frame_label

    if job.note:
        click.echo(f"fcnseg: note: {job.note}", err=True)
    label = frame_label(job.source, job.frame)
    try:
        result = clf.classify(
            job.load(max_pixels),
            scales=scales or None,
            pool=options["pool"],
            stride=options["stride"],
        )
    except Exception as error:  # a bad image; anything else is a bug: one line too,
        if debug and not isinstance(error, UserError):  # a traceback under --debug
            raise
        reason = (
            _reason(error, label)
            if isinstance(error, UserError)
            else f"internal error ({type(error).__name__}: {error})"
        )
        click.echo(f"fcnseg: {label}: {reason}", err=True)
        return {"input": label, "status": "failed", "reason": reason}
    return _record(label, result, options["top"])


def _has_reports(options: dict[str, Any]) -> bool:
    return bool(options["json_path"] or options["csv_path"])


def _reason(error: UserError, source: str) -> str:
    """The error's text without a leading ``source:`` (the line adds it)."""
    text, prefix = str(error), f"{source}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def _record(source: str, result: Classification, k: int) -> dict[str, Any]:
    """One image's entry of the reports."""
    return {
        "input": source,
        "status": "done",
        "top": [
            {"class": name, "index": c, "probability": p, "logit": float(result.logits[c])}
            for c, name, p in result.top(k)
        ],
        "probabilities": {
            name: float(p) for name, p in zip(result.classes, result.probabilities, strict=True)
        },
        "pool": result.pool,
        "scales": [
            {"size": list(s.size), "cells": list(s.scores.shape[:2]), "stride": s.stride}
            for s in result.scales
        ],
    }


def _lines(record: dict[str, Any]) -> str:
    """The printed block of one image: a header line, then one line per rank."""
    maps = ", ".join(
        f"{s['cells'][0]}x{s['cells'][1]} cells at {s['size'][0]}x{s['size'][1]}"
        for s in record["scales"]
    )
    stride = record["scales"][0]["stride"]
    head = f"{record['input']}: {maps} (stride {stride}, {record['pool']})"
    width = max(len(t["class"]) for t in record["top"])
    ranks = [
        f"  {n}. {t['class']:<{width}}  {t['probability']:.4f}"
        for n, t in enumerate(record["top"], start=1)
    ]
    return "\n".join([head, *ranks])


def _write_reports(
    records: list[dict[str, Any]],
    clf: Classifier,
    options: dict[str, Any],
    *,
    interrupted: bool = False,
) -> bool:
    """``--json`` and ``--csv``, each atomically; False (and one line) if one cannot be.
    ``interrupted``: the run was stopped by Ctrl-C (the JSON says so)."""
    from fcnseg.atomic import atomic_write_text

    package = clf.package.path if clf.package is not None else None
    reports = []
    if options["json_path"]:
        context = {
            "package": str(package) if package else None,
            "backend": options["backend"],
            "pool": options["pool"],
            "stride": options["stride"] or clf.geometry.stride,
            "window": clf.geometry.window,
            "classes": list(clf.classes),
            # the scales asked for (none: the package's tile); each image records its own sizes
            "sizes": [list(size) for size in options["sizes"]],
            "scale_factors": list(options["scales"]),
            "interrupted": interrupted,
        }
        text = json.dumps({**context, "images": records}, indent=2) + "\n"
        reports.append((Path(options["json_path"]), text))
    if options["csv_path"]:
        reports.append((Path(options["csv_path"]), _csv(records)))
    ok = True
    for path, text in reports:
        try:
            atomic_write_text(path, text)
        except OSError as error:
            click.echo(
                f"fcnseg: {path}: cannot write the report ({error.strerror or error})", err=True
            )
            ok = False
    return ok


def _csv(records: list[dict[str, Any]]) -> str:
    """The CSV report (:data:`CSV_COLUMNS`)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in records:
        if r["status"] != "done":
            writer.writerow({"input": r["input"], "status": r["status"], "reason": r["reason"]})
            continue
        shared = {
            "input": r["input"],
            "status": r["status"],
            "sizes": ";".join(f"{s['size'][0]}x{s['size'][1]}" for s in r["scales"]),
            "cells": ";".join(f"{s['cells'][0]}x{s['cells'][1]}" for s in r["scales"]),
            "stride": r["scales"][0]["stride"],
        }
        for rank, t in enumerate(r["top"], start=1):
            writer.writerow(
                {
                    **shared,
                    "rank": rank,
                    "class": t["class"],
                    "index": t["index"],
                    "probability": repr(t["probability"]),
                    "logit": repr(t["logit"]),
                }
            )
    return out.getvalue()
