"""The host's per-frame work on a Pynq-Z2 at 512x1024 (issue 15, part 4): measure, estimate.

Every stage the board's CPU does for one frame, run here on one 512x1024 frame with the host's
own functions, timed in turns (:func:`fcnseg.benchmarks.timing.compare`: one repetition of each
stage, then the next; thread CPU time and wall time, median [min-max]):

- ``decode``: :func:`fcnseg.host.images.load_image` of the frame as a PNG and as a JPEG
  (quality 90), the same photo;
- ``pack``: the builtin transport's packing of the frame (:func:`~fcnseg.host.backends.pynq.
  finn_pack`, UINT8 in whole bytes) and its copy into a DMA-sized buffer;
- ``unpack``: :func:`~fcnseg.host.backends.pynq.finn_unpack` of the frame's INT9 scores, two
  bytes a value (the shipped packages' output, PE = 1);
- ``upsample+argmax``: :func:`fcnseg.host.upsample.upsample_argmax` with busy cells in float64
  and in float32 (+ tie check), for the shipped net (7 classes, one scale, no bias, stride 8)
  and for 21 classes with per-class scale and bias; labels checked equal;
- ``encode mask``: :func:`~fcnseg.host.images.save_mask` at zlib level 1 with the run-length
  strategy (the default) and at level 6 with the default strategy (Pillow's default);
- ``encode overlay``: :func:`~fcnseg.host.images.save_overlay` (blend + encode) as JPEG
  (quality 90, the default) and PNG;
- ``write scores``: :func:`~fcnseg.host.images.save_scores` of the frame's int32 scores
  (``--scores``).

Outputs go to a temporary folder (atomic writes, fsync included: CPU time leaves the disk out).
pack/unpack are per frame computed once; an overlapping tile plan multiplies them by the
computed/kept pixel ratio.

Two cores: the finish stage (upsample + argmax + mask + overlay, as ``fcnseg segment
--overlay`` does it) over ``FRAMES`` frames in :class:`fcnseg.host.pipeline.Pipeline` with
``finish_workers`` 1 and 2 (decoding and the accelerator stubbed out: precomputed frames and
scores), wall time per frame; and each part alone in one thread vs two, with their
concurrency (process CPU / wall with two threads) against a GIL-free and a GIL-bound control
measured in the same turns (:func:`measure_workers`), to find the parts the GIL serialises.
On a shared 2-core machine the wall times depend on what else runs (the load average is
recorded); the controls make the concurrency comparable.

The A9 estimate: this machine's per-stage CPU time times a per-core slowdown factor. No
published per-core factor for numpy/zlib/libjpeg work between a Cortex-A9 at 650 MHz and this
CPU was found; the factor is the issue's 10-20x, and both ends are shown. ``--qemu ROOT`` also
runs the same stages as ARM code under ``qemu-arm -cpu cortex-a9`` with the armhf Debian
userland in ``ROOT`` (Python 3.11, numpy 1.24, Pillow 9.4, OpenBLAS): TCG-translated ARM on
this x86 core is *not* an A9 (different pipeline, caches, memory; NEON emulated by host code),
so it is a cross-check of which stages are heavy on ARM code, not a timing of the board.

    .venv-board/bin/python -m fcnseg.benchmarks.arm_budget [--qemu /opt/armhf-root] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

FRAME = (512, 1024)
TARGET_FPS = 15.0
CORES = 2
#: the issue's per-core slowdown of a Cortex-A9 at 650 MHz vs this x86 core (both ends).
FACTORS = (10.0, 20.0)
FRAMES = 8
#: the GIL-free control's concurrency below which the machine gave no second core to compare.
MIN_FREE = 1.5
#: INT9 scores of the shipped packages: amplitude of the synthetic fields (about 3.5 sigma fit).
INT9 = 256
#: the shipped packages' classes (for the scores file's fields).
CLASS_NAMES = ["background", "disc", "square", "triangle", "star", "ring", "bar"]


def frame_inputs(samples: Path | None, folder: Path) -> dict[str, Any]:
    """The frame as PNG and JPEG files, its packed scores, and the label maps to encode."""
    from PIL import Image

    from fcnseg.benchmarks.inputs import photo
    from fcnseg.benchmarks.postprocess import synthetic_scores

    rgb = photo(samples, *FRAME)
    Image.fromarray(rgb).save(folder / "frame.png")
    Image.fromarray(rgb).save(folder / "frame.jpg", quality=90)
    shipped, _, _ = synthetic_scores(*FRAME, classes=7, amplitude=INT9 / 3.5)
    shipped = np.clip(shipped, -INT9, INT9 - 1)
    general = synthetic_scores(*FRAME)
    return {
        "rgb": rgb,
        "png": folder / "frame.png",
        "jpg": folder / "frame.jpg",
        "shipped": (shipped, np.full(7, 0.06603125482797623), np.zeros(7)),
        "general": general,
        "packed_scores": (shipped.astype("<i2").view(np.uint8)).reshape(1, *shipped.shape, 2),
    }


def stages(data: dict[str, Any], folder: Path) -> dict[str, Callable[[], object]]:
    """Stage name -> a no-argument function doing that stage once for the frame."""
    from fcnseg.host.backends.pynq import finn_pack, finn_unpack
    from fcnseg.host.images import load_image, save_mask, save_overlay, save_scores, voc_palette
    from fcnseg.host.upsample import upsample_argmax

    rgb, scores = data["rgb"], data["shipped"][0]
    buffer = np.empty((1, *FRAME, 3, 1), dtype=np.uint8)  # the DMA buffer (cacheable copy)
    palette = voc_palette()
    labels = upsample_argmax(*data["shipped"], FRAME, 8)

    def pack() -> None:
        np.copyto(buffer, finn_pack(rgb.reshape(1, *FRAME, 3, 1), "UINT8"))

    def up(which: str, precision: str) -> Callable[[], np.ndarray]:
        return lambda: upsample_argmax(*data[which], FRAME, 8, precision=precision)

    return {
        "decode PNG": lambda: load_image(data["png"]),
        "decode JPEG q90": lambda: load_image(data["jpg"]),
        "pack": pack,
        "unpack INT9": lambda: finn_unpack(data["packed_scores"], "INT9", 1),
        "upsample+argmax float32, 7 classes": up("shipped", "float32"),
        "upsample+argmax float64, 7 classes": up("shipped", "float64"),
        "upsample+argmax float32, 21 classes": up("general", "float32"),
        "upsample+argmax float64, 21 classes": up("general", "float64"),
        "encode mask PNG zlib 1 RLE": lambda: save_mask(folder / "m1.png", labels, palette),
        "encode mask PNG zlib 6": lambda: save_mask(
            folder / "m6.png", labels, palette, None, 6, zlib.Z_DEFAULT_STRATEGY
        ),
        "encode overlay JPEG q90": lambda: save_overlay(folder / "o.jpg", rgb, labels, palette),
        "write scores npz (--scores)": lambda: save_scores(
            folder / "s.npz",
            scores.astype(np.int32),
            image_size=FRAME,
            stride=8,
            field=8,
            scale=data["shipped"][1],
            bias=data["shipped"][2],
            classes=CLASS_NAMES,
        ),  # fmt: skip
        "encode overlay PNG": lambda: save_overlay(folder / "o.png", rgb, labels, palette),
    }


def checks(data: dict[str, Any], trials: int = 100) -> dict[str, bool]:
    """Exactness here (under qemu: on 32-bit ARM): on the frame, float32 and float64 labels ==
    the naive reference for both models; on ``trials`` random small maps (strides 1-16,
    shift-and-stitch fields, scores up to 2**31, per-class or one scale), both precisions ==
    naive; the overlay's tables == the float32 blend."""
    from fcnseg.host.images import overlay, voc_palette
    from fcnseg.host.upsample import upsample_argmax, upsample_argmax_naive

    out = {}
    for which in ("shipped", "general"):
        naive = upsample_argmax_naive(*data[which], FRAME, 8, rows_per_chunk=64)
        for precision in ("float32", "float64"):
            got = upsample_argmax(*data[which], FRAME, 8, precision=precision)
            out[f"{which} {precision} == naive"] = bool(np.array_equal(got, naive))
    rng, same = np.random.default_rng(0), True
    for trial in range(trials):
        stride = int(rng.choice([1, 2, 3, 4, 8, 16]))
        field = stride * int(rng.choice([1, 2, 4]))
        h, w, c = (int(v) for v in rng.integers(1, 7, 3))
        top = int(rng.choice([2, 1000, 2**30, 2**31 - 4]))
        mid = int(rng.integers(-top, top))
        s = rng.integers(max(3 - 2**31, mid - 300), min(2**31 - 1, mid + 300), size=(h, w, c))
        scale, bias = (
            (rng.uniform(0.001, 2, c), rng.uniform(-1, 1, c)),
            (np.full(c, 0.066), np.zeros(c)),
            (rng.choice([0.25, 1.0, 3.0], c), rng.choice([0.0, 0.5], c)),
        )[trial % 3]
        shape = (max(1, h * stride - trial % stride), max(1, w * stride - trial % 3 % stride))
        ref = upsample_argmax_naive(s, scale, bias, shape, stride, field)
        for precision in ("float32", "float64"):
            got = upsample_argmax(s, scale, bias, shape, stride, field, 3, precision)
            same &= bool(np.array_equal(got, ref))
    out[f"{trials} random maps, both precisions == naive"] = same
    rgb, labels = data["rgb"], upsample_argmax(*data["general"], FRAME, 8)
    palette = voc_palette()
    blend = 0.5 * rgb.astype(np.float32) + 0.5 * palette[labels].astype(np.float32)
    expect = np.clip(np.round(blend), 0, 255).astype(np.uint8)
    out["overlay tables == float32 blend"] = bool(
        np.array_equal(overlay(rgb, labels, palette), expect)
    )
    return out


