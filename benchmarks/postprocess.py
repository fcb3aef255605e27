"""Benchmark 3: host post-processing — dequantize -> bilinear upsample -> argmax.

Input: integer score maps of 21 classes at output stride 8 over the canvas of each image size
(as the FCN-8s accelerator returns them), made of smooth random per-class fields (a coarse
Gaussian grid every 16 cells = 128 px, interpolated; 5 of the 21 classes compete, the others
are lower, as classes absent from a photo), so regions and boundaries look like a real
segmentation's; the share of *busy* cells (whose four corners disagree) is reported, as the fast
path's speed depends on it. Per-class output scale and bias as in a package.

Compared, on the same scores:

- ``fcnseg``: :func:`fcnseg.host.upsample.upsample_argmax` (exact; skips uniform cells);
- ``naive``: :func:`~fcnseg.host.upsample.upsample_argmax_naive`, every class at every pixel in
  one piece (the full-resolution path; not run at 4000x3000, where it needs ~8 GB);
- ``naive, 64-row strips``: the same, computed in strips (memory-bounded);
- ``torch``: ``F.interpolate(bilinear, align_corners=False)`` of the dequantized float32 scores,
  then ``argmax`` (1 thread); float32, so labels may differ at near-ties (agreement reported).

Timing: the implementations in turns (one repetition of each, then the next), CPU time on the
thread clock (all run on the calling thread; torch with 1 thread) and wall time, median
[min–max] over the repetitions; ratios to ``fcnseg`` per repetition.

Peak memory: numpy paths with ``tracemalloc`` (numpy reports its buffers to it) in a separate run
(peak minus the memory traced before the call); torch with the process's peak resident set size,
reset before the call by writing ``5`` to ``/proc/self/clear_refs`` and read back from ``VmHWM``
(peak minus the resident size before the call; None where /proc does not allow it; 0 when
torch's allocator served the call from memory it already held).
Check: the fast labels equal the naive labels, pixel for pixel.
"""

from __future__ import annotations

import gc
import math
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fcnseg.benchmarks.runner import Context, check, interleaved, ratio_headline
from fcnseg.benchmarks.timing import brief, off_thread_notes, paired_ratio

CLASSES = 21
STRIDE = 8
NET_STRIDE = 32
#: coarse cells between the random grid's nodes (128 px at stride 8).
PERIOD = 16
#: classes that take part in an image (the others are 3 sigma lower, like absent classes).
PRESENT = 5
FULL_SIZES = ((512, 512), (1024, 2048), (4000, 3000))
QUICK_SIZES = ((64, 96), (160, 256))
#: above this many bytes for one float64 (H, W, C) array the one-piece naive path is not run.
NAIVE_LIMIT = 1 << 30


