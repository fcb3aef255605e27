"""Benchmark: tiles in flight, the fabric's busy share on the emulated board (issue 15, part 3).

The shipped Pynq-Z2 and ZCU104 packages (``--quick``: the Pynq-Z2 one; or ``--package``) on
the emulated Zynq (:mod:`fcnseg.testing.emulated_zynq`) whose fabric runs at the package's
estimated rate and latency (:meth:`~fcnseg.testing.emulated_zynq.FabricTiming.of_package`:
finn's ``max_cycles`` as the interval II between tiles, its pessimistic
``critical_path_cycles`` as the latency L, at the package's clock; the accelerator's
arithmetic is left out, zero scores, so the timing is the fabric's and the host's alone). The
real host path runs: the ``pynq`` backend through pynq 4.0.0's registers and buffers, the
:class:`~fcnseg.host.pipeline.Pipeline` (decode / 2 accelerate workers / finish: tiling,
stitching, upsample + argmax) on frames of 512 x 1024 (the sample photo resized, or a
synthetic scene).

Two sides, timed in turns (:func:`~fcnseg.benchmarks.timing.compare`, one warm-up round), each
repetition a pipeline run over the same frames:

- ``serial``: one DMA call in flight (``calls=1``), what the backend did before: the fabric
  idles while the host packs, unpacks and waits for each call's drain (L per call).
- ``in_flight``: the backend's default ``calls`` buffer sets; the next call's input DMA starts
  when the previous call's input is read, frames overlap across the two accelerate workers.

Per repetition: frames/s (wall), CPU time (process clock: every thread of the host) and the
fabric's **busy share**: the time its input accepted tiles (one II per tile, from the
emulator's recorded timeline) over the run's wall time, first frame in to last result out, so
the first decode, the pipeline's fill and drain and the last finish count against it; and
**while fed**: over the span from the first tile's entry to the last tile's interval, where
every idle moment is the fabric waiting on the host (serial: on each call's drain). Beside
them, what the max-plus model (:func:`fcnseg.hw.throughput.estimate`, host costs not counted)
predicts for the same depth:
``serial``: one call at a time, so a frame's tiles cannot overlap the next frame's
(``one_frame_frames_per_s``); ``in_flight``: frames overlapped (``frames_per_s``); and the
model for exactly this run (the repetition's frames from an empty pipeline). ``--quick``
scales the fabric's time by 1/4 (rates scaled back) and runs 2 frames.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from fcnseg.benchmarks import inputs
from fcnseg.benchmarks.runner import Context, Skipped, check, headline
from fcnseg.benchmarks.timing import brief, compare, spread

#: the frame size of issue 15 (Cityscapes at half resolution)
FRAME = (512, 1024)
#: the shipped packages measured without ``--package`` (``--quick``: the first only)
PACKAGES = ("fcn8s-pynq-z2", "fcn8s-zcu104")


def _package_dirs(ctx: Context) -> list[Path]:
    if ctx.package is not None:
        return [Path(ctx.package)]
    root = ctx.packages_dir
    found = [root / n for n in PACKAGES if root and (root / n / "accelerator.json").is_file()]
    if not found:
        raise Skipped(f"no {PACKAGES[0]} package shipped with the host runtime; pass --package")
    return found[:1] if ctx.quick else found


def _model(fabric: Any, tiles: int, frames: int, calls: int, batch: int) -> dict[str, float]:
    """The max-plus model's figures for ``calls`` calls of ``batch`` in flight."""
    from fcnseg.hw.throughput import Host, estimate, frame_seconds

    host = Host(in_flight=calls * batch, batch=batch)
    est = estimate(fabric, tiles, host)
    if calls == 1:  # one call at a time: frames never overlap, each drains alone
        run_s = frames * frame_seconds(fabric, tiles, host)
        rate = est["one_frame_frames_per_s"]
    else:
        run_s = frame_seconds(fabric, tiles * frames, host)
        rate = est["frames_per_s"]
    busy_s = tiles * frames * fabric.interval_s
    return {
        "frames_per_s": rate,
        "run_frames_per_s": frames / run_s,
        "run_busy": busy_s / run_s,
        # from the first entry to the last tile's interval: the run less the last drain
        "fed_busy": busy_s / (run_s - fabric.latency_s + fabric.interval_s),
    }


