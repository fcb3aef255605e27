"""Timing that holds still on a shared machine: CPU and wall time, sides in turns, spreads.

Two cores shared with other work make a wall-clock ratio swing from run to run: a burst of load
from elsewhere stretches whichever side happens to run then. Three things keep a ratio still:

- **CPU time** per repetition besides wall time. The time the measured code spent on a core is
  what it costs; time spent waiting for a core that someone else holds is not. Two clocks:
  ``"thread"`` (:func:`time.thread_time`, the calling thread only) for work that runs on the
  calling thread (numpy with BLAS capped at 1 thread, torch with ``set_num_threads(1)``), and
  ``"process"`` (:func:`time.process_time`, every thread of the process) where the measured code
  may use more threads (onnxruntime with 2 intra-op threads, the threaded pipeline). Both clocks
  are read on every repetition; the chosen one is the figure (``cpu``), and ``process`` is kept
  (``process_s``), so a side that unexpectedly worked on other threads shows it
  (:func:`off_thread_share`). Neither clock counts sleeping or waiting for I/O.
- **Interleaving**: repetition *i* runs every side once, in turn (A, B, A, B, ...), so slow
  stretches of the machine fall on all sides alike, and A's *i*-th sample and B's *i*-th sample
  were taken moments apart. A ratio is therefore computed **per repetition** (``A_i / B_i``) and
  summarised, not only as a ratio of two medians.
- **Spreads**: every figure is a :func:`spread` (median, min, max, quartiles, count) over the
  repetitions, for each side and for the ratio, so a reader sees how much it moved.

:func:`compare` runs the sides; :func:`paired_ratio` turns two of its sides into a ratio with
spreads; :func:`scaled` divides a side by a count (per tile, per image). Pure standard library.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

#: clock name -> the CPU-time function it reads.
CLOCKS: dict[str, Callable[[], float]] = {"thread": time.thread_time, "process": time.process_time}


def spread(samples: Sequence[float], digits: int | None = None) -> dict[str, Any]:
    """``{"median", "min", "max", "q1", "q3", "n"}`` of ``samples`` (quartiles: the medians of
    the lower and upper halves, the middle sample excluded when ``n`` is odd; equal to the median
    for ``n == 1``). ``digits`` rounds the values."""
    values = sorted(float(v) for v in samples)
    if not values:
        raise ValueError("spread of no samples")
    n, half = len(values), len(values) // 2
    lower, upper = (values[:half], values[n - half :]) if n > 1 else (values, values)
    out: dict[str, Any] = {
        "median": statistics.median(values),
        "min": values[0],
        "max": values[-1],
        "q1": statistics.median(lower),
        "q3": statistics.median(upper),
    }
    if digits is not None:
        out = {k: round(v, digits) for k, v in out.items()}
    out["n"] = n
    return out


def side(wall: list[float], cpu: list[float], process: list[float], clock: str) -> dict[str, Any]:
    """One side of a comparison from its samples (seconds per repetition, in order), as
    :func:`compare` returns it."""
    return {
        "median_s": statistics.median(wall),
        "min_s": min(wall),
        "reps": len(wall),
        "clock": clock,
        "wall": spread(wall),
        "cpu": spread(cpu),
        "wall_s": wall,
        "cpu_s": cpu,
        "process_s": process,
    }


def compare(
    fns: dict[str, Callable[[], object]],
    reps: int,
    warmup: bool = True,
    clock: str | dict[str, str] = "thread",
) -> dict[str, dict[str, Any]]:
    """Time the functions of ``fns`` in turns, ``reps`` rounds (after one warm-up round).

    ``clock``: ``"thread"`` or ``"process"`` for every side, or a dict name -> clock (missing
    names: ``"thread"``) when only some sides use more threads than the caller's.

    Returns, per name: ``wall`` and ``cpu`` (:func:`spread` of seconds per repetition, ``cpu`` on
    the side's clock), the samples themselves (``wall_s``, ``cpu_s``, ``process_s``, in
    repetition order), ``reps``, ``clock``, and ``median_s``/``min_s`` (of wall time).
    """
    clocks = {name: clock if isinstance(clock, str) else clock.get(name, "thread") for name in fns}
    for name, c in clocks.items():
        if c not in CLOCKS:
            raise ValueError(f"clock {c!r} for {name!r}: choose from {', '.join(CLOCKS)}")
    if warmup:
        for fn in fns.values():
            fn()
    samples: dict[str, tuple[list[float], list[float], list[float]]] = {
        name: ([], [], []) for name in fns
    }
    for _ in range(max(1, reps)):
        for name, fn in fns.items():
            wall, cpu, process = samples[name]
            cpu_clock = CLOCKS[clocks[name]]
            c0, p0, w0 = cpu_clock(), time.process_time(), time.perf_counter()
            fn()
            w1, p1, c1 = time.perf_counter(), time.process_time(), cpu_clock()
            wall.append(w1 - w0)
            cpu.append(c1 - c0)
            process.append(p1 - p0)
    return {name: side(*s, clocks[name]) for name, s in samples.items()}


def scaled(timing: dict[str, Any], count: float) -> dict[str, Any]:
    """A side (from :func:`compare`) per item: every sample divided by ``count``."""
    wall = [v / count for v in timing["wall_s"]]
    cpu = [v / count for v in timing["cpu_s"]]
    process = [v / count for v in timing["process_s"]]
    return side(wall, cpu, process, timing["clock"])


def paired_ratio(
    numerator: dict[str, Any], denominator: dict[str, Any], digits: int = 2
) -> dict[str, Any] | None:
    """``{"cpu": spread, "wall": spread, "reps", "clock"}`` of ``numerator_i / denominator_i``.

    Both sides must come from one :func:`compare` call (same repetitions, in turns): the *i*-th
    ratio divides samples taken moments apart. ``clock`` is the sides' clock, or
    ``"process/thread"`` (numerator/denominator) when they differ. None when a denominator
    sample is zero (a clock too coarse for the work: make the work longer).
    """
    if numerator["reps"] != denominator["reps"]:
        raise ValueError("paired_ratio needs two sides of one compare() call")
    out: dict[str, Any] = {}
    for kind in ("cpu", "wall"):
        nums, dens = numerator[f"{kind}_s"], denominator[f"{kind}_s"]
        if not all(dens):
            return None
        out[kind] = spread([a / b for a, b in zip(nums, dens, strict=True)], digits)
    out["reps"] = numerator["reps"]
    clocks = (numerator["clock"], denominator["clock"])
    out["clock"] = clocks[0] if clocks[0] == clocks[1] else "/".join(clocks)
    return out


def median_ratio(ratio: dict[str, Any] | None, kind: str = "cpu") -> float | None:
    """The median of a :func:`paired_ratio` on ``kind`` (``cpu``/``wall``), or None."""
    return None if ratio is None else ratio[kind]["median"]


def off_thread_share(timing: dict[str, Any]) -> float:
    """The share of the process's CPU time during a side's repetitions spent on *other* threads
    than the caller (0 for ``clock="process"`` by definition; near 0 when ``"thread"`` was the
    right clock)."""
    process = sum(timing["process_s"])
    if timing["clock"] == "process" or process <= 0:
        return 0.0
    return max(0.0, 1.0 - sum(timing["cpu_s"]) / process)


def off_thread_notes(sides: dict[str, dict[str, Any]], limit: float = 0.05) -> list[str]:
    """Notes for the sides timed on the ``thread`` clock whose process worked elsewhere too
    (more than ``limit`` of its CPU time on other threads: their CPU figure is then too low)."""
    return [
        f"{name}: {100 * share:.0f}% of the process's CPU time during its repetitions was on "
        "other threads than the timed one (its thread-clock CPU figure undercounts)"
        for name, timing in sides.items()
        if (share := off_thread_share(timing)) > limit
    ]


def brief(values: dict[str, Any], scale: float = 1.0, digits: int = 2) -> dict[str, Any]:
    """A :func:`spread` as a table cell wants it: times ``scale``, rounded (``scale=1e3``: ms)."""
    return {k: (v if k == "n" else round(v * scale, digits)) for k, v in values.items()}
