"""``benchmarks/farm.py`` in --quick mode: three cluster sizes per setting, well-formed spreads,
every batch did every image, the simulator's masks equal a local run's, every paced tile ran on
the workers' emulated boards. Behaviour, never time: the figures are whatever this machine gives.

Needs the board environment (pynq for the emulated boards, distributed for the farm).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pynq")
pytest.importorskip("distributed")

from fcnseg.benchmarks.runner import Context, run_one  # noqa: E402
from fcnseg.host.segmenter import DEFAULT_PACKAGE  # noqa: E402

SPREAD = {"median", "min", "max", "q1", "q3", "n"}


@pytest.mark.slow
def test_farm_benchmark_quick(tmp_path: Path) -> None:
    if not (DEFAULT_PACKAGE / "accelerator.json").is_file():
        pytest.skip("no shipped package")
    ctx = Context(reps=1, quick=True, work_dir=tmp_path, packages_dir=DEFAULT_PACKAGE.parent,
                  log=lambda msg: None)  # fmt: skip
    result = run_one("farm", "fcnseg.benchmarks.farm:run", ctx)
    assert result["status"] == "ok", result.get("reason") or result.get("traceback")
    assert [(r["setting"], r["workers"]) for r in result["rows"]] == [
        (s, n) for s in ("sim", "paced") for n in (1, 2, 3)
    ]
    assert len(result["checks"]) == 5 and all(c["passed"] for c in result["checks"])
    for row in result["rows"]:
        for key in ("images_per_s", "wall_ms_per_image", "cpu_ms_per_image", "wall_vs_1"):
            cell = row[key]
            assert set(cell) == SPREAD and cell["n"] == 1 == row["reps"]
            assert 0 < cell["min"] <= cell["median"] <= cell["max"]
        if row["workers"] == 1:  # the reference: its own ratio is 1, sample by sample
            assert row["wall_vs_1"]["median"] == row["cpu_vs_1"]["median"] == 1.0
    speedups = [h for h in result["headline"] if "speed-up" in h["figure"]]
    assert len(speedups) == 4 and all(h["value"] > 0 and h["clock"] == "process" for h in speedups)
