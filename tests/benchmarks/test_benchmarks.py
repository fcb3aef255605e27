"""Every benchmark in --quick mode on tiny inputs: well-formed figures, exactness checks pass.

Behaviour, never time: the figures' values are whatever this machine gives; what is asserted is
their shape, that the exactness checks ran and passed, and that labels agree where promised.
"""

from __future__ import annotations

import dataclasses
import numbers
from pathlib import Path

import numpy as np
import pytest

from fcnseg.benchmarks import BENCHMARKS
from fcnseg.benchmarks.runner import run_one


def _well_formed(result: dict) -> None:
    assert result["status"] == "ok", result.get("reason") or result.get("traceback")
    assert result["title"] and result["rows"]
    keys = set(result["rows"][0])
    assert all(set(row) == keys for row in result["rows"])
    for h in result["headline"]:
        assert set(h) in (BASIC, BASIC | {"cpu", "wall", "reps", "clock"})
        assert h["value"] is None or isinstance(h["value"], numbers.Real)
        if "cpu" in h:
            _spread(h["cpu"])
            _spread(h["wall"])
            assert h["cpu"]["n"] == h["reps"] and h["clock"] in ("thread", "process")
    for row in result["rows"]:
        for key, value in row.items():
            if key.startswith(("cpu_", "wall_")) and value is not None:
                _spread(value)
    for c in result["checks"]:
        assert c["passed"], c


BASIC = {"figure", "value", "unit", "goal", "met"}


def _spread(value: dict) -> None:
    """A spread cell: median within [min, max], quartiles within too, a count."""
    assert set(value) == {"median", "min", "max", "q1", "q3", "n"}, value
    assert value["min"] <= value["q1"] <= value["median"] <= value["q3"] <= value["max"]
    assert value["n"] >= 1


def _run(name: str, ctx) -> dict:
    result = run_one(name, BENCHMARKS[name], ctx)
    _well_formed(result)
    return result


def test_postprocess_labels_identical(quick_ctx):
    result = _run("postprocess", quick_ctx)
    names = [c["name"] for c in result["checks"]]
    assert any("== naive at" in n for n in names) and any("strips" in n for n in names)
    assert {r["method"] for r in result["rows"]} >= {"fcnseg", "naive", "naive, 64-row strips"}
    assert all(r["peak_MB"] is None or r["peak_MB"] >= 0 for r in result["rows"])
    assert result["headline"][0]["goal"] == ">= 20"


