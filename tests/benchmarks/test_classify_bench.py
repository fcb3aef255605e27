"""``benchmarks/classify*.py`` on the shipped classifier package: the result schema of its three
benchmarks, the 36-crop check, finn's timing arithmetic, the accuracy table on a few held-out
scenes, the recorded-accuracy check (passing and failing), and the interval helpers against
values worked out by hand. Behaviour, never time."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fcnseg.benchmarks import classify as bench
from fcnseg.benchmarks import classify_accuracy as acc
from fcnseg.benchmarks.runner import Context, run_one

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ROOT / "host" / "packages"
CHECKPOINT = ROOT / "models" / "classifier" / "checkpoint.safetensors"
SPREAD = {"median", "min", "max", "q1", "q3", "n"}
VARIANTS = ["native", "centre crop", "enlarged, mean", "enlarged, max", "multi-scale", "stride 16"]

pytestmark = pytest.mark.skipif(
    not (PACKAGES / bench.PACKAGE_NAME / "accelerator.json").is_file(),
    reason="no shipped classifier package",
)


def quick(tmp_path: Path, **changes) -> Context:
    options = dict(reps=1, quick=True, work_dir=tmp_path, packages_dir=PACKAGES,
                   samples_dir=ROOT / "samples", log=lambda msg: None)  # fmt: skip
    options.update(changes)
    return Context(**options)


def test_wilson_matches_the_formula_worked_by_hand() -> None:
    low, high = acc.wilson(5, 10)
    # p = 1/2, n = 10, z^2 = 3.8415: centre 1/2, half = z sqrt(1/40 + z^2/400) / (1 + z^2/10)
    z = acc.Z95
    half = z * math.sqrt(0.025 + z * z / 400) / (1 + z * z / 10)
    assert low == pytest.approx(0.5 - half) and high == pytest.approx(0.5 + half)
    assert low == pytest.approx(0.2366, abs=1e-4)
    assert acc.wilson(0, 20)[0] == 0.0 and 0 < acc.wilson(0, 20)[1] < 0.2
    assert acc.wilson(20, 20)[1] == 1.0
    with pytest.raises(ValueError):
        acc.wilson(0, 0)


def test_paired_bootstrap_bounds() -> None:
    ones, zeros = np.ones(50), np.zeros(50)
    assert acc.paired_bootstrap(ones, zeros) == (1.0, 1.0)
    assert acc.paired_bootstrap(ones, ones) == (0.0, 0.0)
    a = np.array([1, 0] * 25)
    low, high = acc.paired_bootstrap(a, zeros)
    assert 0.2 < low < 0.5 < high < 0.8


def test_one_pass_vs_crops_on_the_simulator(tmp_path: Path) -> None:
    result = run_one("classify", "fcnseg.benchmarks.classify:run", quick(tmp_path))
    assert result["status"] == "ok", result.get("reason") or result.get("traceback")
    (row,) = result["rows"]
    for key in ("one_pass_cpu_ms", "crops_36_cpu_ms", "one_pass_wall_ms", "crops_36_wall_ms"):
        assert set(row[key]) == SPREAD and row[key]["n"] == 1 and row[key]["median"] > 0
    assert set(row["cpu_speedup"]) == SPREAD and row["reps"] == 1
    (c,) = result["checks"]
    assert c["passed"] and "36 cells" in c["name"]
    (head,) = result["headline"]
    assert head["value"] == row["cpu_speedup"]["median"] and head["clock"] == "thread"


def test_the_crop_check_fails_when_a_cell_differs(tmp_path: Path) -> None:
    """The 36-crop check compares integers: an engine that changes one crop's score fails it."""
    ctx = quick(tmp_path)
    _, clf = bench.load_classifier(ctx)
    real = clf.engine.run

    def wrong(x: np.ndarray) -> np.ndarray:
        y = np.array(real(x))
        if x.shape[1] == clf.geometry.window:  # the crops only, not the 384 pass
            y[..., 0] += 1
        return y

    clf.engine = SimpleNamespace(run=wrong)
    _, _, c = bench._one_pass_part(ctx, clf)
    assert not c["passed"]


