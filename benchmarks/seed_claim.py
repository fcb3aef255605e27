"""Benchmark 2: the seed's claim — one pass of the converted FCN vs the classifier on 36 crops.

A 224-input classifier with total stride 32 evaluated on the 36 crops of a 384x384 image at
stride 32 (6 x 6 positions) repeats most of its work: the crops overlap. The converted net
(``fcnseg.quantize.surgery.fc_to_conv``) computes the 6x6 score map in one pass.

- **PyTorch, VGG16-shaped**: VGG16's layer table (13 3x3 convs in 5 stages, 2x2 pools, fc6 on a
  7x7 map, fc7, fc8 with 1000 classes) with random weights, channel widths scaled by
  ``WIDTH`` (1/4: 16..128 channels, 1024-wide fc6/fc7; 1/16 with ``--quick``) so the 36-crop
  reference takes seconds, not minutes, on 2 shared cores; the ratio is set by the overlap of
  the crops, which the width does not change. Check: the converted net on one 224 crop equals the
  classifier on it (fc_to_conv is exact there); on the 384 image only the interior agrees, since
  VGG's convs zero-pad each crop's border (reported as top-1 agreement).
- **Simulator, default quantized net**: the default FCN-8s package on a 384x384 image in one call
  vs its 36 crops of 224x224 (batches of 4), on the simulator.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fcnseg.benchmarks.runner import Context, check, interleaved, ratio_headline
from fcnseg.benchmarks.subjects import default_subject
from fcnseg.benchmarks.timing import brief, paired_ratio

#: VGG16's conv stages: (channels, convs) at full width.
VGG16_STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
VGG16_FC = 4096
IMAGE, CROP, STEP = 384, 224, 32


def vgg16_shaped(width: float, num_classes: int = 1000, seed: int = 0) -> Any:
    """VGG16's topology (Sequential: features, Flatten, fc6, ReLU, fc7, ReLU, fc8), random."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    c_in = 3
    for channels, convs in VGG16_STAGES:
        c = max(1, round(channels * width))
        for _ in range(convs):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(inplace=True)]
            c_in = c
        layers.append(nn.MaxPool2d(2, 2))
    fc = max(1, round(VGG16_FC * width))
    layers += [
        nn.Flatten(),
        nn.Linear(c_in * 7 * 7, fc),
        nn.ReLU(inplace=True),
        nn.Linear(fc, fc),
        nn.ReLU(inplace=True),
        nn.Linear(fc, num_classes),
    ]
    return nn.Sequential(*layers).eval()


def _row(net: str, t: dict[str, dict[str, Any]]) -> tuple[dict, dict | None]:
    """``(row, speed-up)``: CPU and wall ms of both sides, and the per-repetition speed-up
    (crops_i / one_pass_i, :func:`~.timing.paired_ratio`)."""
    speedup = paired_ratio(t["crops"], t["one_pass"], 1)
    return {
        "net": net,
        "one_pass_cpu_ms": brief(t["one_pass"]["cpu"], 1e3, 1),
        "crops_36_cpu_ms": brief(t["crops"]["cpu"], 1e3, 1),
        "one_pass_wall_ms": brief(t["one_pass"]["wall"], 1e3, 1),
        "crops_36_wall_ms": brief(t["crops"]["wall"], 1e3, 1),
        "cpu_speedup": speedup and speedup["cpu"],
        "wall_speedup": speedup and speedup["wall"],
        "reps": t["one_pass"]["reps"],
    }, speedup


def crop_positions() -> list[tuple[int, int]]:
    """Top-left corners of the 36 crops (row-major, 6 x 6)."""
    n = (IMAGE - CROP) // STEP + 1
    return [(i * STEP, j * STEP) for i in range(n) for j in range(n)]


