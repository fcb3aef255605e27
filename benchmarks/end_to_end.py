"""Benchmark 5: ``fcnseg segment`` end to end on sample images, and where the time goes.

The images are those of ``--samples DIR`` (``make bench``: the repository's ``samples/``; two
of them with ``--quick``), or synthetic photos of 0.26-0.38 Mpx where no folder is given.

- The command itself, in this process (``fcnseg.cli.main(["segment", SAMPLES, "-o", TMP,
  "--overwrite", "--package", PKG, "--backend", B])``, so interpreter start-up is excluded):
  decode, tile, run, stitch, upsample, argmax, write the PNG masks; images/s and megapixels/s
  of input (from the median wall time).
- On the same decoded images, the serial loop (:func:`fcnseg.host.pipeline.run_serial`) and the
  threaded :class:`~fcnseg.host.pipeline.Pipeline`.

The three are timed in turns (one repetition of each, then the next, after a warm-up round), CPU
time on the process clock (the pipeline's threads; the command runs it too) and wall time, median
[min–max] over the repetitions; speed relative to the serial loop per repetition
(``serial_i / X_i``): on wall time that is the pipeline's speed-up from overlapping stages, on
CPU time its overhead (below 1: the threads cost CPU the serial loop does not spend). One more
pipelined run (:func:`fcnseg.host.pipeline.measure`) gives the per-stage split (ms per image).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from fcnseg.benchmarks import inputs
from fcnseg.benchmarks.runner import Context, headline, interleaved, ratio_headline
from fcnseg.benchmarks.subjects import default_subject
from fcnseg.benchmarks.timing import brief, paired_ratio


def run(ctx: Context) -> dict[str, Any]:
    from fcnseg.cli import main
    from fcnseg.host.images import load_image
    from fcnseg.host.pipeline import Pipeline, measure, run_serial
    from fcnseg.host.segmenter import Segmenter

    subject = default_subject(ctx)
    inputs_dir = ctx.work_dir / "e2e-in"
    paths = inputs.sample_files(ctx.samples_dir, inputs_dir, 2 if ctx.quick else None)
    out = ctx.work_dir / "e2e-out"
    argv = [
        "segment",
        str(inputs_dir),
        "-o",
        str(out),
        "--overwrite",
        "--package",
        str(subject.package_dir),
        "--backend",
        ctx.backend,
    ]

    def command() -> None:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = main(argv)
        if code != 0:
            raise RuntimeError(f"fcnseg {' '.join(argv)} exited {code}")

    kind = "synthetic" if paths[0].name.startswith("synthetic-") else "sample"
    images = [load_image(p) for p in paths]
    mpx = sum(im.shape[0] * im.shape[1] for im in images) / 1e6
    seg = Segmenter.load(subject.package_dir, ctx.backend)

    def pipelined() -> None:
        failed = [r.error for r in Pipeline(seg).run(images) if not r.ok]
        if failed:
            raise RuntimeError(f"{len(failed)} image(s) failed in the pipeline: {failed[0]}")

    times = interleaved(
        {"command": command, "serial": lambda: run_serial(seg, images), "pipeline": pipelined},
        ctx.reps_for("slow"),
        clock="process",
    )
    report = measure(seg, images)
    labels = {
        "command": "fcnseg segment (CLI, in-process, writes masks)",
        "serial": "serial loop (decoded images, no writing)",
        "pipeline": "Pipeline (threads: decode / accelerate / finish)",
    }
    speed = {key: paired_ratio(times["serial"], times[key]) for key in labels}
    rows = []
    for key, label in labels.items():
        t = times[key]
        rows.append(
            {
                "run": label,
                "cpu_ms_per_image": brief(t["cpu"], 1e3 / len(paths), 1),
                "wall_ms_per_image": brief(t["wall"], 1e3 / len(paths), 1),
                "images_per_s": round(len(paths) / t["wall"]["median"], 2),
                "megapixels_per_s": round(mpx / t["wall"]["median"], 3),
                "cpu_speed_vs_serial": speed[key] and speed[key]["cpu"],
                "wall_speed_vs_serial": speed[key] and speed[key]["wall"],
                "reps": t["reps"],
            }
        )
    cli = rows[0]
    stages = report.get("stage_ms_per_image", {})
    total = sum(stages.values()) or 1.0
    split = ", ".join(f"{k} {v:.1f} ms ({100 * v / total:.0f}%)" for k, v in stages.items())
    return {
        "title": f"End to end: {len(paths)} {kind} images ({mpx:.2f} Mpx), "
        f"{subject.source} FCN-8s on the {ctx.backend} backend",
        "method": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "rows": rows,
        "headline": [
            headline("fcnseg segment images/s", cli["images_per_s"], "img/s"),
            headline("fcnseg segment megapixels/s", cli["megapixels_per_s"], "Mpx/s"),
            # a speed-up from overlap shows on wall time only: judge this one on wall time
            headline(
                "pipeline speed-up vs serial (wall time)",
                speed["pipeline"] and speed["pipeline"]["wall"]["median"],
                "x",
                spread=speed["pipeline"],
            ),
            ratio_headline(
                "pipeline CPU time / serial CPU time",
                paired_ratio(times["pipeline"], times["serial"]),
            ),
        ],
        "checks": [],
        "notes": [
            f"Per-stage split (pipeline, ms per image, summed over threads): {split}.",
            f"Bottleneck: {report.get('bottleneck')}; accelerator tiles for the "
            f"{len(paths)} images: {report.get('tiles')}. On the simulator the 'accelerator' "
            "is numpy on the same 2 shared cores as the other stages, so threads compete "
            "for them; on a board the fabric runs beside the ARM cores.",
        ],
        "pipeline_report": report,
    }
