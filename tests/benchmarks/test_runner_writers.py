"""The runner's helpers and the writers (numpy only: runs in both environments)."""

from __future__ import annotations

import importlib.util
import json
import math
import stat
import sys
import types

import pytest

from fcnseg.benchmarks import BENCHMARKS
from fcnseg.benchmarks.runner import (
    Context,
    Skipped,
    check,
    headline,
    interleaved,
    machine_info,
    ratio,
    run_benchmarks,
    run_one,
    shipped_packages_dir,
    timed,
)
from fcnseg.benchmarks.writers import to_markdown, write_results
from fcnseg.errors import UserError


def test_timed_and_interleaved_count_calls():
    calls = {"a": 0, "b": 0}

    def bump(key):
        return lambda: calls.__setitem__(key, calls[key] + 1)

    t = timed(bump("a"), reps=3)
    assert t["reps"] == 3 and calls["a"] == 4  # warm-up + 3
    assert 0 <= t["min_s"] <= t["median_s"]
    assert t["wall"]["n"] == t["cpu"]["n"] == 3 and t["clock"] == "thread"
    both = interleaved({"a": bump("a"), "b": bump("b")}, reps=2, warmup=False)
    assert set(both) == {"a", "b"} and calls == {"a": 6, "b": 2}


def test_headline_goals_and_ratio():
    assert headline("x", 25.0, "x", ">= 20")["met"] is True
    assert headline("x", 19.9, "x", ">= 20")["met"] is False
    assert headline("x", 1.2, "x", "<= 1.5")["met"] is True
    assert headline("x", None, "x", ">= 20")["met"] is None
    assert headline("x", 3.0, "x")["met"] is None
    assert ratio(6.0, 2.0) == 3.0 and ratio(1.0, 0.0) is None and ratio(None, 1.0) is None


def test_ratio_headline_is_judged_on_cpu_and_keeps_both_spreads():
    from fcnseg.benchmarks.runner import ratio_headline
    from fcnseg.benchmarks.timing import paired_ratio, side

    fast = side([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], "thread")
    slow = side([30.0, 10.0, 40.0], [25.0, 24.0, 26.0], [25.0, 24.0, 26.0], "thread")
    h = ratio_headline("speed-up", paired_ratio(slow, fast), "x", ">= 20")
    assert h["value"] == 25.0 and h["met"] is True  # CPU median; wall median would be 30
    assert h["wall"]["median"] == 30.0 and (h["wall"]["min"], h["wall"]["max"]) == (10.0, 40.0)
    assert h["cpu"]["n"] == h["reps"] == 3 and h["clock"] == "thread"
    assert ratio_headline("none", None)["value"] is None


def test_machine_info_has_cores_cpu_versions():
    info = machine_info()
    assert info["cores"] >= 1 and info["cpu_model"]
    assert info["versions"]["numpy"]
    assert {"torch", "brevitas", "finn-plus", "onnxruntime"} <= set(info["versions"])


def _fake(monkeypatch, name, fn):
    module = types.ModuleType(name)
    module.run = fn
    monkeypatch.setitem(sys.modules, name, module)
    return f"{name}:run"


def test_run_one_statuses(monkeypatch):
    ctx = Context(reps=1, quick=True, log=lambda m: None)

    def missing(ctx):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    def skipped(ctx):
        raise Skipped("no package")

    def broken(ctx):
        raise ValueError("bug")

    def failing(ctx):
        return {"title": "t", "rows": [], "checks": [check("exact", False)]}

    def fine(ctx):
        return {"title": "t", "rows": [{"a": 1}], "checks": [check("exact", True)]}

    r = run_one("m", _fake(monkeypatch, "fake_missing", missing), ctx)
    assert r["status"] == "skipped" and "torch" in r["reason"]
    assert run_one("s", _fake(monkeypatch, "fake_skip", skipped), ctx)["reason"] == "no package"
    r = run_one("b", _fake(monkeypatch, "fake_broken", broken), ctx)
    assert r["status"] == "error" and "ValueError: bug" in r["reason"]
    r = run_one("f", _fake(monkeypatch, "fake_failing", failing), ctx)
    assert r["status"] == "failed" and "exact" in r["reason"]
    assert run_one("o", _fake(monkeypatch, "fake_fine", fine), ctx)["status"] == "ok"


