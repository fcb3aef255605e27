"""Benchmark: a farm (issue 17) of 1, 2 and 3 local Dask workers, images/s and its ratio to one.

The shipped Pynq-Z2 package (or ``--package``) segments a batch of synthetic 240 x 320 photos
(two tiles each) with the real command, ``fcnseg segment IMAGES -o OUT --package PKG --backend
B --scheduler ADDRESS`` (:func:`fcnseg.cli.main` in this process, a fresh ``OUT`` per
repetition), on three local clusters started once (1, 2 and 3 worker processes, one thread and
one ``FPGA`` each, as ``--local-workers N`` starts them). Each batch includes the client's checks
and every worker opening its accelerator (the farm's plugin). Two settings:

- ``sim``: every worker runs the bit-exact simulator. Two cores here: the workers compete for
  them, so the ratio stays well below the worker count; it says what the farm costs in
  overhead on one machine, not what boards would give.
- ``paced``: every worker owns an emulated Zynq (:class:`fcnseg.testing.farm.EmulatedBoard`,
  the ``pynq`` backend through pynq 4.0.0) whose fabric returns zero scores at the package's
  estimated interval and latency (:meth:`~fcnseg.testing.emulated_zynq.FabricTiming.of_package`):
  the fabric waits, as a board's would, without using a core, so the ratio approaches the
  worker count when the host side keeps up. Needs pynq: the benchmark runs in ``.venv-board``
  (``make bench``'s second line) and is skipped elsewhere.

The three cluster sizes run **in turns** (1, 2, 3 workers, then again), after one warm-up
round. Per repetition: wall time, and CPU time on the process clock of the client *and every
worker process* (read with ``client.run``); images/s from the wall time; the speed-up is
``wall_1 / wall_N`` per repetition and the CPU ratio ``cpu_N / cpu_1`` (what N workers spend
for the same batch), each a spread. The headline's value is the wall-time speed-up (a farm buys
wall time; its CPU time is what it costs). ``--quick``: 4 images, one repetition, the fabric's
time scaled by 1/4 (rates scaled back).
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fcnseg.benchmarks import inputs
from fcnseg.benchmarks.runner import Context, Skipped, check, headline
from fcnseg.benchmarks.subjects import shipped_package
from fcnseg.benchmarks.timing import brief, paired_ratio, side, spread

#: the cluster sizes compared (the first is the reference)
WORKERS = (1, 2, 3)
#: the photos' size: two tiles of the shipped package each
IMAGE = (240, 320)
#: images per batch (``--quick``: :data:`QUICK_IMAGES`), per setting
IMAGES = {"sim": 24, "paced": 24}
QUICK_IMAGES = 4


def _package(ctx: Context) -> Path:
    if ctx.package is not None:
        return Path(ctx.package)
    found = shipped_package(ctx)
    if found is None:
        raise Skipped("no fcn8s-pynq-z2 package shipped with the host runtime; pass --package")
    return found


def _images(folder: Path, count: int) -> Path:
    """``count`` synthetic PNG photos of :data:`IMAGE` in ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(inputs.synthetic_photo(*IMAGE, seed=i)).save(folder / f"img{i:02d}.png")
    return folder


def _masks(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("img*.png"))}


def _segment(args: list[str]) -> int:
    """``fcnseg segment ARGS`` in this process, its output kept out of the report."""
    from fcnseg.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(["segment", *args])


def _workers_cpu(client: Any) -> float:
    """The CPU seconds every worker process of ``client``'s cluster has used so far."""
    return float(sum(client.run(time.process_time).values()))


def _rounds(
    fns: dict[int, Callable[[], None]], clients: dict[int, Any], reps: int
) -> dict[int, dict[str, Any]]:
    """The batches of ``fns`` in turns, ``reps`` rounds after a warm-up round: per cluster size a
    :func:`~fcnseg.benchmarks.timing.side`, CPU time the client's and its workers'."""
    for fn in fns.values():
        fn()
    wall: dict[int, list[float]] = {n: [] for n in fns}
    cpu: dict[int, list[float]] = {n: [] for n in fns}
    for _ in range(max(1, reps)):
        for n, fn in fns.items():
            c0, w0, k0 = time.process_time(), time.perf_counter(), _workers_cpu(clients[n])
            fn()
            w1, c1, k1 = time.perf_counter(), time.process_time(), _workers_cpu(clients[n])
            wall[n].append(w1 - w0)
            cpu[n].append((c1 - c0) + (k1 - k0))
    return {n: side(wall[n], cpu[n], cpu[n], "process") for n in fns}