def _torch_part(ctx: Context) -> tuple[tuple[dict, dict | None], list[dict]]:
    import torch

    from fcnseg.quantize.surgery import fc_to_conv

    torch.set_num_threads(1)
    width = 1 / 16 if ctx.quick else 1 / 4
    classifier = vgg16_shaped(width)
    fcn = fc_to_conv(classifier).eval()
    image = torch.rand(1, 3, IMAGE, IMAGE) * 255
    crops = torch.cat([image[:, :, y : y + CROP, x : x + CROP] for y, x in crop_positions()])

    def one_pass() -> Any:
        with torch.no_grad():
            return fcn(image)

    def on_crops() -> Any:
        with torch.no_grad():
            return classifier(crops)

    with torch.no_grad():
        single = fcn(crops[:1])[:, :, 0, 0]
        same = torch.allclose(
            single, classifier(crops[:1]), rtol=1e-4, atol=1e-4 * float(single.abs().max())
        )
        dense = one_pass()[0].flatten(1).T  # (36, classes), row-major positions
        agree = float((dense.argmax(1) == on_crops().argmax(1)).float().mean())
    t = interleaved({"one_pass": one_pass, "crops": on_crops}, ctx.reps_for("slow"))
    measured = _row(f"VGG16-shaped, width x{width:g}, PyTorch (1 thread)", t)
    c = check(
        "fc_to_conv(classifier) on one 224 crop == classifier (allclose)",
        same,
        f"top-1 agreement of the 6x6 map with the 36 crops: {100 * agree:.0f}% "
        "(padding makes crop borders differ)",
    )
    return measured, [c]


def _sim_part(ctx: Context) -> tuple[dict, dict | None]:
    from fcnseg.host.package import load_package
    from fcnseg.host.sim import SimEngine

    subject = default_subject(ctx)
    engine = SimEngine(load_package(subject.package_dir), batch=4)
    image = np.random.default_rng(0).integers(0, 256, (1, IMAGE, IMAGE, 3), dtype=np.uint8)
    crops = np.concatenate([image[:, y : y + CROP, x : x + CROP] for y, x in crop_positions()])

    def on_crops() -> None:
        for first in range(0, len(crops), 4):
            engine.run(crops[first : first + 4])

    t = interleaved(
        {"one_pass": lambda: engine.run(image), "crops": on_crops}, ctx.reps_for("slow")
    )
    return _row(f"default quantized FCN-8s ({subject.source}), fcnseg sim", t)


def run(ctx: Context) -> dict[str, Any]:
    rows: list[dict] = []
    checks: list[dict] = []
    notes: list[str] = []
    heads = []
    try:
        (row, speedup), cs = _torch_part(ctx)
        rows.append(row)
        checks += cs
        heads.append(ratio_headline("VGG16-shaped FCN one pass vs 36 crops", speedup, "x", ">= 8"))
    except ModuleNotFoundError as error:
        notes.append(f"PyTorch part skipped: {error.name!r} not installed here")
    sim_row, speedup = _sim_part(ctx)
    rows.append(sim_row)
    heads.append(ratio_headline("default FCN-8s (sim) one pass vs 36 crops", speedup, "x", ">= 8"))
    notes.append(
        f"Pixels processed: one pass {IMAGE}x{IMAGE} = {IMAGE * IMAGE} vs 36 crops of "
        f"{CROP}x{CROP} = {36 * CROP * CROP} ({36 * CROP * CROP / IMAGE**2:.1f}x the work)."
    )
    return {
        "title": "The seed's claim: FCN in one pass on 384x384 vs the classifier on 36 crops",
        "method": "The two sides in turns (one pass, then the 36 crops as one batch for "
        "PyTorch, batches of 4 for the simulator; after a warm-up round), random inputs. CPU time "
        "on the thread clock (torch with 1 thread, the simulator's BLAS capped at 1) and wall "
        "time, median [min–max]; the speed-up per repetition (crops_i / one_pass_i).",
        "rows": rows,
        "headline": heads,
        "checks": checks,
        "notes": notes,
    }
