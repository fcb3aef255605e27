"""Benchmark 4: what tiling and shift-and-stitch cost, and what cheaper settings change.

One photo (``astronaut.jpg`` of ``--samples DIR`` or a synthetic stand-in, 512x512; a 160x224
crop with ``--quick``) through the
:class:`~fcnseg.host.segmenter.Segmenter` on the subject's package and the chosen backend:

- shift-and-stitch factor 1, 2, 4 (f*f passes, output stride / f) at the exact default overlap;
- factor 1 at the default overlap, half of it, and no overlap.

Per setting: CPU and wall time per image (median [min–max] over the repetitions; the settings
timed in turns, one repetition of each, then the next; thread clock: the sim backend runs on the
calling thread), images/s (from the median wall time), the time per repetition relative to the
default setting's in the same turn, accelerator tiles per image, and the share of pixels whose
label equals the reference's (factor 1, default overlap). Shift-and-stitch is meant to change
labels (finer stride); a smaller overlap is an approximation whose error this measures.
Check: the stitched scores at the default overlap equal one pass of the engine over the canvas.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fcnseg.benchmarks import inputs
from fcnseg.benchmarks.runner import Context, check, interleaved, ratio_headline
from fcnseg.benchmarks.subjects import default_subject
from fcnseg.benchmarks.timing import brief, off_thread_notes, paired_ratio


def sample_image(ctx: Context) -> np.ndarray:
    """The 512x512 photo (:func:`.inputs.photo`); a 160x224 crop of it with ``--quick``."""
    image = inputs.photo(ctx.samples_dir, 512, 512)
    return image[:160, :224].copy() if ctx.quick else image


def run(ctx: Context) -> dict[str, Any]:
    from fcnseg.host.segmenter import Segmenter
    from fcnseg.host.tiling import make_canvas, plan_tiles

    subject = default_subject(ctx)
    image = sample_image(ctx)
    ref = Segmenter.load(subject.package_dir, ctx.backend)
    default = ref.geometry.default_overlap
    g = ref.geometry.net_stride
    canvas_shape = ref.geometry.canvas_shape(*image.shape[:2])
    settings: list[tuple[str, int, int | None]] = [(f"overlap {default} px (default)", 1, None)]
    seen = {plan_tiles(ref.geometry, canvas_shape, None).overlap}
    for ov in (default // 2 // g * g, 0):
        effective = plan_tiles(ref.geometry, canvas_shape, ov).overlap
        if effective not in seen:
            seen.add(effective)
            settings.append((f"overlap {effective} px", 1, ov))
    settings += [("shift-and-stitch 2", 2, None), ("shift-and-stitch 4", 4, None)]

    canvas = make_canvas(image, ref.geometry)
    one_pass = np.asarray(ref.engine.run(canvas[None]))[0]
    stitched = ref.scores(image)
    exact_plan = ref.plan(*image.shape[:2])
    same = stitched.shape == one_pass.shape and np.array_equal(stitched, one_pass)
    detail = (
        f"canvas {canvas.shape[:2]}, tile {ref.geometry.tile}, overlap {exact_plan.overlap} px, "
        f"{len(exact_plan.tiles)} tiles"
    )
    if exact_plan.exact:
        checks = [check("stitched scores (default overlap) == one engine pass", same, detail)]
    else:  # the receptive field is wider than the tile allows: stitching cannot be exact
        checks = []
        agree = float((stitched == one_pass).all(axis=-1).mean()) if not same else 1.0
        notes_extra = [
            f"The tile is too small for an exact stitch ({detail}); {100 * agree:.1f}% of score "
            "cells equal the one-pass map."
        ]
    if exact_plan.exact:
        notes_extra = []
    ref_labels = ref(image)
    segs, plans, labels = {}, {}, {}
    for label, factor, overlap in settings:
        seg = Segmenter.load(subject.package_dir, ctx.backend, shift_stitch=factor, overlap=overlap)
        segs[label], plans[label] = seg, seg.plan(*image.shape[:2])
        labels[label] = seg(image)  # also warms the plan and the engine up
    times = interleaved(
        {label: lambda seg=seg: seg(image) for label, seg in segs.items()},
        ctx.reps_for(),
        warmup=False,
    )
    default_label = settings[0][0]
    ratios = {label: paired_ratio(t, times[default_label]) for label, t in times.items()}
    rows = []
    for label, factor, _ in settings:
        t, plan = times[label], plans[label]
        agreement = float((labels[label] == ref_labels).mean())
        rows.append(
            {
                "setting": label,
                "stride_px": segs[label].stride,
                "overlap_px": plan.overlap,
                "exact": plan.exact,
                "tiles_per_image": len(plan.tiles) * factor * factor,
                "cpu_ms": brief(t["cpu"], 1e3, 1),
                "wall_ms": brief(t["wall"], 1e3, 1),
                "images_per_s": round(1.0 / t["wall"]["median"], 2),
                "cpu_vs_default": ratios[label] and ratios[label]["cpu"],
                "wall_vs_default": ratios[label] and ratios[label]["wall"],
                "labels_equal_to_default": f"{100 * agreement:.2f}%",
                "reps": t["reps"],
            }
        )
    return {
        "title": f"Tiling and shift-and-stitch on a {image.shape[0]}x{image.shape[1]} photo "
        f"({subject.source} FCN-8s, {ctx.backend}, tile {ref.geometry.tile[0]}x"
        f"{ref.geometry.tile[1]})",
        "method": "Segmenter(image) (tiles, engine, stitch, upsample, argmax) per setting, the "
        f"settings timed in turns ({ctx.reps_for()} repetitions after a warm-up call each), "
        "CPU (thread clock) and wall time per image, median [min–max]; ratios to the default "
        "setting per repetition; label agreement with factor 1 at the default overlap. Input: "
        f"{inputs.describe(ctx.samples_dir)}.",
        "rows": rows,
        "headline": [
            ratio_headline(
                "shift-and-stitch 2 cost (time vs factor 1)", ratios["shift-and-stitch 2"]
            ),
            ratio_headline(
                "shift-and-stitch 4 cost (time vs factor 1)", ratios["shift-and-stitch 4"]
            ),
        ],
        "checks": checks,
        "notes": notes_extra
        + off_thread_notes(times)
        + [
            f"Default overlap {default} px = the receptive field's margin rounded to the net "
            f"stride {g} on both sides of each cut (host/tiling.py)."
        ],
    }