def _setting(ctx: Context, setting: str, package: Path, work: Path) -> dict[str, Any]:
    """One setting's rows, headline figures and checks."""
    from fcnseg.host.farm.client import connect

    count = QUICK_IMAGES if ctx.quick else IMAGES[setting]
    scale = 0.25 if ctx.quick and setting == "paced" else 1.0
    images = _images(work / setting / "in", count)
    backend, run_package = "sim", package
    plugin: Any = None
    if setting == "paced":
        from fcnseg.host.package import load_package
        from fcnseg.testing import emulated_zynq as ez
        from fcnseg.testing.farm import EmulatedBoard

        run_package = ez.emulated_package(load_package(package), work / "emulated" / package.name)
        backend, plugin = "pynq", EmulatedBoard(str(run_package), paced=True, time_scale=scale)
    want: dict[str, bytes] | None = None  # the sim setting's masks, from a local run
    if setting == "sim":
        reference = work / setting / "reference"
        assert _segment([str(images), "-o", str(reference), "--package", str(package)]) == 0
        want = _masks(reference)
    outcomes: dict[int, list[tuple[int, dict[str, bytes]]]] = {n: [] for n in WORKERS}
    with contextlib.ExitStack() as stack:
        clients = {n: stack.enter_context(connect(n, None, ctx.log)) for n in WORKERS}
        if plugin is not None:
            for client in clients.values():
                client.register_plugin(plugin, name=plugin.name)

        def batch(n: int) -> Callable[[], None]:
            address = clients[n].scheduler_info()["address"]

            def go() -> None:
                out = work / setting / f"out-{n}-{len(outcomes[n])}"
                args = [str(images), "-o", str(out), "--package", str(run_package)]
                status = _segment([*args, "--backend", backend, "--scheduler", address])
                outcomes[n].append((status, _masks(out)))

            return go

        reps = ctx.reps_for("slow")
        sides = _rounds({n: batch(n) for n in WORKERS}, clients, reps)
        tiles = {n: _board_tiles(clients[n]) if plugin is not None else None for n in WORKERS}
    rows, figures = [], []
    one = sides[WORKERS[0]]
    for n in WORKERS:
        s = sides[n]
        speed = paired_ratio(one, s, 2)  # wall_1 / wall_N: the speed-up; cpu_1 / cpu_N
        assert speed is not None
        cost = paired_ratio(s, one, 2)  # cpu_N / cpu_1: what N workers spend on the batch
        assert cost is not None
        rate = spread([count * scale / w for w in s["wall_s"]], 2)
        rows.append(
            {
                "setting": setting,
                "workers": n,
                "images": count,
                "images_per_s": rate,
                "wall_ms_per_image": brief(s["wall"], 1e3 / (count * scale), 1),
                "cpu_ms_per_image": brief(s["cpu"], 1e3 / count, 1),
                "wall_vs_1": speed["wall"],
                "cpu_vs_1": cost["cpu"],
                "reps": s["reps"],
                "clock": "process",
            }
        )
        if n != WORKERS[0]:
            figures.append(
                headline(
                    f"{setting}: images/s, {n} workers / 1 (wall-time speed-up)",
                    speed["wall"]["median"],
                    "x",
                    spread=speed,
                )
            )
        figures.append(headline(f"{setting}: images/s with {n} worker(s)", rate["median"], "img/s"))
    runs = [o for n in WORKERS for o in outcomes[n]]
    checks = [
        check(
            f"{setting}: every batch did every image (exit 0, {count} masks)",
            all(status == 0 and len(masks) == count for status, masks in runs),
        ),
        check(
            f"{setting}: every batch's masks equal a local sim run's, byte for byte"
            if setting == "sim"
            else f"{setting}: every batch's masks are identical (zero scores: one class)",
            all(masks == (want or runs[0][1]) for _, masks in runs),
        ),
    ]
    if plugin is not None:
        per_image = _tiles_per_image(package)
        expected = {n: per_image * count * len(outcomes[n]) for n in WORKERS}
        checks.append(
            check(
                f"{setting}: every tile ran on the workers' emulated boards",
                tiles == expected,
                f"tiles per cluster size {tiles}, expected {expected}",
            )
        )
    return {"rows": rows, "headline": figures, "checks": checks, "scale": scale}


def _board_tiles(client: Any) -> int:
    """The tiles the emulated boards of ``client``'s workers have run, summed."""
    from fcnseg.testing.farm import board_tiles

    return int(sum(client.run(board_tiles).values()))


def _tiles_per_image(package: Path) -> int:
    from fcnseg.host.segmenter import Segmenter

    return len(Segmenter.load(package, "sim").plan(*IMAGE).tiles)


def run(ctx: Context) -> dict[str, Any]:
    import importlib.util

    for module, why in (
        ("distributed", "Dask distributed"),
        ("pynq", "pynq (the emulated boards)"),
    ):
        if importlib.util.find_spec(module) is None:
            raise Skipped(f"needs {why}: run it in the board environment (.venv-board)")
    package = _package(ctx)
    work = ctx.work_dir / "farm"
    settings = ["sim", "paced"]
    notes = []
    parts = [_setting(ctx, setting, package, work) for setting in settings]
    if ctx.quick:
        notes.append("paced: the fabric's time scaled by 1/4 (--quick), rates scaled back.")
    return {
        "title": f"A farm of 1, 2 and 3 local Dask workers ({package.name}, "
        f"{IMAGE[0]}x{IMAGE[1]} images)",
        "method": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "rows": [row for part in parts for row in part["rows"]],
        "headline": [h for part in parts for h in part["headline"]],
        "checks": [c for part in parts for c in part["checks"]],
        "notes": [
            *notes,
            "CPU time is the client's process and every worker process of the cluster (their "
            "own heartbeats included); the workers share this machine's cores, so on the "
            "simulator N workers cannot run N times as fast. The paced boards' fabric sleeps: "
            "its time is not CPU time.",
        ],
    }
