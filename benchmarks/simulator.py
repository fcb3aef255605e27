"""Benchmark 1: the simulator per tile vs finn-plus ``execute_onnx``, onnxruntime and Brevitas.

Same tile, same subject (:mod:`.subjects`), one process:

- ``sim``: :class:`~fcnseg.host.sim.SimEngine` on the package, one tile per call (1 BLAS thread,
  its default), and per tile in a batch of 4 (how the host's sim backend runs it);
- ``finn``: finn-plus ``execute_onnx`` on the package's ``hw_graph.onnx`` (the HW-layer graph
  the package was made from), as shipped and with ``SANITIZE_QUANT_TENSORS=0``; few repetitions;
- ``ort``: onnxruntime on the QCDQ export, 1 intra-op thread (as the simulator) and 2 threads; a
  speed reference only: it is not bit-exact on FCN-8s skip variants (its mismatches are reported);
- ``brevitas``: the Brevitas module's forward (torch, 1 thread).

Only the simulator needs nothing but numpy: on a board (no torch, no finn) the references are
left out, each with a note saying why, and the sim figures are still measured.

Checks on the same inputs (a photo crop and random pixels): sim == finn (integers), and
sim == Brevitas's integer scores ``rint((logits - bias) / scale)`` with Brevitas in float64, the
exact reference (its float32 forward, which is what is timed, rounds differently where an
accumulator lands exactly on a threshold; how often is noted).

``fcnseg bench --tile H W`` (repeatable) adds the simulator at other tile sizes: the subject's
topology with random weights, exported and compiled at that tile (torch and finn-plus needed),
timed the same way and checked against finn-plus on random pixels; speed does not depend on the
weights, and the time per pixel shows what a larger or smaller accelerator tile costs the host.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fcnseg.benchmarks import inputs
from fcnseg.benchmarks.runner import (
    Context,
    Skipped,
    check,
    headline,
    interleaved,
    ratio_headline,
)
from fcnseg.benchmarks.subjects import built_subject, default_subject, tiny_config
from fcnseg.benchmarks.timing import brief, off_thread_notes, paired_ratio, scaled

METHOD = (
    "Milliseconds per tile, CPU and wall, median [min–max] over the repetitions. The sim "
    "reference is the engine as `fcnseg segment` runs it (the sim backend's batch=4, 4 tiles per "
    "call, divided by 4); one tile per call is shown too. Sim, onnxruntime and Brevitas timed in "
    "turns ({reps} reps after a warm-up round), CPU on the thread clock (each runs on the calling "
    "thread: BLAS capped at 1 thread, torch at 1, ort 1 intra-op thread) except 'ort 2 threads' "
    "(process clock, intra-op spinning off so idle threads burn no CPU). finn-plus "
    "execute_onnx (both settings) in turns with the sim ({slow} reps, process clock: finn runs "
    "some nodes through onnxruntime), its ratios against that group's sim. Ratios are per "
    "repetition (X_i / sim_i). ns_per_pixel is the median CPU time per pixel. "
    "Inputs: a crop of {photo} and uniform random pixels."
)

LABELS = {
    "sim_batch4": "fcnseg sim (4 tiles per call, batch=4, as the host runs it; per tile)",
    "sim": "fcnseg sim (1 tile per call)",
    "finn": "finn-plus execute_onnx (as shipped)",
    "finn_nosanitize": "finn-plus execute_onnx, SANITIZE_QUANT_TENSORS=0",
    "ort_1t": "onnxruntime QCDQ, 1 thread",
    "ort_2t": "onnxruntime QCDQ, 2 threads",
    "brevitas": "Brevitas forward (torch, 1 thread)",
}


def photo_tile(tile: tuple[int, int], samples: Any) -> np.ndarray:
    """A ``(1, H, W, 3)`` uint8 crop of the sample photo (:func:`.inputs.photo`)."""
    image = inputs.photo(samples, max(tile[0], 512), max(tile[1], 512))
    return image[None, : tile[0], : tile[1]].copy()


def time_engine(
    package: Any, reps: int, reference: Callable[[], object] | None = None
) -> dict[str, dict[str, Any]]:
    """Timings per tile of the simulator on ``package``'s tile of random pixels (numpy only,
    thread clock): ``sim`` one tile per call, ``sim_batch4`` four tiles per call on a batch=4
    engine (per tile); with ``reference`` (4 tiles per call), ``reference`` timed in the same
    turns (per tile), so the others' ratios to it are per repetition."""
    from fcnseg.host.sim import SimEngine

    rng = np.random.default_rng(0)
    one = rng.integers(0, 256, (1, *package.tile, 3), dtype=np.uint8)
    four = rng.integers(0, 256, (4, *package.tile, 3), dtype=np.uint8)
    engine, engine4 = SimEngine(package), SimEngine(package, batch=4)
    fns: dict[str, Callable[[], object]] = {
        "sim": lambda: engine.run(one),
        "sim_batch4": lambda: engine4.run(four),
    }
    if reference is not None:
        fns["reference"] = reference
    times = interleaved(fns, reps)
    for key in ("sim_batch4", "reference"):
        if key in times:
            times[key] = scaled(times[key], 4)
    return times


