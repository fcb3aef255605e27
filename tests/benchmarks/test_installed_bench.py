"""``fcnseg bench --package DIR`` as an installed fcnseg runs it, in both environments.

The command runs in a fresh interpreter from an empty working directory, so nothing is found
through the checkout: the shipped package comes from the installed ``fcnseg.host`` package
data, the photos are synthetic (no ``--samples``). In ``.venv-board`` (numpy 1.x, pynq, no torch
or finn: a board's truth) the numpy-only benchmarks must run and the others must say why not.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

from fcnseg.benchmarks.runner import shipped_packages_dir

NUMPY_ONLY = (
    "simulator",
    "seed_claim",
    "postprocess",
    "tiling",
    "end_to_end",
    "estimates",
    "frame_rates",
)
#: the classifier's benchmarks (benchmarks/classify*.py), after the others
CLASSIFIER = ("classify", "classify_estimates", "classify_accuracy")
ROOT = Path(__file__).resolve().parents[2]


def _bench(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fcnseg.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        env=env,
    )


def _wheel_builder() -> str | None:
    """A Python that can build fcnseg's wheel (setuptools >= 68): this one, or the build
    environment's, as on a real board whose wheel is built on a PC (docs/board.md)."""
    probe = (
        "import setuptools, wheel, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 68)"
    )
    for python in (sys.executable, str(ROOT / ".venv" / "bin" / "python")):
        if Path(python).exists() and subprocess.run([python, "-c", probe]).returncode == 0:
            return python
    return None


def test_bench_on_the_shipped_package_runs_what_numpy_can(tmp_path: Path) -> None:
    package = shipped_packages_dir() / "fcn8s-pynq-z2"
    done = _bench(tmp_path, "--package", str(package), "--quick", "--reps", "1", "-o", "out")
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    results = data["benchmarks"]
    assert list(results) == [*NUMPY_ONLY, "in_flight", "farm", "accuracy", *CLASSIFIER]
    # the classifier's benchmarks find the installed classifier package (--package is an FCN's)
    for name in ("classify", "classify_estimates"):
        assert results[name]["status"] == "ok", (name, results[name].get("reason"))
        assert all(c["passed"] for c in results[name]["checks"])
    expected = "ok" if importlib.util.find_spec("skimage") else "skipped"
    assert results["classify_accuracy"]["status"] == expected
    for name in NUMPY_ONLY:
        assert results[name]["status"] == "ok", (name, results[name].get("reason"))
        assert all(c["passed"] for c in results[name]["checks"])
    # the emulated board's benchmarks run where pynq is (the board environment)
    for name in ("in_flight", "farm"):
        if importlib.util.find_spec("pynq") is None:
            assert results[name]["status"] == "skipped"
            assert "pynq" in results[name]["reason"]
        else:
            assert results[name]["status"] == "ok", results[name].get("reason")
    assert data["subject"]["source"] == "shipped" and data["subject"]["tile"] == [256, 256]
    sim = {row["engine"]: row for row in results["simulator"]["rows"]}
    batch4 = next(row for engine, row in sim.items() if "4 tiles per call" in engine)
    assert batch4["cpu_ms"]["median"] > 0 and batch4["tile"] == "256x256"
    assert "synthetic" in results["end_to_end"]["title"]
    assert results["end_to_end"]["pipeline_report"]["images"] == 2
    # no checkpoint given: accuracy says so (or, without torch, that torch is missing)
    accuracy = results["accuracy"]
    assert accuracy["status"] == "skipped"
    assert "--checkpoint" in accuracy["reason"] or "torch" in accuracy["reason"]
    assert f"accuracy skipped: {accuracy['reason']}" in done.stdout
    notes = " ".join(results["simulator"]["notes"])
    if importlib.util.find_spec("torch") is None:  # the board environment
        assert "Brevitas not measured: needs 'torch'" in notes
        assert "torch" in accuracy["reason"]
    if importlib.util.find_spec("finn") is None:
        assert "finn-plus execute_onnx not measured" in notes
        assert not any("finn" in engine for engine in sim)
    else:
        assert any("finn-plus" in engine for engine in sim)


def test_results_describe_the_machine_not_who_shares_it(tmp_path: Path) -> None:
    done = _bench(tmp_path, "--quick", "--only", "postprocess", "-o", "out")
    assert done.returncode == 0, done.stderr[-3000:]
    machine = json.loads((tmp_path / "out" / "results.json").read_text())["machine"]
    assert set(machine) == {
        "date",
        "cores",
        "cpu_model",
        "machine",
        "python",
        "load_average_start",
        "load_average_end",
        "versions",
    }
    assert len(machine["load_average_start"]) == len(machine["load_average_end"]) == 3
    text = (tmp_path / "out" / "RESULTS.md").read_text().lower()
    assert "load average" in text
    assert not re.search(r"\b(agents?|users?|processes|pids?|jobs?)\b", text)


def test_bench_rejects_a_folder_that_is_no_package(tmp_path: Path) -> None:
    (tmp_path / "build" / "package").mkdir(parents=True)
    done = _bench(tmp_path, "--package", "build", "-o", "out")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "fcnseg: error: --package build: no accelerator.json there (a build folder? its "
        "package is in package/)"
    ]
    done = _bench(tmp_path, "--tile", "100", "224", "-o", "out")
    assert done.returncode == 2 and "multiples of 32" in done.stderr


def test_bench_from_a_wheel_install(tmp_path: Path) -> None:
    """The wheel, unpacked with ``pip install --target`` and first on the path: the suite and
    the shipped package come from the installed files, not from this checkout."""
    import os

    import pytest

    builder = _wheel_builder()
    if builder is None:
        pytest.skip("no Python with setuptools >= 68 to build the wheel")
    subprocess.run(
        [builder, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(tmp_path / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("fcnseg-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site)]
        + [str(wheel)],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    package = site / "fcnseg" / "host" / "packages" / "fcn8s-pynq-z2"
    args = ("--package", str(package), "--quick", "--only", "simulator", "--only", "estimates")
    done = _bench(tmp_path, *args, "-o", "out", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["subject"]["source"] == "shipped"  # the installed package is the shipped one
    assert (tmp_path / data["subject"]["package"]).resolve() == package.resolve()  # cwd-relative
    assert {r["status"] for r in data["benchmarks"].values()} == {"ok"}
    where = subprocess.run(
        [sys.executable, "-c", "import fcnseg.benchmarks as b; print(b.__file__)"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(site)