def _fed_busy(dev: Any, interval_s: float) -> float:
    """The fabric's busy share from its first tile's entry to its last tile's interval: the
    time it was fed or starved by the host, the run's first decode and last drain left out."""
    timeline = dev.fabric_timeline()
    entries = [t.entered for t in timeline]
    return dev.busy_fraction(min(entries), max(entries) + interval_s)


def _measure(ctx: Context, package_dir: Path) -> dict[str, Any]:
    """Both sides on one package: its rows, headline figures, checks and a note."""
    from fcnseg.host.backends.pynq import DEFAULT_CALLS, open_engine
    from fcnseg.host.package import load_package
    from fcnseg.host.pipeline import Pipeline
    from fcnseg.host.segmenter import Segmenter
    from fcnseg.hw.info import package_fabric
    from fcnseg.testing import emulated_zynq as ez

    package = load_package(package_dir)
    name = package.path.name
    scale = 0.25 if ctx.quick else 1.0
    timing = ez.FabricTiming.of_package(package, scale)
    fabric = package_fabric(package)
    assert fabric is not None  # of_package checked the estimates
    n_frames = 2 if ctx.quick else 4
    frame = inputs.photo(ctx.samples_dir, *FRAME)
    frames = [frame.copy() for _ in range(n_frames)]
    board = load_package(
        ez.emulated_package(package, Path(tempfile.mkdtemp(dir=ctx.work_dir)) / "package")
    )
    sides = {"serial": 1, "in_flight": DEFAULT_CALLS}
    measured: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    labels: dict[str, list[bytes]] = {side: [] for side in sides}

    with ez.EmulatedZynq(
        ez.standin_accelerator(package, fps=0), timing=timing, ddr_bytes=256 << 20
    ) as dev:
        segmenters = {}
        for side, calls in sides.items():
            engine = open_engine(board, calls=calls)
            segmenters[side] = Segmenter(
                engine, board.geometry, board.output_scale, board.output_bias,
                batch=engine.in_flight,
            )  # fmt: skip
        tiles = len(segmenters["serial"].plan(*FRAME).tiles)
        batch = segmenters["serial"].engine.batch

        def timed_side(side: str) -> Any:
            def go() -> None:
                dev.clear_timeline()
                start = time.perf_counter()
                results = list(Pipeline(segmenters[side]).run(frames))
                end = time.perf_counter()
                failed = [r.error for r in results if not r.ok]
                if failed:
                    raise RuntimeError(f"{len(failed)} frame(s) failed: {failed[0]}")
                measured[side].append(
                    {
                        "frames_per_s": n_frames / (end - start) * scale,
                        "busy": dev.busy_fraction(start, end),
                        "fed": _fed_busy(dev, timing.interval_s),
                        "tiles": len(dev.fabric_timeline()),
                    }
                )
                labels[side].append(results[-1].segmentation.labels.tobytes())

            return go

        times = compare({side: timed_side(side) for side in sides}, ctx.reps_for("slow"),
                        clock="process")  # fmt: skip
    rows, figures = [], {}
    for side, calls in sides.items():
        reps = measured[side][1:] or measured[side]  # the warm-up round left out
        model = _model(fabric, tiles, n_frames, calls, batch)
        figures[side] = {
            "busy": spread([100 * m["busy"] for m in reps], 1),
            "fed": spread([100 * m["fed"] for m in reps], 1),
            "fps": spread([m["frames_per_s"] for m in reps], 3),
            "model": model,
        }
        f = figures[side]
        rows.append(
            {
                "package": name,
                "side": side,
                "calls_in_flight": calls,
                "tiles_per_call": batch,
                "tiles_in_flight": calls * batch,
                "fabric_busy_pct": f["busy"],
                "fabric_busy_fed_pct": f["fed"],
                "frames_per_s": f["fps"],
                "model_frames_per_s": round(model["frames_per_s"], 3),
                "model_run_frames_per_s": round(model["run_frames_per_s"], 3),
                "model_run_busy_pct": round(100 * model["run_busy"], 1),
                "model_fed_busy_pct": round(100 * model["fed_busy"], 1),
                "cpu_ms_per_frame": brief(times[side]["cpu"], 1e3 / n_frames, 1),
                "wall_ms_per_frame": brief(times[side]["wall"], 1e3 / (scale * n_frames), 1),
                "reps": len(reps),
            }
        )
    serial, deep = figures["serial"], figures["in_flight"]
    tiles_ok = all(m["tiles"] == tiles * n_frames for side_ in measured.values() for m in side_)
    return {
        "rows": rows,
        "headline": [
            headline(f"{name}: fabric busy, serial, whole run", serial["busy"]["median"], "%"),
            headline(f"{name}: fabric busy, in flight, whole run", deep["busy"]["median"], "%"),
            headline(f"{name}: fabric busy while fed, serial", serial["fed"]["median"], "%"),
            headline(
                f"{name}: fabric busy while fed, in flight ({DEFAULT_CALLS} calls)",
                deep["fed"]["median"],
                "%",
                ">= 95",
            ),  # fmt: skip
            headline(f"{name}: frames/s in flight", deep["fps"]["median"], "frames/s"),
            headline(
                f"{name}: frames/s in flight / model (this run)",
                round(deep["fps"]["median"] / deep["model"]["run_frames_per_s"], 3),
                "x",
            ),
            headline(
                f"{name}: frames/s in flight / serial",
                round(deep["fps"]["median"] / serial["fps"]["median"], 2),
                "x",
            ),
        ],
        "checks": [
            check(
                f"{name}: every tile of every frame went through the fabric",
                tiles_ok,
                f"{tiles} tiles per frame, {n_frames} frames per run",
            ),
            check(
                f"{name}: serial and in-flight labels identical",
                len(set(labels["serial"] + labels["in_flight"])) == 1,
            ),
        ],
        "note": f"{name}: II {1e3 * fabric.interval_s:.2f} ms, L {1e3 * fabric.latency_s:.1f} "
        f"ms (capacity {timing.capacity} tiles), {tiles} tiles per {FRAME[0]}x{FRAME[1]} frame, "
        f"{batch} tiles per call, {n_frames} frames per run.",
    }


def run(ctx: Context) -> dict[str, Any]:
    parts = [_measure(ctx, d) for d in _package_dirs(ctx)]
    names = ", ".join(row["package"] for part in parts for row in part["rows"][:1])
    return {
        "title": f"Tiles in flight: the fabric's busy share at the package's estimated rate and "
        f"latency ({names}), {FRAME[0]}x{FRAME[1]} frames",
        "method": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "rows": [row for part in parts for row in part["rows"]],
        "headline": [h for part in parts for h in part["headline"]],
        "checks": [c for part in parts for c in part["checks"]],
        "notes": [
            *(part["note"] for part in parts),
            f"Frames: {inputs.describe(ctx.samples_dir)}."
            + (
                " Time scaled by 1/4 (--quick), rates and wall times scaled back."
                if ctx.quick
                else ""
            ),  # fmt: skip
            "The busy share counts the whole run (fill, drain, the first decode and the last "
            "finish) against the fabric: over more frames it approaches the steady state. The "
            "model counts no host work; the emulator's fabric and the host share this machine's "
            "cores and the GIL (a poll that wakes late shows as a gap). CPU time is the whole "
            "process's: the host's threads and the emulator's fabric and compute threads.",
        ],
    }
