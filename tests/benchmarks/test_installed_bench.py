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

NUMPY_ONLY = ("simulator", "seed_claim", "postprocess", "tiling", "end_to_end", "estimates")


def _bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fcnseg.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )


def test_bench_on_the_shipped_package_runs_what_numpy_can(tmp_path: Path) -> None:
    package = shipped_packages_dir() / "fcn8s-pynq-z2"
    done = _bench(tmp_path, "--package", str(package), "--quick", "--reps", "1", "-o", "out")
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    results = data["benchmarks"]
    assert list(results) == [*NUMPY_ONLY, "accuracy"]
    for name in NUMPY_ONLY:
        assert results[name]["status"] == "ok", (name, results[name].get("reason"))
        assert all(c["passed"] for c in results[name]["checks"])
    assert data["subject"]["source"] == "shipped" and data["subject"]["tile"] == [256, 256]
    sim = {row["engine"]: row for row in results["simulator"]["rows"]}
    batch4 = next(row for engine, row in sim.items() if "4 tiles per call" in engine)
    assert batch4["ms_per_tile"] > 0 and batch4["tile"] == "256x256"
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