def measure_stages(data: dict[str, Any], folder: Path, reps: int) -> dict[str, Any]:
    """Per stage: thread CPU and wall ms per frame, median [min-max] over ``reps``."""
    from fcnseg.benchmarks.timing import brief, compare

    times = compare(stages(data, folder), reps)
    return {
        name: {"cpu_ms": brief(t["cpu"], 1e3, 2), "wall_ms": brief(t["wall"], 1e3, 2)}
        for name, t in times.items()
    }


class _Precomputed:
    """A stand-in segmenter for the pipeline: scores are ready, finishing is the real one."""

    def __init__(self, scores: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        self.engine = SimpleNamespace(run=lambda x: x, fabric_fps=None, timing=None)
        self.values = scores

    def scores(self, rgb: np.ndarray, run: Any = None) -> np.ndarray:
        return self.values[0]

    def finish(self, scores: np.ndarray, shape: tuple[int, int]) -> Any:
        from fcnseg.host.segmenter import Segmentation
        from fcnseg.host.upsample import upsample_argmax

        labels = upsample_argmax(scores, *self.values[1:], shape, 8)
        return Segmentation(labels, scores, 8, 8)


def _finish_parts(data: dict[str, Any], folder: Path) -> dict[str, Callable[[int], None]]:
    """The finish stage's parts, each ``fn(i)`` for frame ``i`` (its own output files)."""
    from fcnseg.host.images import save_mask, save_overlay, voc_palette
    from fcnseg.host.upsample import upsample_argmax

    rgb, palette = data["rgb"], voc_palette()
    labels = upsample_argmax(*data["shipped"], FRAME, 8)
    return {
        "upsample+argmax float32, 7 classes": lambda i: upsample_argmax(*data["shipped"], FRAME, 8),
        "encode mask PNG zlib 1 RLE": lambda i: save_mask(folder / f"p{i}.png", labels, palette),
        "encode overlay JPEG q90": lambda i: save_overlay(
            folder / f"p{i}.jpg", rgb, labels, palette
        ),
    }


def _threaded(fn: Callable[[int], None], frames: int, threads: int) -> tuple[float, float]:
    """``(wall, process CPU)`` seconds for ``frames`` calls of ``fn`` shared by ``threads``
    threads."""

    def work(k: int) -> None:
        for i in range(k, frames, threads):
            fn(i)

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    cpu, start = time.process_time(), time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - start, time.process_time() - cpu


def _controls() -> dict[str, Callable[[int], None]]:
    """Two references for what a second thread can give right now on this machine: zlib
    compression (releases the GIL: as parallel as the free cores allow) and a pure-Python loop
    (holds it: never parallel)."""
    block = np.random.default_rng(0).integers(0, 4, size=1 << 21, dtype=np.uint8).tobytes()

    def python_loop(_i: int) -> None:
        total = 0
        for k in range(200_000):
            total += k

    return {
        "control: zlib.compress (no GIL)": lambda _i: zlib.compress(block, 1),
        "control: pure-Python loop (GIL)": python_loop,
    }


def measure_workers(data: dict[str, Any], folder: Path, reps: int) -> dict[str, Any]:
    """finish_workers 1 vs 2 in the pipeline, and each finish part in 1 vs 2 threads: wall ms
    per frame and the speedup (median [min-max] over ``reps``, every side and thread count in
    turns), and with 2 threads the *concurrency* (process CPU / wall). The share of the GIL-free
    control's extra concurrency a side reaches, ``(c - 1) / (c_zlib - 1)``, says how much of a
    second core it can use at the moment, whatever else loads the machine: ~1 for work without
    the GIL, ~0 for work under it (the pure-Python control)."""
    from fcnseg.host.images import save_mask, save_overlay, voc_palette
    from fcnseg.host.pipeline import Pipeline

    seg, palette = _Precomputed(data["shipped"]), voc_palette()

    def write(result: Any) -> None:
        labels, i = result.segmentation.labels, result.index
        save_overlay(folder / f"w{i}.jpg", data["rgb"], labels, palette)
        save_mask(folder / f"w{i}.png", labels, palette)

    def pipeline(workers: int) -> tuple[float, float]:
        pipe = Pipeline(seg, decode=lambda rgb: rgb, write=write, finish_workers=workers)
        cpu, start = time.process_time(), time.perf_counter()
        failed = [r.error for r in pipe.run([data["rgb"]] * FRAMES) if not r.ok]
        if failed:
            raise RuntimeError(failed[0])
        return time.perf_counter() - start, time.process_time() - cpu

    sides: dict[str, Callable[[int], tuple[float, float]]] = {
        "finish stage in the pipeline": pipeline
    }
    for name, fn in {**_finish_parts(data, folder), **_controls()}.items():
        sides[name] = lambda n, fn=fn: _threaded(fn, FRAMES, n)
    walls: dict[str, dict[int, list[float]]] = {name: {1: [], 2: []} for name in sides}
    concurrency: dict[str, list[float]] = {name: [] for name in sides}
    for side in sides.values():
        side(1)  # warm-up
    for _ in range(max(1, reps)):
        for name, side in sides.items():
            for n in (1, 2):
                wall, cpu = side(n)
                walls[name][n].append(wall / FRAMES)
                if n == 2:
                    concurrency[name].append(cpu / wall)
    free = float(np.median(concurrency["control: zlib.compress (no GIL)"]))
    out: dict[str, Any] = {}
    for name in sides:
        one, two = (float(np.median(walls[name][n])) * 1e3 for n in (1, 2))
        speedups = [a / b for a, b in zip(walls[name][1], walls[name][2], strict=True)]
        c = float(np.median(concurrency[name]))
        out[name] = {
            "wall_ms_1": round(one, 2),
            "wall_ms_2": round(two, 2),
            "speedup": round(float(np.median(speedups)), 2),
            "speedup_min": round(min(speedups), 2),
            "speedup_max": round(max(speedups), 2),
            "concurrency_2": round(c, 2),
            "second_core_share": round((c - 1) / (free - 1), 2) if free >= MIN_FREE else None,
        }
    return out


def run_here(samples: Path | None, reps: int, worker_reps: int) -> dict[str, Any]:
    """All the measurements in this interpreter."""
    import platform

    with tempfile.TemporaryDirectory(prefix="fcnseg-arm-budget-") as tmp:
        folder = Path(tmp)
        data = frame_inputs(samples, folder)
        return {
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "machine": platform.machine(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pillow": __import__("PIL").__version__,
            "frame": list(FRAME),
            "photo": "sample" if samples is not None else "synthetic",
            "checks": checks(data),
            "stages": measure_stages(data, folder, reps),
            "workers": measure_workers(data, folder, worker_reps),
        }


def _shim(folder: Path) -> Path:
    """An import tree for a foreign interpreter: ``fcnseg`` with this checkout's files."""
    import fcnseg
    import fcnseg.benchmarks
    import fcnseg.host

    root = folder / "fcnseg"
    root.mkdir()
    for item in Path(fcnseg.__file__).parent.iterdir():
        if item.suffix == ".py":
            (root / item.name).symlink_to(item)
    (root / "host").symlink_to(Path(fcnseg.host.__file__).parent)
    (root / "benchmarks").symlink_to(Path(fcnseg.benchmarks.__file__).parent)
    return folder


def run_qemu(armhf: Path, samples: Path | None, reps: int, worker_reps: int) -> dict[str, Any]:
    """The same measurements as ARM code: this script under ``qemu-arm -cpu cortex-a9``."""
    python = armhf / "usr" / "bin" / "python3.11"
    if not python.is_file():
        raise SystemExit(f"arm_budget: {python} not found (an armhf Debian userland, see docs)")
    with tempfile.TemporaryDirectory(prefix="fcnseg-arm-shim-") as tmp:
        shim, out = _shim(Path(tmp)), Path(tmp) / "qemu.json"
        command = ["qemu-arm", "-cpu", "cortex-a9", "-L", str(armhf), str(python), "-m",
                   "fcnseg.benchmarks.arm_budget", "--child", str(out), "--reps", str(reps),
                   "--worker-reps", str(worker_reps)]  # fmt: skip
        if samples is not None:
            command += ["--samples", str(samples)]
        env = {**os.environ, "PYTHONPATH": str(shim), "OPENBLAS_NUM_THREADS": "1"}
        env.pop("VIRTUAL_ENV", None)
        subprocess.run(command, check=True, env=env, cwd=tmp)
        return json.loads(out.read_text())


def budget(here: dict[str, Any], qemu: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per stage: ms here, the A9 estimate at both ends of the factor, qemu-arm ms."""
    rows = []
    for name, t in here["stages"].items():
        ms = t["cpu_ms"]["median"]
        row = {
            "stage": name,
            "x86_ms": ms,
            "a9_ms_low": round(ms * FACTORS[0], 1),
            "a9_ms_high": round(ms * FACTORS[1], 1),
        }
        if qemu is not None:
            row["qemu_arm_ms"] = qemu["stages"][name]["cpu_ms"]["median"]
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for r in [row] for k in keys) + " |"
              for row in rows]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=Path, default=None, help="folder with astronaut.jpg")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--worker-reps", type=int, default=3)
    parser.add_argument("--qemu", type=Path, default=None, help="armhf userland root")
    parser.add_argument("--qemu-reps", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:  # inside qemu: measure, write, done
        args.child.write_text(json.dumps(run_here(args.samples, args.reps, args.worker_reps)))
        return 0
    here = run_here(args.samples, args.reps, args.worker_reps)
    qemu = None
    if args.qemu is not None:
        qemu = run_qemu(args.qemu, args.samples, args.qemu_reps, 1)
    result = {
        "target": {"fps": TARGET_FPS, "ms_per_frame": round(1e3 / TARGET_FPS, 1),
                   "cores": CORES, "factors": list(FACTORS)},
        "here": here,
        "qemu": qemu,
        "budget": budget(here, qemu),
    }  # fmt: skip
    if args.json is not None:
        from fcnseg.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=1))
    print(markdown(result["budget"]))
    for label, part in (("here", here), ("qemu-arm", qemu)):
        if part is None:
            continue
        print(f"\nfinish workers 1 vs 2, {label} (wall ms per frame):")
        for name, w in part["workers"].items():
            print(f"  {name}: {w['wall_ms_1']} -> {w['wall_ms_2']} ms, x{w['speedup']} "
                  f"[{w['speedup_min']}-{w['speedup_max']}], concurrency "
                  f"{w['concurrency_2']}, second-core share {w['second_core_share']}")  # fmt: skip
        print(f"  checks: {part['checks']}")
    return (
        0 if all(here["checks"].values()) and (qemu is None or all(qemu["checks"].values())) else 1
    )


if __name__ == "__main__":
    raise SystemExit(main())