def test_estimates_follow_finns_cycles(tmp_path: Path) -> None:
    from fcnseg.host.package import load_package

    result = run_one(
        "classify_estimates", "fcnseg.benchmarks.classify_estimates:run", quick(tmp_path)
    )
    assert result["status"] == "ok", result.get("reason") or result.get("traceback")
    one, crops = result["rows"]  # quick: no 224 build
    est = load_package(PACKAGES / bench.PACKAGE_NAME).estimates
    interval = est["max_cycles"] / (est["clock_mhz"] * 1e3)
    assert one["est_interval_ms"] == round(interval, 3) and one["tiles"] == 1
    assert crops["tiles"] == 36 and crops["steady_vs_one_pass"] == 36.0
    latency = est["estimated_latency_ms"]
    assert crops["est_alone_ms"] == round(latency + 35 * interval, 2)
    assert crops["alone_vs_one_pass"] == round((latency + 35 * interval) / latency, 2)
    assert any("not compiled" in note for note in result["notes"])


@pytest.mark.slow
def test_estimates_compile_the_224_builds(tmp_path: Path) -> None:
    """A full run exports the shipped checkpoint at 224 and compiles it twice (~40 s)."""
    pytest.importorskip("finn")
    if not CHECKPOINT.is_file():
        pytest.skip("no shipped classifier checkpoint")
    ctx = quick(tmp_path, quick=False, checkpoint=CHECKPOINT)
    result = run_one("classify_estimates", "fcnseg.benchmarks.classify_estimates:run", ctx)
    assert result["status"] == "ok", result.get("reason") or result.get("traceback")
    rows = result["rows"]
    assert [r["tile"] for r in rows] == ["384x384", "384x384", "224x224", "224x224"]
    default, matched = rows[2:]
    assert default["target_fps"] == 60 and matched["target_fps"] > default["target_fps"]
    assert all(r["fits"] for r in rows) and all(r["steady_vs_one_pass"] > 1 for r in rows[1:])


def test_accuracy_table_on_a_few_held_out_scenes(tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    result = run_one(
        "classify_accuracy", "fcnseg.benchmarks.classify_accuracy:run", quick(tmp_path)
    )
    assert result["status"] == "ok", result.get("reason") or result.get("traceback")
    rows = result["rows"]
    assert [r["variant"] for r in rows] == VARIANTS
    assert [r["positions"] for r in rows] == ["1", "1", "36", "36", "9 + 36 + 81", "121"]
    scenes = rows[0]["scenes"]
    assert 0 < scenes <= acc.QUICK_SCENES
    for r in rows:
        assert r["scenes"] == scenes and 0 <= r["correct"] <= scenes
        low, high = r["wilson95_%"]
        assert low <= r["top1_%"] <= high
        d_low, d_high = r["vs_centre_crop_95_pts"]
        assert d_low <= r["vs_centre_crop_pts"] <= d_high
    assert rows[1]["vs_centre_crop_95_pts"] == [0.0, 0.0]
    assert result["checks"] == []  # a subset: the recorded test accuracy is for 200 scenes


@pytest.mark.parametrize("offset", [0.0, 0.01])
def test_native_check_compares_with_the_recorded_accuracy(tmp_path: Path, offset: float) -> None:
    pytest.importorskip("skimage")
    ctx = quick(tmp_path)
    _, clf = bench.load_classifier(ctx)
    real = clf.package
    try:
        clf.package = None
        rows, _, checks = acc.accuracy_part(ctx, clf, 4)
        assert checks == []
        native = rows[0]["correct"] / rows[0]["scenes"]
        test = {"images": rows[0]["scenes"], "accuracy": native + offset}
        clf.package = SimpleNamespace(card=SimpleNamespace(extra={"metrics": {"test": test}}))
        _, _, checks = acc.accuracy_part(ctx, clf, 4)
    finally:
        clf.package = real
    (c,) = checks
    assert c["passed"] is (offset == 0.0)


def test_accuracy_is_skipped_without_scikit_image(tmp_path: Path, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "skimage" else real(n, *a)
    )
    result = run_one(
        "classify_accuracy", "fcnseg.benchmarks.classify_accuracy:run", quick(tmp_path)
    )
    assert result["status"] == "skipped" and "skimage" in result["reason"]


def test_skipped_without_a_classification_package(tmp_path: Path) -> None:
    empty = tmp_path / "packages"
    empty.mkdir()
    result = run_one(
        "classify", "fcnseg.benchmarks.classify:run", quick(tmp_path, packages_dir=empty)
    )
    assert result["status"] == "skipped" and bench.PACKAGE_NAME in result["reason"]
