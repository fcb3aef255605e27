"""Issue 17 on boards: a farm whose workers each own an emulated Zynq and run the ``pynq``
backend (the real pynq 4.0.0 + finn-plus-driver code, :mod:`fcnseg.testing.emulated_zynq`).

Two worker processes, each with its own emulated board (:class:`fcnseg.testing.farm.EmulatedBoard`,
set up before the farm's plugin opens the overlay on it); the batch joins them with
``--scheduler ... --backend pynq``. Its outputs equal a local ``sim`` run's byte for byte, every
image is done once, and every worker that did an image ran its tiles on its own board.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("pynq")
pytest.importorskip("distributed")

import dask  # noqa: E402
import distributed  # noqa: E402

from fcnseg.cli import main  # noqa: E402
from fcnseg.host.farm.client import RETRIES  # noqa: E402
from fcnseg.testing.farm import EmulatedBoard, board_tiles  # noqa: E402
from tests.helpers.images import image  # noqa: E402

N_IMAGES = 6


def _outputs(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def test_farm_of_emulated_boards_equals_a_local_sim_run(board, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(N_IMAGES):
        Image.fromarray(image(64 + 16 * i, 96, seed=i)).save(inputs / f"img{i}.png")
    package = str(board.path)
    common = ["segment", str(inputs), "--package", package, "--scores"]
    reference = tmp_path / "reference"
    assert main([*common, "-o", str(reference)]) == 0  # sim, here

    with dask.config.set({"distributed.scheduler.allowed-failures": RETRIES}):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            resources={"FPGA": 1},
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=50,
        )
    with cluster, distributed.Client(cluster) as client:
        client.register_plugin(EmulatedBoard(package), name=EmulatedBoard.name)
        out, report = tmp_path / "out", tmp_path / "summary.json"
        farm = ["-o", str(out), "--backend", "pynq", "--json", str(report)]
        assert main([*common, *farm, "--scheduler", cluster.scheduler_address]) == 0
        tiles = client.run(board_tiles)
    assert _outputs(out) == _outputs(reference)
    summary = json.loads(report.read_text())
    assert summary["backend"] == "pynq" and summary["counts"]["done"] == N_IMAGES
    used = {r["worker"] for r in summary["images"]}
    assert used <= set(tiles) and all(tiles[w] > 0 for w in used), tiles
    assert not list(out.rglob(".*"))
