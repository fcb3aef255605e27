"""Benchmark 3: host post-processing — dequantize -> bilinear upsample -> argmax.

Input: integer score maps of 21 classes at output stride 8 over the canvas of each image size
(as the FCN-8s accelerator returns them), made of smooth random per-class fields (a coarse
Gaussian grid every 16 cells = 128 px, interpolated; 5 of the 21 classes compete, the others
are lower, as classes absent from a photo), so regions and boundaries look like a real
segmentation's; the share of *busy* cells (whose four corners disagree) is reported, as the fast
path's speed depends on it. Per-class output scale and bias as in a package.

Compared, on the same scores:

- ``fcnseg``: :func:`fcnseg.host.upsample.upsample_argmax` (exact; skips uniform cells; busy
  cells in float32 with the tie check, float64 where it flags a pixel);
- ``fcnseg, busy cells in float32 / float64`` at 512x1024: the default against the float64
  busy-cell path, in turns in the same process, for 21 classes (per-class scale and bias) and
  for each shipped package's classes, stride, scale and bias (scores in its output type's
  range: one scale, no bias, so the float32 side compares integers);
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
    height: int,
    width: int,
    classes: int = CLASSES,
    seed: int = 0,
    amplitude: float = 1500.0,
    stride: int = STRIDE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(scores (h, w, C) int64, scale (C,), bias (C,))`` over the canvas of an image; the
    fields (unit variance) times ``amplitude`` (e.g. ~80 for the INT9 scores of a package)."""
    rng = np.random.default_rng(seed)
    h = math.ceil(height / NET_STRIDE) * NET_STRIDE // stride
    w = math.ceil(width / NET_STRIDE) * NET_STRIDE // stride
    gh, gw = h // PERIOD + 2, w // PERIOD + 2
    grid = rng.standard_normal((gh, gw, classes))
    grid[..., PRESENT:] -= 3.0  # a photo shows a few classes; the others rarely come close
    ay = _interp_matrix(h, gh)
    ax = _interp_matrix(w, gw)
    field = np.einsum("yi,ijc,xj->yxc", ay, grid, ax)
    field += 0.05 * rng.standard_normal(field.shape)
    scores = np.rint(field * amplitude).astype(np.int64)
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


#: The frame of issue 15's rates, for the float32-vs-float64 rows.
FRAME = (512, 1024)


def _precision_subjects(ctx: Context) -> list[tuple[str, tuple, int]]:
    """``(label, (scores, scale, bias), stride)``: 21 classes with per-class scale and bias,
    and each shipped package's classes, stride, scale and bias with scores in its output type's
    range (one scale and no bias: the integer comparison)."""
    from fcnseg.host.package import dtype_bits, load_package

    frame = QUICK_SIZES[-1] if ctx.quick else FRAME
    subjects = [(f"{CLASSES} classes, stride {STRIDE}", synthetic_scores(*frame), STRIDE)]
    root = ctx.packages_dir
    for folder in sorted(root.iterdir()) if root is not None else []:
        if not (folder / "accelerator.json").is_file():
            continue
        package = load_package(folder)
        bits, _ = dtype_bits(package.output["dtype"])
        scores, _, _ = synthetic_scores(
            *frame, package.num_classes, amplitude=2.0 ** (bits - 1) / 3.5,
            stride=package.output_stride,
        )  # fmt: skip
        limit = 2 ** (bits - 1)
        scores = np.clip(scores, -limit, limit - 1)
        label = f"{folder.name}: {package.num_classes} classes, stride {package.output_stride}"
        subjects.append(
            (label, (scores, package.output_scale, package.output_bias), package.output_stride)
        )
    return subjects


def _upsample_fn(
    fn: Callable[..., np.ndarray],
    scores: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    frame: tuple[int, int],
    stride: int,
    precision: str,
) -> Callable[[], np.ndarray]:
    return lambda: fn(scores, scale, bias, frame, stride, precision=precision)


def precision_rows(ctx: Context) -> tuple[list[dict], list[dict], list[dict]]:
    """Busy cells in float32 with the tie check (the default, ``fcnseg``) vs float64 at
    512x1024, same process, in turns: rows (the main table's keys), checks, headlines."""
    from fcnseg.host.upsample import analyse_cells, upsample_argmax, upsample_argmax_naive

    rows: list[dict] = []
    checks: list[dict] = []
    heads: list[dict] = []
    frame = QUICK_SIZES[-1] if ctx.quick else FRAME
    for label, (scores, scale, bias), stride in _precision_subjects(ctx):
        fns = {
            p: _upsample_fn(upsample_argmax, scores, scale, bias, frame, stride, p)
            for p in ("float32", "float64")
        }
        naive = upsample_argmax_naive(scores, scale, bias, frame, stride, rows_per_chunk=64)
        for precision, fn in fns.items():
            same = np.array_equal(fn(), naive)
            checks.append(check(f"busy cells in {precision}: labels == naive, {label}", same))
        times = interleaved(fns, max(5, ctx.reps_for("cheap")), warmup=True)
        ratios = {p: paired_ratio(times[p], times["float32"], 2) for p in fns}
        busy = 1.0 - float(analyse_cells(scores.astype(np.float64), scale, bias).uniform.mean())
        for precision in fns:
            rows.append(
                {
                    "size": f"{frame[0]}x{frame[1]}",
                    "method": f"fcnseg, busy cells in {precision} ({label})",
                    "cpu_ms": brief(times[precision]["cpu"], 1e3, 2),
                    "wall_ms": brief(times[precision]["wall"], 1e3, 2),
                    "cpu_vs_fcnseg": ratios[precision] and ratios[precision]["cpu"],
                    "wall_vs_fcnseg": ratios[precision] and ratios[precision]["wall"],
                    "reps": times[precision]["reps"],
                    "peak_MB": None,
                    "memory_method": None,
                    "labels_vs_fcnseg": "identical" if same else "DIFFERENT",
                    "busy_cells": f"{100 * busy:.1f}%",
                }
            )
        heads.append(
            ratio_headline(
                f"busy cells float64 vs float32 + tie check at {frame[0]}x{frame[1]}, {label}",
                ratios["float64"],
            )
        )
    return rows, checks, heads


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
    precision, precision_checks, precision_heads = precision_rows(ctx)
    rows += precision
    checks += precision_checks
    heads += precision_heads
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
