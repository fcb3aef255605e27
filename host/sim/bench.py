"""Speed of the simulator per tile, against finn-plus execute_onnx and onnxruntime (QCDQ).

``python -m fcnseg.host.sim.bench [--tile 256 256] [--tile 224 224] [--config CFG.json]`` builds
the default FCN-8s topology (``quantize/configs/default-fcn8s.json``, random weights: speed does
not depend on them), exports it (QONNX + QCDQ), converts it to HW layers with the hw flow's steps,
writes a package, and times per tile:

- ``sim``: :class:`SimEngine` on one tile, and per tile in a batch of 4;
- ``finn``: finn-plus ``execute_onnx`` on the HW graph, as users run it and with
  ``SANITIZE_QUANT_TENSORS=0``;
- ``ort``: onnxruntime on the QCDQ export (a speed reference; it is not bit-exact on FCN-8s).

It prints one JSON object (seconds per tile and ratios) — the lead wires it into ``fcnseg bench``.
The sim half (:func:`time_engine`) is numpy-only; everything else imports torch/finn inside.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fcnseg.host.package import load_package
from fcnseg.host.sim.engine import SimEngine


def best_time(fn: Callable[[], object], reps: int, budget_s: float = 20.0) -> float:
    """Best wall time of ``fn`` over up to ``reps`` runs (stops early past ``budget_s``)."""
    fn()  # warm-up (first-call allocations, lazy imports)
    best = float("inf")
    start = time.perf_counter()
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        if time.perf_counter() - start > budget_s:
            break
    return best


def interleaved_best(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Best wall time of each function, run in turns so they share the same machine load."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def time_engine(engine: SimEngine, tile: tuple[int, int], reps: int = 10) -> dict[str, float]:
    """Seconds per tile of ``engine`` for one tile and for a batch of 4 tiles."""
    rng = np.random.default_rng(0)
    one = rng.integers(0, 256, size=(1, *tile, 3), dtype=np.uint8)
    four = rng.integers(0, 256, size=(4, *tile, 3), dtype=np.uint8)
    return {
        "sim_s": best_time(lambda: engine.run(one), reps),
        "sim_batch4_s_per_tile": best_time(lambda: engine.run(four), max(1, reps // 4)) / 4,
    }


def default_net(config: Path | None):
    """The default model topology (a training config's ``model``) with random weights."""
    import torch

    from fcnseg.quantize.models import ModelConfig, build_model

    path = config or Path(__file__).resolve().parents[2] / "quantize/configs/default-fcn8s.json"
    cfg = ModelConfig.from_dict(json.loads(Path(path).read_text())["model"])
    torch.manual_seed(0)
    net = build_model(cfg)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval(), cfg


def build_hw(net: Any, tile: tuple[int, int], out: Path) -> tuple[Any, Path]:
    """Export ``net`` at ``tile``, convert it with the hw flow's steps, write a package."""
    import torch
    from brevitas.export import export_qonnx
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    from fcnseg.hw.compat import prepare_finn
    from fcnseg.hw.steps import convert, streamline, tail
    from fcnseg.hw.to_package import build_package

    prepare_finn(out / "finn_build")
    from finn.builder.build_dataflow_config import DataflowBuildConfig
    from finn.builder.build_dataflow_steps import step_qonnx_to_finn, step_tidy_up

    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.onnx"
    export_qonnx(net, torch.zeros(1, 3, *tile), export_path=str(path), dynamo=False)
    model = ModelWrapper(str(path))
    model.set_tensor_datatype(model.graph.input[0].name, DataType["UINT8"])
    cfg = DataflowBuildConfig(
        output_dir=str(out / "build"), synth_clk_period_ns=10.0, generate_outputs=[]
    )
    model = step_tidy_up(step_qonnx_to_finn(model, cfg), cfg)
    model = streamline.step_fcn_streamline(model, cfg)
    model, affine = tail.cut_float_tail(model)
    model = model.transform(InferShapes()).transform(InferDataTypes())
    model = convert.step_fcn_convert_to_hw(model, cfg)
    nc = len(affine["scale"])
    card = {
        "name": "bench",
        "classes": [f"c{i}" for i in range(nc)],
        "palette": [[i, i, i] for i in range(nc)],
        "output_stride": 8,
    }
    pkg = build_package(
        model,
        out / "package",
        model_card=card,
        output_scale=affine["scale"],
        output_bias=affine["bias"],
    )
    return model, pkg


def bench_tile(net: Any, tile: tuple[int, int], out: Path, reps: int = 10) -> dict[str, Any]:
    """All timings for one tile size (see module docstring)."""
    import onnxruntime as ort
    import torch
    from brevitas.export import export_onnx_qcdq
    from finn.core.onnx_exec import execute_onnx

    t0 = time.perf_counter()
    hw, pkg_path = build_hw(net, tile, out)
    build_s = time.perf_counter() - t0
    engine = SimEngine(load_package(pkg_path))
    res: dict[str, Any] = {}
    res.update(time_engine(engine, tile, reps))

    x = np.random.default_rng(1).integers(0, 256, size=(1, *tile, 3), dtype=np.uint8)
    iname, oname = hw.graph.input[0].name, hw.graph.output[0].name
    feed = {iname: x.transpose(0, 3, 1, 2).astype(np.float32)}
    ref = execute_onnx(hw, feed)[oname]
    assert np.array_equal(engine.run(x), ref.astype(np.int64)), "sim != finn"
    old = os.environ.get("SANITIZE_QUANT_TENSORS")
    try:
        os.environ.pop("SANITIZE_QUANT_TENSORS", None)
        res["finn_s"] = best_time(lambda: execute_onnx(hw, feed), 3, budget_s=30.0)
        os.environ["SANITIZE_QUANT_TENSORS"] = "0"
        res["finn_nosanitize_s"] = best_time(lambda: execute_onnx(hw, feed), 3, budget_s=30.0)
    finally:
        if old is None:
            os.environ.pop("SANITIZE_QUANT_TENSORS", None)
        else:
            os.environ["SANITIZE_QUANT_TENSORS"] = old

    qcdq = out / "model_qcdq.onnx"
    export_onnx_qcdq(net, torch.zeros(1, 3, *tile), export_path=str(qcdq), dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(os.environ.get("FCNSEG_BENCH_THREADS", "2"))
    sess = ort.InferenceSession(str(qcdq), opts, providers=["CPUExecutionProvider"])
    ort_feed = {sess.get_inputs()[0].name: feed[iname]}
    one = np.random.default_rng(2).integers(0, 256, size=(1, *tile, 3), dtype=np.uint8)
    pair = interleaved_best(
        {"sim": lambda: engine.run(one), "ort": lambda: sess.run(None, ort_feed)}, reps
    )
    res["ort_s"] = pair["ort"]
    res["sim_s"] = min(res["sim_s"], pair["sim"])

    ms = {k[:-2] + "_ms": round(v * 1000, 2) for k, v in res.items() if k.endswith("_s")}
    ms["sim_batch4_ms_per_tile"] = round(res.pop("sim_batch4_s_per_tile") * 1000, 2)
    sim = res["sim_s"]
    return {
        "tile": list(tile),
        "build_s": round(build_s, 1),
        **{k: v for k, v in ms.items() if k != "build_ms"},
        "speedup_vs_finn": round(res["finn_s"] / sim, 1),
        "speedup_vs_finn_nosanitize": round(res["finn_nosanitize_s"] / sim, 1),
        "sim_over_ort": round(sim / res["ort_s"], 2),
        "sim_batch4_over_ort": round(ms["sim_batch4_ms_per_tile"] / ms["ort_ms"], 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tile", nargs=2, type=int, action="append", metavar=("H", "W"))
    ap.add_argument("--config", type=Path, default=None, help="training config JSON (model)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("-o", "--output", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    tiles = [tuple(t) for t in (args.tile or [(256, 256), (224, 224)])]
    net, cfg = default_net(args.config)
    report: dict[str, Any] = {"model": cfg.to_dict(), "tiles": []}
    with tempfile.TemporaryDirectory(prefix="fcnseg-bench-") as tmp:
        for tile in tiles:
            report["tiles"].append(
                bench_tile(net, tile, Path(tmp) / f"{tile[0]}x{tile[1]}", args.reps)
            )
    text = json.dumps(report, indent=1)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