def test_synthetic_scores_are_integer_maps_at_stride_8():
    from fcnseg.benchmarks.postprocess import synthetic_scores

    scores, scale, bias = synthetic_scores(100, 70)
    assert scores.shape == (128 // 8, 96 // 8, 21) and scores.dtype == np.int64
    assert scale.shape == bias.shape == (21,) and (scale > 0).all()
    again, _, _ = synthetic_scores(100, 70)
    assert np.array_equal(scores, again)


def test_simulator_is_bit_exact_and_reports_ratios(quick_ctx):
    pytest.importorskip("torch")
    pytest.importorskip("finn")
    result = _run("simulator", quick_ctx)
    names = " ".join(c["name"] for c in result["checks"])
    assert "sim == finn execute_onnx" in names and "sim == Brevitas" in names
    engines = {r["engine"] for r in result["rows"]}
    assert any("SANITIZE_QUANT_TENSORS=0" in e for e in engines)
    assert any("onnxruntime" in e for e in engines)
    goals = {h["goal"] for h in result["headline"]}
    assert {">= 100", ">= 20", "<= 1.5"} <= goals


def test_simulator_at_another_tile_is_timed_and_exact(quick_ctx):
    """``--tile 96 96``: the subject's topology, random weights, built at that tile (what the old
    host/sim/bench.py script measured), checked against finn-plus and timed per pixel."""
    pytest.importorskip("torch")
    pytest.importorskip("finn")
    result = _run("simulator", dataclasses.replace(quick_ctx, tiles=((96, 96),)))
    extra = [row for row in result["rows"] if row["tile"] == "96x96"]
    assert len(extra) == 2 and all("random weights" in row["engine"] for row in extra)
    assert all(row["ns_per_pixel"] > 0 and row["cpu_vs_sim"]["median"] > 0 for row in extra)
    names = [c["name"] for c in result["checks"]]
    assert "sim == finn execute_onnx (random weights, 96x96)" in names


def test_seed_claim_conversion_is_exact(quick_ctx):
    pytest.importorskip("torch")
    result = _run("seed_claim", quick_ctx)
    assert len(result["rows"]) == 2 and result["checks"][0]["passed"]
    assert all(r["cpu_speedup"]["median"] > 0 for r in result["rows"])
    assert all(r["wall_speedup"]["median"] > 0 for r in result["rows"])


def test_seed_claim_crops():
    from fcnseg.benchmarks.seed_claim import crop_positions

    crops = crop_positions()
    assert len(crops) == 36 and crops[-1] == (160, 160)


def test_tiling(quick_ctx):
    pytest.importorskip("torch")
    result = _run("tiling", quick_ctx)
    settings = [r["setting"] for r in result["rows"]]
    assert "shift-and-stitch 2" in settings and "shift-and-stitch 4" in settings
    first = result["rows"][0]
    assert first["labels_equal_to_default"] == "100.00%"
    assert first["cpu_vs_default"]["median"] == first["wall_vs_default"]["median"] == 1.0
    # every setting timed the same number of times, in turns (shift-and-stitch 4 included)
    assert {r["reps"] for r in result["rows"]} == {quick_ctx.reps_for()}
    strides = {r["setting"]: r["stride_px"] for r in result["rows"]}
    assert strides["shift-and-stitch 4"] * 4 == first["stride_px"]


def test_end_to_end(quick_ctx):
    pytest.importorskip("torch")
    result = _run("end_to_end", quick_ctx)
    assert result["rows"][1]["wall_speed_vs_serial"]["median"] == 1.0
    assert all(r["images_per_s"] > 0 for r in result["rows"])
    assert result["pipeline_report"]["images"] == 2


def test_estimates(quick_ctx):
    pytest.importorskip("torch")
    result = _run("estimates", quick_ctx)
    row = result["rows"][0]
    assert row["board"] == "pynq-z2" and row["est_tile_fps"] > 0
    assert row["tiles_per_512x1024"] >= 1 and 0 <= row["LUT_%"]
    assert "ESTIMATES" in result["title"]


def test_frame_rates_follow_the_tiling_plan_and_the_latency_model(quick_ctx):
    """Each row of the shipped packages' table re-derived by hand: the tile count from the
    tiling plan, the steady rate from finn's tiles/s, the in-flight rate from the closed form of
    C calls of B tiles in flight (the pynq backend's default): one call per
    max(B II, (L + (B - 1) II) / C), with finn's latency and with the row model's."""
    from fcnseg.benchmarks.frame_rates import FRAMES
    from fcnseg.host.package import load_package
    from fcnseg.host.tiling import plan_tiles
    from fcnseg.hw.info import package_fabric, pynq_host
    from fcnseg.hw.latency import package_streaming

    shipped = Path(__file__).resolve().parents[2] / "host" / "packages"
    ctx = dataclasses.replace(quick_ctx, packages_dir=shipped, cache={})
    result = _run("frame_rates", ctx)
    names = sorted(p.parent.name for p in shipped.glob("fcn8s-*/accelerator.json"))
    rows = [r for r in result["rows"] if r["package"].startswith("shipped ")]
    assert sorted({r["package"].removeprefix("shipped ") for r in rows}) == names  # no classifier
    assert len(rows) == len(names) * len(FRAMES)
    for row in rows:
        package = load_package(shipped / row["package"].removeprefix("shipped "))
        frame = tuple(int(v) for v in row["frame"].split("x"))
        g = package.geometry
        tiles = len(plan_tiles(g, g.canvas_shape(*frame)).tiles)
        assert row["tiles_per_frame"] == tiles and row["board"] == package.board
        fabric = package_fabric(package)
        ii = fabric.interval_s
        assert row["steady_fps"] == pytest.approx(1 / ii / tiles, abs=0.006)
        host = pynq_host(package.meta["io"])
        b, c = host.tiles_per_call, host.calls
        assert row["in_flight"] == b * c
        streamed = package_streaming(package).latency_cycles / fabric.clock_hz
        for latency_s, key in (
            (fabric.latency_s, "in_flight_fps"),
            (streamed, "in_flight_fps_streaming"),
        ):
            rate = b / max(b * ii, (latency_s + (b - 1) * ii) / c)
            assert row[key] == pytest.approx(rate / tiles, abs=0.006)
        assert row["one_frame_fps"] <= row["in_flight_fps"] + 0.006 <= row["steady_fps"] + 0.012
        assert row["in_flight_fps"] <= row["in_flight_fps_streaming"] + 0.006
    assert {h["unit"] for h in result["headline"]} == {"frames/s"}


def test_accuracy(quick_ctx, tiny_checkpoint):
    result = _run("accuracy", dataclasses.replace(quick_ctx, checkpoint=tiny_checkpoint))
    models = [r["model"] for r in result["rows"]]
    assert models[:2] == ["float", "4-bit (Brevitas)"]
    assert all(0 <= r["mIoU_%"] <= 100 for r in result["rows"])


def test_cli_quick_only_postprocess(tmp_path):
    import json

    from fcnseg.cli import main

    assert main(["bench", "--quick", "--only", "postprocess", "-o", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert list(data["benchmarks"]) == ["postprocess"]
    assert (tmp_path / "RESULTS.md").read_text().startswith("# fcnseg benchmark results")
    assert main(["bench", "--only", "nope", "-o", str(tmp_path)]) == 2