def synthetic_scores(
    height: int, width: int, classes: int = CLASSES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(scores (h, w, C) int64, scale (C,), bias (C,))`` over the canvas of an image."""
    rng = np.random.default_rng(seed)
    h = math.ceil(height / NET_STRIDE) * NET_STRIDE // STRIDE
    w = math.ceil(width / NET_STRIDE) * NET_STRIDE // STRIDE
    gh, gw = h // PERIOD + 2, w // PERIOD + 2
    grid = rng.standard_normal((gh, gw, classes))
    grid[..., PRESENT:] -= 3.0  # a photo shows a few classes; the others rarely come close
    ay = _interp_matrix(h, gh)
    ax = _interp_matrix(w, gw)
    field = np.einsum("yi,ijc,xj->yxc", ay, grid, ax)
    field += 0.05 * rng.standard_normal(field.shape)
    scores = np.rint(field * 1500).astype(np.int64)
    scale = rng.uniform(0.004, 0.006, classes)
    bias = rng.uniform(-0.5, 0.5, classes)
    return scores, scale, bias


def _interp_matrix(n: int, nodes: int) -> np.ndarray:
    """``(n, nodes)`` linear interpolation weights from ``nodes`` grid points onto ``n`` cells."""
    pos = np.arange(n) / PERIOD
    i0 = np.minimum(pos.astype(int), nodes - 2)
    frac = pos - i0
    m = np.zeros((n, nodes))
    m[np.arange(n), i0] = 1 - frac
    m[np.arange(n), i0 + 1] = frac
    return m


def traced_peak(fn: Callable[[], object]) -> int:
    """Bytes allocated at the peak of ``fn`` beyond what was allocated before (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def _status(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss_peak(fn: Callable[[], object]) -> int | None:
    """Peak resident bytes of ``fn`` beyond the resident size before it (Linux /proc), or None."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    before = _status("VmRSS")
    fn()
    peak = _status("VmHWM")
    return None if before is None or peak is None else max(0, peak - before)


def _torch_fn(scores: np.ndarray, scale: np.ndarray, bias: np.ndarray, shape: tuple[int, int]):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    h, w, _ = scores.shape
    coarse = torch.from_numpy(scores.transpose(2, 0, 1)[None].astype(np.float32))
    s = torch.from_numpy(scale.astype(np.float32)).view(1, -1, 1, 1)
    b = torch.from_numpy(bias.astype(np.float32)).view(1, -1, 1, 1)

    def fn() -> np.ndarray:
        with torch.no_grad():
            logits = F.interpolate(
                coarse * s + b, size=(h * STRIDE, w * STRIDE), mode="bilinear", align_corners=False
            )
            return logits[0, :, : shape[0], : shape[1]].argmax(0).to(torch.uint8).numpy()

    return fn


def _methods(
    scores: np.ndarray, scale: np.ndarray, bias: np.ndarray, shape: tuple[int, int], torch: bool
) -> dict[str, Callable[[], np.ndarray]]:
    """The compared implementations, each a no-argument function returning labels."""
    from fcnseg.host.upsample import upsample_argmax, upsample_argmax_naive

    fns: dict[str, Callable[[], np.ndarray]] = {
        "fcnseg": lambda: upsample_argmax(scores, scale, bias, shape, STRIDE),
        "naive, 64-row strips": lambda: upsample_argmax_naive(
            scores, scale, bias, shape, STRIDE, rows_per_chunk=64
        ),
    }
    if shape[0] * shape[1] * CLASSES * 8 <= NAIVE_LIMIT:
        fns["naive"] = lambda: upsample_argmax_naive(scores, scale, bias, shape, STRIDE)
    if torch:
        fns["torch interpolate + argmax"] = _torch_fn(scores, scale, bias, shape)
    return fns


def _mb(nbytes: int | None) -> float | None:
    return None if nbytes is None else round(nbytes / 2**20, 1)


def run(ctx: Context) -> dict[str, Any]:
    from fcnseg.host.upsample import analyse_cells

    rows: list[dict] = []
    checks: list[dict] = []
    notes: list[str] = []
    heads: list[dict] = []
    have_torch = True
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        have_torch = False
        notes.append("torch not installed here: the torch column is missing")
    sizes = QUICK_SIZES if ctx.quick else FULL_SIZES
    for height, width in sizes:
        scores, scale, bias = synthetic_scores(height, width)
        shape = (height, width)
        cells = analyse_cells(scores.astype(np.float64), scale, bias)
        busy = 1.0 - float(cells.uniform.mean())
        fns = _methods(scores, scale, bias, shape, have_torch)
        fast = fns["fcnseg"]()
        for name in ("naive", "naive, 64-row strips"):
            if name in fns:
                same = np.array_equal(fast, fns[name]())
                checks.append(check(f"fcnseg labels == {name} at {height}x{width}", same))
        agree = None
        if have_torch:
            agree = float((fns["torch interpolate + argmax"]() == fast).mean())
        times = interleaved(fns, ctx.reps_for("slow"), warmup=False)
        notes += [f"{height}x{width}: {n}" for n in off_thread_notes(times)]
        ratios = {name: paired_ratio(t, times["fcnseg"], 1) for name, t in times.items()}
        memory = {
            name: (rss_peak(fn) if name.startswith("torch") else traced_peak(fn))
            for name, fn in fns.items()
        }
        for name in ("fcnseg", "naive", "naive, 64-row strips", "torch interpolate + argmax"):
            if name not in fns:
                continue
            rows.append(
                {
                    "size": f"{height}x{width}",
                    "method": name,
                    "cpu_ms": brief(times[name]["cpu"], 1e3, 1),
                    "wall_ms": brief(times[name]["wall"], 1e3, 1),
                    "cpu_vs_fcnseg": ratios[name] and ratios[name]["cpu"],
                    "wall_vs_fcnseg": ratios[name] and ratios[name]["wall"],
                    "reps": times[name]["reps"],
                    "peak_MB": _mb(memory[name]),
                    "memory_method": "RSS" if name.startswith("torch") else "tracemalloc",
                    "labels_vs_fcnseg": "identical"
                    if not name.startswith("torch")
                    else f"{100 * agree:.4f}% agree",
                    "busy_cells": f"{100 * busy:.1f}%",
                }
            )
        if (height, width) == (1024, 2048) or (ctx.quick and (height, width) == sizes[-1]):
            key = "naive" if "naive" in times else "naive, 64-row strips"
            heads.append(
                ratio_headline(f"fcnseg vs {key} at {height}x{width}", ratios[key], "x", ">= 20")
            )
            heads.append(
                ratio_headline(
                    f"fcnseg vs naive in 64-row strips at {height}x{width}",
                    ratios["naive, 64-row strips"],
                )
            )
            if have_torch:
                heads.append(
                    ratio_headline(
                        f"fcnseg vs torch interpolate + argmax at {height}x{width}",
                        ratios["torch interpolate + argmax"],
                    )
                )
    if not ctx.quick:
        notes.append(
            "naive in one piece is not run at 4000x3000: one float64 (H, W, 21) array is 2 GB "
            "and the path holds about four of them."
        )
    return {
        "title": f"Host post-processing: dequant -> bilinear -> argmax, {CLASSES} classes, "
        f"stride {STRIDE}",
        "method": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "rows": rows,
        "headline": heads,
        "checks": checks,
        "notes": notes,
    }