class _Set:
    """Everything one run measures, gathered by the reference functions below."""

    def __init__(self, ctx: Context) -> None:
        from fcnseg.host.package import load_package
        from fcnseg.host.sim import SimEngine

        self.subject = default_subject(ctx)
        self.pkg = load_package(self.subject.package_dir)
        self.tile = self.pkg.tile
        self.engine = SimEngine(self.pkg)
        # The host's sim backend opens the engine with batch=4 and hands it 4 tiles per call.
        self.engine4 = SimEngine(self.pkg, batch=4)
        self.photo = photo_tile(self.tile, ctx.samples_dir)
        self.noise = np.random.default_rng(1).integers(0, 256, (1, *self.tile, 3), dtype=np.uint8)
        self.four = np.concatenate(
            [self.photo, self.noise, self.photo[:, ::-1], self.noise[:, :, ::-1]]
        )
        self.fns: dict[str, Callable[[], object]] = {
            "sim": lambda: self.engine.run(self.photo),
            "sim_batch4": lambda: self.engine4.run(self.four),
        }
        self.times: dict[str, dict[str, Any]] = {}
        self.checks: list[dict] = []
        self.notes: list[str] = []
        #: the sim (batch 4, per tile) timed in turns with finn-plus.
        self.finn_sim: dict[str, Any] | None = None

    def integer(self, logits_nchw: np.ndarray) -> np.ndarray:
        """Logits NCHW -> integer scores NHWC, ``rint((logits - bias) / scale)``."""
        scale = self.pkg.output_scale.reshape(1, -1, 1, 1)
        bias = self.pkg.output_bias.reshape(1, -1, 1, 1)
        q = np.rint((logits_nchw.astype(np.float64) - bias) / scale)
        return q.astype(np.int64).transpose(0, 2, 3, 1)


def _optional(what: str, measured: _Set, fn: Callable[[], None]) -> None:
    """Run one reference; a missing dependency or checkpoint becomes a note, not a failure."""
    from fcnseg.errors import UserError

    try:
        fn()
    except ModuleNotFoundError as error:
        measured.notes.append(f"{what} not measured: needs {error.name!r}, not installed here")
    except (Skipped, UserError) as reason:
        measured.notes.append(f"{what} not measured: {reason}")


def _brevitas(m: _Set) -> None:
    """Check against Brevitas in float64 (the exact reference), time it as users run it
    (float32), and note how often float32's rounding at exact ties changes a score."""
    import copy

    import torch

    net = m.subject.brevitas()
    exact = copy.deepcopy(net).double()

    def forward(x: np.ndarray, model: Any = net, dtype: Any = np.float32) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(dtype))).numpy()

    for label, x in (("photo", m.photo), ("random", m.noise)):
        ints, got = m.integer(forward(x, exact, np.float64)), m.engine.run(x)
        off = int((got != ints).sum()) if ints.shape == got.shape else -1
        m.checks.append(
            check(
                f"sim == Brevitas float64 integer scores ({label})",
                np.array_equal(got, ints),
                f"{off} differ",
            )
        )
    diff = m.integer(forward(m.photo)) != m.engine.run(m.photo)
    m.notes.append(
        f"Brevitas float32 forward (timed) vs sim on the photo tile: {int(diff.sum())} of "
        f"{diff.size} integer scores differ (float32 rounding where an accumulator lands "
        "exactly on a threshold; float64 is the exact reference and agrees)"
    )
    m.fns["brevitas"] = lambda: forward(m.photo)