def test_unknown_benchmark_is_a_user_error():
    with pytest.raises(UserError, match="nope"):
        run_benchmarks(["nope"], Context(quick=True, log=lambda m: None))
    assert list(BENCHMARKS)[0] == "simulator"
    # every registered benchmark names a module that exists (imported only when it runs)
    for name, target in BENCHMARKS.items():
        module, _, function = target.partition(":")
        assert function == "run" and importlib.util.find_spec(module) is not None, name


SPREAD = {"median": 2.5, "min": 2.0, "max": 3.25, "q1": 2.25, "q3": 3.0, "n": 5}


def _document():
    return {
        "format": "fcnseg-bench/2",
        "machine": machine_info(),
        "options": {"reps": 1, "quick": True, "backend": "sim"},
        "subject": None,
        "seconds": 1.0,
        "benchmarks": {
            "postprocess": {
                "status": "ok",
                "title": "Post | processing",
                "method": "median",
                "rows": [
                    {"size": "64x64", "ms": 1.5, "peak_MB": None, "cpu_vs_x": SPREAD},
                    {"size": "1x1", "x": 2, "cpu_vs_x": {**SPREAD, "n": 1}},
                ],
                "headline": [
                    headline("fcnseg vs naive", 30.0, "x", ">= 20"),
                    headline(
                        "spread one",
                        2.5,
                        "x",
                        spread={"cpu": SPREAD, "wall": SPREAD, "reps": 5, "clock": "thread"},
                    ),
                ],
                "checks": [check("labels identical", True)],
                "notes": ["a note"],
                "seconds": 0.1,
                "nan": math.nan,
            },
            "accuracy": {"status": "skipped", "reason": "needs 'torch'", "seconds": 0.0},
        },
    }


def test_writers_produce_json_and_markdown(tmp_path):
    json_path, md_path = write_results(_document(), tmp_path / "out")
    data = json.loads(json_path.read_text())
    assert data["benchmarks"]["postprocess"]["nan"] is None  # NaN is not JSON
    assert data["benchmarks"]["accuracy"]["status"] == "skipped"
    for path in (json_path, md_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    md = md_path.read_text()
    assert md.startswith("# fcnseg benchmark results")
    assert "| postprocess | fcnseg vs naive | 30 x | goal >= 20x: met |  |" in md
    spread_cell = "CPU 2.5 [2–3.25]; wall 2.5 [2–3.25] (5 reps, thread clock)"
    assert f"| postprocess | spread one | 2.5 x |  | {spread_cell} |" in md
    assert "| accuracy | skipped: needs 'torch' | | | |" in md
    assert "| size | ms | peak_MB | cpu_vs_x | x |" in md
    assert "| 64x64 | 1.5 | – | 2.5 [2–3.25] | – |" in md
    assert "| 1x1 | – | – | 2.5 | 2 |" in md  # one repetition: just the median
    assert "Post \\| processing" in md or "Post | processing" in md
    assert "- PASS: labels identical" in md and "- a note" in md
    # every table row has as many cells as its header
    for block in md.split("\n\n"):
        lines = [line for line in block.splitlines() if line.startswith("|")]
        if lines:
            assert len({line.replace("\\|", "").count("|") for line in lines}) == 1


def test_markdown_of_a_real_document_is_stable():
    assert to_markdown(_document()) == to_markdown(_document())


def test_time_engine_times_the_simulator_per_tile():
    """The numpy-only timing the simulator benchmark (and a board) uses, on the shipped package."""
    from fcnseg.benchmarks.simulator import time_engine
    from fcnseg.host.package import load_package

    package = load_package(shipped_packages_dir() / "fcn8s-pynq-z2")
    res = time_engine(package, reps=1)
    assert set(res) == {"sim", "sim_batch4"}
    for t in res.values():
        assert t["reps"] == 1 and 0 < t["min_s"] <= t["median_s"] < 10
        assert t["cpu"]["median"] > 0 and t["clock"] == "thread"
    ref = time_engine(package, reps=2, reference=lambda: None)["reference"]
    assert ref["reps"] == 2
