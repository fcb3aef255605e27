"""Run benchmarks: timing helpers, machine info, skip/error handling, the results dict.

Timing (:mod:`.timing`): the sides of a comparison (X and its reference) run **in turns**, one
repetition of each, then the next (:func:`interleaved`, after one warm-up round), and every
repetition records **wall time** and **CPU time** (:func:`time.thread_time` for work on the
calling thread, :func:`time.process_time` where the measured code may use more threads; each
benchmark says which). A ratio is taken **per repetition** (``X_i / ref_i``, samples taken
moments apart) and reported as a spread over the repetitions, on both clocks
(:func:`~.timing.paired_ratio`). CPU time is the steadier figure on a shared machine (waiting for
a core someone else holds is not counted); wall time is what a user waits. :func:`timed` is one
side alone.

A benchmark's result (a JSON-ready dict) has::

    title     str
    method    str, how it was measured (rendered in RESULTS.md); names the CPU clock
    rows      list of dicts, one table row each (same keys in every row); a timed quantity or a
              ratio is a *spread* cell (below), a count or label a plain value
    headline  list of {"figure", "value", "unit", "goal", "met"}: the numbers the issue asks for;
              a ratio's headline also has "cpu" and "wall" (spreads), "reps" and "clock", and its
              "value" (on which "goal" is judged) is the median CPU-time ratio
    checks    list of {"name", "passed", "detail"}: exactness asserted on the same inputs
    notes     list of str

A *spread* is ``{"median", "min", "max", "q1", "q3", "n"}`` over ``n`` repetitions
(:func:`~.timing.spread`; ``q1``/``q3`` the quartiles); RESULTS.md shows it as
``median [min–max]``. Typical row keys: ``cpu_ms``/``wall_ms`` (a side's time per repetition),
``cpu_vs_<ref>``/``wall_vs_<ref>`` (the per-repetition ratio to the reference), ``reps`` and
``clock`` (``thread`` or ``process``).

The runner adds ``status`` (``ok``; ``failed`` when a check did not pass, figures kept;
``skipped`` when a dependency is missing, :class:`Skipped`; ``error`` for anything else, with
the message) and ``seconds``. The document's format is ``fcnseg-bench/2`` (``/1`` had wall-time
medians only: one number per cell, one repetition for shift-and-stitch 4).
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fcnseg.benchmarks.timing import compare, median_ratio

#: distributions whose versions the results record.
VERSIONED = ("numpy", "torch", "brevitas", "qonnx", "finn-plus", "onnxruntime", "pynq")


class Skipped(Exception):
    """Raised by a benchmark that cannot run here; the message is the reason."""


def shipped_packages_dir() -> Path | None:
    """The deployment packages installed with the host runtime (``fcnseg.host`` package data).

    Found through :mod:`importlib.resources`, so an editable checkout and a wheel on a board
    resolve alike; None when the installed runtime ships none.
    """
    from importlib.resources import files

    root = files("fcnseg.host").joinpath("packages")
    return Path(str(root)) if root.is_dir() else None


@dataclass
class Context:
    """What every benchmark gets: options, a scratch folder and a cache shared between them.

    The subjects come from the options (``fcnseg bench --package/--checkpoint/--samples``) or
    from the installed package, never from paths relative to this file: the suite runs from a
    wheel as well as from a checkout.
    """

    reps: int = 5
    quick: bool = False
    backend: str = "sim"
    work_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fcnseg-bench-")))
    #: the deployment package to measure (``--package``); None: the shipped default.
    package: Path | None = None
    #: the quantized checkpoint the package was made from (``--checkpoint``): Brevitas reference,
    #: its QCDQ export (``export/`` beside it) and accuracy; its float twin is looked up beside it.
    checkpoint: Path | None = None
    #: a folder of sample photos (``--samples``); None: synthetic stand-ins (:mod:`.inputs`).
    samples_dir: Path | None = None
    #: where the shipped packages are looked up (tests point it at an empty folder).
    packages_dir: Path | None = field(default_factory=shipped_packages_dir)
    #: extra tile sizes the simulator benchmark times (``--tile H W``; random weights).
    tiles: tuple[tuple[int, int], ...] = ()
    #: compile a board's package when it is missing (full runs only; ~1 min per board here).
    compile_missing: bool = True
    cache: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))

    def reps_for(self, cost: str = "cheap") -> int:
        """Repetitions for a measurement: ``cheap`` ones get ``reps``, ``slow`` ones at most 3."""
        if cost == "slow":
            return max(1, min(self.reps, 1 if self.quick else 3))
        return max(1, self.reps)


def timed(
    fn: Callable[[], object], reps: int, warmup: bool = True, clock: str = "thread"
) -> dict[str, Any]:
    """One side alone: :func:`~.timing.compare` of ``fn`` over ``reps`` runs (after one warm-up
    run): ``wall``/``cpu`` spreads, samples, ``reps``, ``clock``, ``median_s``/``min_s`` (wall)."""
    return compare({"fn": fn}, reps, warmup, clock)["fn"]


def interleaved(
    fns: dict[str, Callable[[], object]], reps: int, warmup: bool = True, clock: str = "thread"
) -> dict[str, dict[str, Any]]:
    """The functions of ``fns`` timed in turns (A, B, A, B, ...): :func:`~.timing.compare`."""
    return compare(fns, reps, warmup, clock)


def ratio(numerator: float | None, denominator: float | None, digits: int = 2) -> float | None:
    """``numerator / denominator`` rounded, or None when either is missing or zero."""
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, digits)


def headline(
    figure: str,
    value: float | None,
    unit: str,
    goal: str | None = None,
    spread: dict[str, Any] | None = None,
) -> dict:
    """One headline figure; ``goal`` like ``">= 20"`` or ``"<= 1.5"`` is evaluated into ``met``.

    ``spread``: the :func:`~.timing.paired_ratio` the value comes from; its ``cpu``/``wall``
    spreads, ``reps`` and ``clock`` are kept with the figure (use :func:`ratio_headline`).
    """
    met = None
    if goal is not None and value is not None:
        op, _, bound = goal.partition(" ")
        met = value >= float(bound) if op == ">=" else value <= float(bound)
    out = {"figure": figure, "value": value, "unit": unit, "goal": goal, "met": met}
    if spread is not None:
        out.update({k: spread[k] for k in ("cpu", "wall", "reps", "clock")})
    return out


def ratio_headline(
    figure: str, paired: dict[str, Any] | None, unit: str = "x", goal: str | None = None
) -> dict:
    """A headline for a per-repetition ratio: the value is its median on CPU time."""
    return headline(figure, median_ratio(paired, "cpu"), unit, goal, paired)


def check(name: str, passed: bool, detail: str = "") -> dict:
    """One exactness check (a failed check marks the benchmark ``failed``, figures kept)."""
    return {"name": name, "passed": bool(passed), "detail": detail}


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "processor\t: ")):
                value = line.split(":", 1)[1].strip()
                if value and not value.isdigit():
                    return value
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS does not report them)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info() -> dict[str, Any]:
    """The machine, not who shares it: date, cores, CPU model, load average, Python, versions.

    The load average at the start (and, from :func:`run_benchmarks`, at the end) says how busy
    the machine was without naming the processes or users that made it so.
    """
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "load_average_start": load_average(),
        "versions": {dist: _version(dist) for dist in VERSIONED},
    }


def run_one(name: str, target: str, ctx: Context) -> dict[str, Any]:
    """Import and run one benchmark, turning a missing dependency into ``skipped``."""
    module_name, attribute = target.split(":")
    start = time.perf_counter()
    try:
        fn = getattr(importlib.import_module(module_name), attribute)
        result = dict(fn(ctx))
        failed = [c["name"] for c in result.get("checks", []) if not c["passed"]]
        result["status"] = "failed" if failed else "ok"
        if failed:
            result["reason"] = "check(s) failed: " + ", ".join(failed)
    except Skipped as reason:
        result = {"status": "skipped", "reason": str(reason)}
    except ModuleNotFoundError as error:
        result = {
            "status": "skipped",
            "reason": f"needs {error.name!r}, not installed in this environment",
        }
    except Exception as error:  # one benchmark's bug must not lose the others' figures
        result = {
            "status": "error",
            "reason": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc(limit=6),
        }
    result.setdefault("title", name)
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def run_benchmarks(names: Iterable[str], ctx: Context) -> dict[str, Any]:
    """Run ``names`` (in registry order) and return the whole results document."""
    from fcnseg.benchmarks import BENCHMARKS

    wanted = list(names)
    unknown = sorted(set(wanted) - set(BENCHMARKS))
    if unknown:
        from fcnseg.errors import UserError

        raise UserError(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    machine = machine_info()
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for name, target in BENCHMARKS.items():
        if name not in wanted:
            continue
        ctx.log(f"bench: {name} ...")
        results[name] = run_one(name, target, ctx)
        r = results[name]
        ctx.log(f"bench: {name}: {r['status']} in {r['seconds']} s {r.get('reason', '')}".rstrip())
    machine["load_average_end"] = load_average()
    return {
        "format": "fcnseg-bench/2",
        "machine": machine,
        "options": {"reps": ctx.reps, "quick": ctx.quick, "backend": ctx.backend},
        "subject": ctx.cache.get("subject_info"),
        "seconds": round(time.perf_counter() - started, 1),
        "benchmarks": results,
    }