def _ort(m: _Set) -> None:
    export = m.subject.export_dir
    if export is None or not (export / "model_qcdq.onnx").is_file():
        raise Skipped("no QCDQ export (model_qcdq.onnx) for the subject; pass --checkpoint FILE")
    import onnxruntime as ort

    x = m.photo.transpose(0, 3, 1, 2).astype(np.float32)
    for threads in (1, 2):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        # idle intra-op threads spinning would burn CPU charged to whatever is timed next
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(
            str(export / "model_qcdq.onnx"), opts, providers=["CPUExecutionProvider"]
        )
        name = sess.get_inputs()[0].name
        m.fns[f"ort_{threads}t"] = lambda sess=sess, name=name: sess.run(None, {name: x})
    diff = np.abs(m.integer(m.fns["ort_1t"]()[0]) - m.engine.run(m.photo))
    m.notes.append(
        f"onnxruntime (QCDQ) vs sim on the photo tile: {100 * float((diff > 0).mean()):.1f}% "
        f"of integer scores differ, max {int(diff.max())} LSB (a speed reference, not an oracle)"
    )


def _finn_execute(ctx: Context, package_dir: Any) -> tuple[Any, Callable[[np.ndarray], Any]]:
    """``(hw graph, run(x uint8 NHWC) -> int64 NHWC)`` with finn-plus ``execute_onnx``."""
    from fcnseg.hw.compat import prepare_finn

    prepare_finn(ctx.work_dir / "finn")
    from finn.core.onnx_exec import execute_onnx
    from qonnx.core.modelwrapper import ModelWrapper

    hw = ModelWrapper(str(package_dir / "hw_graph.onnx"))
    iname, oname = hw.graph.input[0].name, hw.graph.output[0].name
    nchw = list(hw.get_tensor_shape(iname))[1] == 3  # the HW graph may start in NHWC

    def execute(x: np.ndarray) -> np.ndarray:
        feed = {iname: (x.transpose(0, 3, 1, 2) if nchw else x).astype(np.float32)}
        return execute_onnx(hw, feed)[oname].astype(np.int64)

    return hw, execute


def _finn(ctx: Context, m: _Set) -> None:
    _, execute = _finn_execute(ctx, m.subject.package_dir)
    for label, x in (("photo", m.photo), ("random", m.noise)):
        ref, got = execute(x), m.engine.run(x)
        same = got.shape == ref.shape and np.array_equal(got, ref)
        m.checks.append(check(f"sim == finn execute_onnx ({label})", same, f"shape {got.shape}"))

    # finn-plus in turns with the simulator too, so each finn figure has a sim median measured
    # under the same load (finn runs take seconds; the machine's load changes meanwhile).
    old = os.environ.get("SANITIZE_QUANT_TENSORS")

    def finn(sanitize: bool) -> object:
        if sanitize:
            os.environ.pop("SANITIZE_QUANT_TENSORS", None)
        else:
            os.environ["SANITIZE_QUANT_TENSORS"] = "0"
        return execute(m.photo)

    try:
        group = interleaved(
            {
                "sim_batch4": lambda: m.engine4.run(m.four),
                "finn": lambda: finn(True),
                "finn_nosanitize": lambda: finn(False),
            },
            ctx.reps_for("slow"),
            warmup=False,
            clock="process",
        )
    finally:
        if old is None:
            os.environ.pop("SANITIZE_QUANT_TENSORS", None)
        else:
            os.environ["SANITIZE_QUANT_TENSORS"] = old
    m.finn_sim = scaled(group["sim_batch4"], 4)
    m.times["finn"], m.times["finn_nosanitize"] = group["finn"], group["finn_nosanitize"]


def _row(engine: str, tile: tuple[int, int], t: dict[str, Any], ref: dict[str, Any] | None) -> dict:
    """One table row: ``t``'s CPU and wall ms per tile and its per-repetition ratio to ``ref``
    (a side timed in the same turns)."""
    paired = paired_ratio(t, ref) if ref is not None else None
    return {
        "engine": engine,
        "tile": f"{tile[0]}x{tile[1]}",
        "cpu_ms": brief(t["cpu"], 1e3),
        "wall_ms": brief(t["wall"], 1e3),
        "ns_per_pixel": round(1e9 * t["cpu"]["median"] / (tile[0] * tile[1]), 1),
        "reps": t["reps"],
        "clock": t["clock"],
        "cpu_vs_sim": paired and paired["cpu"],
        "wall_vs_sim": paired and paired["wall"],
    }


