"""Benchmark 1: the simulator per tile vs finn-plus ``execute_onnx``, onnxruntime and Brevitas.

Same tile, same subject (:mod:`.subjects`), one process:

- ``sim``: :class:`~fcnseg.host.sim.SimEngine` on the package, one tile per call (1 BLAS thread,
  its default), and per tile in a batch of 4;
- ``finn``: finn-plus ``execute_onnx`` on the package's ``hw_graph.onnx`` (the HW-layer graph
  the package was made from), as shipped and with ``SANITIZE_QUANT_TENSORS=0``; few repetitions;
- ``ort``: onnxruntime on the QCDQ export, 1 intra-op thread (as the simulator) and 2 threads; a
  speed reference only: it is not bit-exact on FCN-8s skip variants (its mismatches are reported);
- ``brevitas``: the Brevitas module's forward (torch, 1 thread).

Checks on the same inputs (a real photo crop and random pixels): sim == finn (integers), and
sim == Brevitas's integer scores ``rint((logits - bias) / scale)``. The graph building is the
hw flow's (:mod:`.subjects`; ``fcnseg.host.sim.bench`` builds the same way for its script).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from fcnseg.benchmarks.runner import Context, Skipped, check, headline, interleaved, ratio
from fcnseg.benchmarks.subjects import default_subject

METHOD = (
    "Median seconds per tile. The sim reference is the engine as `fcnseg segment` runs it (the "
    "sim backend's batch=4, 4 tiles per call); one tile per call is shown too. "
    "Sim, onnxruntime and Brevitas timed in turns ({reps} reps after a "
    "warm-up); finn-plus execute_onnx (both settings) in turns with the sim ({slow} reps), its "
    "ratios against that group's sim median. All single-threaded except 'ort 2 threads'. "
    "Inputs: a crop of samples/astronaut.jpg and uniform random pixels."
)


def photo_tile(tile: tuple[int, int], samples: Any) -> np.ndarray:
    """A ``(1, H, W, 3)`` uint8 crop of the astronaut photo (random pixels if it is missing)."""
    from PIL import Image

    path = samples / "astronaut.jpg"
    if not path.is_file():
        return np.random.default_rng(3).integers(0, 256, (1, *tile, 3), dtype=np.uint8)
    image = Image.open(path).convert("RGB").resize((max(tile[1], 512), max(tile[0], 512)))
    return np.asarray(image)[None, : tile[0], : tile[1]].copy()


def run(ctx: Context) -> dict[str, Any]:
    import torch

    from fcnseg.host.package import load_package
    from fcnseg.host.sim import SimEngine
    from fcnseg.hw.compat import prepare_finn

    prepare_finn(ctx.work_dir / "finn")
    from finn.core.onnx_exec import execute_onnx
    from qonnx.core.modelwrapper import ModelWrapper

    torch.set_num_threads(1)
    subject = default_subject(ctx)
    pkg = load_package(subject.package_dir)
    tile = pkg.tile
    engine = SimEngine(pkg)
    scale, bias = pkg.output_scale, pkg.output_bias
    photo = photo_tile(tile, ctx.samples_dir)
    noise = np.random.default_rng(1).integers(0, 256, (1, *tile, 3), dtype=np.uint8)
    four = np.concatenate([photo, noise, photo[:, ::-1], noise[:, :, ::-1]])

    hw = ModelWrapper(str(subject.package_dir / "hw_graph.onnx"))
    iname, oname = hw.graph.input[0].name, hw.graph.output[0].name

    nchw = list(hw.get_tensor_shape(iname))[1] == 3  # the HW graph may start in NHWC

    def feed(x: np.ndarray) -> dict[str, np.ndarray]:
        return {iname: (x.transpose(0, 3, 1, 2) if nchw else x).astype(np.float32)}

    checks = []
    for label, x in (("photo", photo), ("random", noise)):
        ref = execute_onnx(hw, feed(x))[oname]
        got = engine.run(x)
        same = got.shape == ref.shape and np.array_equal(got, ref.astype(np.int64))
        checks.append(check(f"sim == finn execute_onnx ({label})", same, f"shape {got.shape}"))

    notes = []
    try:
        net = subject.brevitas()
    except Skipped as reason:
        net = None
        notes.append(f"Brevitas not measured: {reason}")

    def brevitas(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))).numpy()

    for label, x in (("photo", photo), ("random", noise)) if net is not None else ():
        logits = brevitas(x).astype(np.float64)
        q = np.rint((logits - bias.reshape(1, -1, 1, 1)) / scale.reshape(1, -1, 1, 1))
        ints = q.astype(np.int64).transpose(0, 2, 3, 1)
        got = engine.run(x)
        same = np.array_equal(got, ints)
        off = int((got != ints).sum()) if ints.shape == got.shape else -1
        checks.append(check(f"sim == Brevitas integer scores ({label})", same, f"{off} differ"))

    times: dict[str, dict[str, float]] = {}
    sessions: dict[str, Any] = {}
    if subject.export_dir is not None and (subject.export_dir / "model_qcdq.onnx").is_file():
        import onnxruntime as ort

        for threads in (1, 2):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            sessions[f"ort_{threads}t"] = ort.InferenceSession(
                str(subject.export_dir / "model_qcdq.onnx"),
                opts,
                providers=["CPUExecutionProvider"],
            )
    ort_in = photo.transpose(0, 3, 1, 2).astype(np.float32)
    # The host's sim backend opens the engine with batch=4 and hands it 4 tiles per call.
    engine4 = SimEngine(pkg, batch=4)
    fns = {
        "sim": lambda: engine.run(photo),
        "sim_batch4": lambda: engine4.run(four),
    }
    if net is not None:
        fns["brevitas"] = lambda: brevitas(photo)
    for key, sess in sessions.items():
        name = sess.get_inputs()[0].name
        fns[key] = lambda sess=sess, name=name: sess.run(None, {name: ort_in})
    times.update(interleaved(fns, ctx.reps_for()))
    times["sim_batch4"] = {k: v / 4 if k != "reps" else v for k, v in times["sim_batch4"].items()}

    # finn-plus in turns with the simulator too, so each finn figure has a sim median measured
    # under the same load (finn runs take seconds; the machine's load changes meanwhile).
    slow = ctx.reps_for("slow")
    old = os.environ.get("SANITIZE_QUANT_TENSORS")

    def finn(sanitize: bool) -> object:
        if sanitize:
            os.environ.pop("SANITIZE_QUANT_TENSORS", None)
        else:
            os.environ["SANITIZE_QUANT_TENSORS"] = "0"
        return execute_onnx(hw, feed(photo))

    try:
        group = interleaved(
            {
                "sim_batch4": lambda: engine4.run(four),
                "finn": lambda: finn(True),
                "finn_nosanitize": lambda: finn(False),
            },
            slow,
            warmup=False,
        )
    finally:
        if old is None:
            os.environ.pop("SANITIZE_QUANT_TENSORS", None)
        else:
            os.environ["SANITIZE_QUANT_TENSORS"] = old
    finn_sim = group["sim_batch4"]["median_s"] / 4
    times["finn"], times["finn_nosanitize"] = group["finn"], group["finn_nosanitize"]

    if "ort_1t" in sessions:
        sess = sessions["ort_1t"]
        out = sess.run(None, {sess.get_inputs()[0].name: ort_in})[0].astype(np.float64)
        q = np.rint((out - bias.reshape(1, -1, 1, 1)) / scale.reshape(1, -1, 1, 1))
        diff = np.abs(q.transpose(0, 2, 3, 1) - engine.run(photo))
        notes.append(
            f"onnxruntime (QCDQ) vs sim on the photo tile: {100 * float((diff > 0).mean()):.1f}% "
            f"of integer scores differ, max {int(diff.max())} LSB (a speed reference, not an "
            "oracle)"
        )
    else:
        notes.append("onnxruntime not measured: no QCDQ export (model_qcdq.onnx) for the subject")

    sim = times["sim_batch4"]["median_s"]
    labels = {
        "sim_batch4": "fcnseg sim (4 tiles per call, batch=4, as the host runs it; per tile)",
        "sim": "fcnseg sim (1 tile per call)",
        "finn": "finn-plus execute_onnx (as shipped)",
        "finn_nosanitize": "finn-plus execute_onnx, SANITIZE_QUANT_TENSORS=0",
        "ort_1t": "onnxruntime QCDQ, 1 thread",
        "ort_2t": "onnxruntime QCDQ, 2 threads",
        "brevitas": "Brevitas forward (torch, 1 thread)",
    }
    rows = [
        {
            "engine": labels[key],
            "ms_per_tile": round(1e3 * times[key]["median_s"], 2),
            "min_ms": round(1e3 * times[key]["min_s"], 2),
            "reps": times[key]["reps"],
            "time_vs_sim": ratio(times[key]["median_s"], finn_sim if "finn" in key else sim),
        }
        for key in labels
        if key in times
    ]
    ort1 = times.get("ort_1t", {}).get("median_s")
    return {
        "title": f"Simulator per {tile[0]}x{tile[1]} tile ({subject.source} FCN-8s)",
        "method": METHOD.format(reps=ctx.reps_for(), slow=slow),
        "rows": rows,
        "headline": [
            headline(
                "sim speed-up vs finn-plus execute_onnx",
                ratio(times["finn"]["median_s"], finn_sim, 1),
                "x",
                ">= 100",
            ),
            headline(
                "sim speed-up vs finn-plus, SANITIZE_QUANT_TENSORS=0",
                ratio(times["finn_nosanitize"]["median_s"], finn_sim, 1),
                "x",
                ">= 20",
            ),
            headline("sim time / onnxruntime time (1 thread)", ratio(sim, ort1), "x", "<= 1.5"),
            headline(
                "sim speed-up vs Brevitas forward",
                ratio(times.get("brevitas", {}).get("median_s"), sim, 1),
                "x",
            ),
            headline(
                "sim 1 tile per call: time / onnxruntime time (1 thread)",
                ratio(times["sim"]["median_s"], ort1),
                "x",
            ),
        ],
        "checks": checks,
        "notes": notes,
    }
