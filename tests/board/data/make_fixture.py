"""Rebuild ``tests/board/data/fcn8s-tiny`` (run in ``.venv``: needs torch, brevitas, finn).

A tiny FCN-8s (4-bit weights and activations, width 8, 5 classes, 64x64 tile, random weights)
through the hw flow's steps, with the last layer folded PE=5 so the output stream is folded
(``oshape_folded [1, 8, 8, 1, 5]``), written by :func:`fcnseg.hw.to_package.build_package`.
Its ``estimates.estimated_fps`` is finn-plus's own per-layer cycle estimate (``get_exp_cycles``)
at 100 MHz. It carries its generated hardware (``hardware.tar.xz``: every node's HLS C++ / RTL from
finn-plus's code generation for the zcu104 part, ``fcnseg.hw.verify.generate``), which the
emulated board can run instead of the simulator. The board tests (``.venv-board``, no finn
there) use the checked-in result::

    .venv/bin/python tests/board/data/make_fixture.py
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
OUT = Path(__file__).resolve().parent / "fcn8s-tiny"


def main() -> None:
    sys.path.insert(0, str(ROOT))
    import torch
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from qonnx.custom_op.registry import getCustomOp

    from fcnseg.hw.boards import get_board
    from fcnseg.hw.to_package import build_package
    from tests.helpers.sim_graph import build

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="fcn8s-tiny-"))
    try:
        _, model, _ = build("fcn8s", 4, 4, 8, 5, 7, work)
        last = model.find_producer(model.graph.output[0].name)
        getCustomOp(last).set_nodeattr("PE", 5)
        # integer thresholds, as every real build has them (finn's code generation needs them;
        # the package stores the same ceil(t) either way)
        model = model.transform(RoundAndClipThresholds())
        cycles = []
        for node in model.graph.node:
            try:
                cycles.append(int(getCustomOp(node).get_exp_cycles()))
            except Exception:  # not a HW layer (the input Transpose)
                continue
        estimates = {
            "estimated_fps": 1e8 / max(cycles),
            "clock_mhz": 100.0,
            "clock_ns": 10.0,
            "max_cycles": max(cycles),
            "source": "finn-plus 1.6.1 get_exp_cycles per layer at 100 MHz (tests/board fixture)",
            "board": get_board("zcu104").to_json(),
        }
        card = json.loads((work / "model.json").read_text())
        card["name"] = "fcn8s-tiny-fixture"
        # The sim-graph builder's card writes 0 here; the card format says None for unknown.
        card["receptive_field"] = None
        shutil.rmtree(OUT, ignore_errors=True)
        build_package(
            model,
            OUT,
            model_card=card,
            board="zcu104",
            output_scale=[0.0078125] * 5,
            output_bias=[0.0] * 5,
            estimates=estimates,
        )
        _add_hardware(OUT, work / "hardware")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(OUT)


def _add_hardware(package: Path, scratch: Path) -> None:
    """Generate the package's hardware (finn code generation) and add it as its archive."""
    from fcnseg.host.hardware import ARCHIVE_NAME, pack
    from fcnseg.host.package import add_package_files
    from fcnseg.hw.verify.generate import generate_hardware, resolve_target

    graph = generate_hardware(resolve_target(package), scratch)
    add_package_files(package, {ARCHIVE_NAME: pack(graph.root)})


if __name__ == "__main__":
    main()