def _other_tiles(ctx: Context, m: _Set) -> list[dict]:
    """Rows of the simulator at ``ctx.tiles`` (random weights, the subject's topology)."""
    from fcnseg.host.package import load_package
    from fcnseg.host.sim import SimEngine
    from fcnseg.quantize.config import ModelConfig

    config = m.pkg.card.model_config
    cfg = ModelConfig.from_dict(dict(config)) if config else tiny_config()
    rows = []
    for tile in ctx.tiles:
        start = time.perf_counter()
        built = built_subject(ctx, f"random weights {tile[0]}x{tile[1]}", cfg, tuple(tile))
        m.notes.append(
            f"{tile[0]}x{tile[1]} (random weights): exported and compiled here in "
            f"{time.perf_counter() - start:.0f} s"
        )
        package = load_package(built.package_dir)
        engine = SimEngine(package)
        # the subject's sim (batch 4) in the same turns: ratios across tiles per repetition
        times = time_engine(package, ctx.reps_for(), reference=m.fns["sim_batch4"])
        _, execute = _finn_execute(ctx, built.package_dir)
        x = np.random.default_rng(2).integers(0, 256, (1, *tile, 3), dtype=np.uint8)
        same = np.array_equal(engine.run(x), execute(x))
        m.checks.append(
            check(f"sim == finn execute_onnx (random weights, {tile[0]}x{tile[1]})", same)
        )
        for key in ("sim_batch4", "sim"):
            label = f"{LABELS[key]}, random weights"
            rows.append(_row(label, tuple(tile), times[key], times["reference"]))
    return rows


def run(ctx: Context) -> dict[str, Any]:
    try:
        import torch

        torch.set_num_threads(1)
    except ModuleNotFoundError:
        pass
    m = _Set(ctx)
    _optional("Brevitas", m, lambda: _brevitas(m))
    _optional("onnxruntime", m, lambda: _ort(m))
    m.times.update(interleaved(m.fns, ctx.reps_for(), clock={"ort_2t": "process"}))
    m.times["sim_batch4"] = scaled(m.times["sim_batch4"], 4)
    m.notes += off_thread_notes(m.times)
    _optional("finn-plus execute_onnx", m, lambda: _finn(ctx, m))
    sim = m.times["sim_batch4"]
    rows = [
        _row(LABELS[key], m.tile, m.times[key], m.finn_sim if "finn" in key else sim)
        for key in LABELS
        if key in m.times
    ]
    if ctx.tiles:
        _optional("the simulator at other tiles", m, lambda: rows.extend(_other_tiles(ctx, m)))
    return {
        "title": f"Simulator per {m.tile[0]}x{m.tile[1]} tile ({m.subject.source} FCN-8s)",
        "method": METHOD.format(
            reps=ctx.reps_for(), slow=ctx.reps_for("slow"), photo=inputs.describe(ctx.samples_dir)
        ),
        "rows": rows,
        "headline": _headlines(m),
        "checks": m.checks,
        "notes": m.notes,
    }


def _headlines(m: _Set) -> list[dict]:
    def paired(num: str, den: str, digits: int = 2) -> dict | None:
        times = {**m.times, "finn_sim": m.finn_sim} if m.finn_sim else m.times
        if num not in times or den not in times:
            return None
        return paired_ratio(times[num], times[den], digits)

    sim = m.times["sim_batch4"]
    return [
        ratio_headline(
            "sim speed-up vs finn-plus execute_onnx", paired("finn", "finn_sim", 1), "x", ">= 100"
        ),
        ratio_headline(
            "sim speed-up vs finn-plus, SANITIZE_QUANT_TENSORS=0",
            paired("finn_nosanitize", "finn_sim", 1),
            "x",
            ">= 20",
        ),
        ratio_headline(
            "sim time / onnxruntime time (1 thread)", paired("sim_batch4", "ort_1t"), "x", "<= 1.5"
        ),
        ratio_headline("sim speed-up vs Brevitas forward", paired("brevitas", "sim_batch4", 1)),
        ratio_headline(
            "sim 1 tile per call: time / onnxruntime time (1 thread)", paired("sim", "ort_1t")
        ),
        headline(
            "sim CPU ms per tile (4 tiles per call)", round(1e3 * sim["cpu"]["median"], 2), "ms"
        ),
    ]
