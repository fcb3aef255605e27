"""Rebuild ``tests/board/data/fcn32s-rw`` (run in ``.venv``: needs torch, brevitas, finn).

Two tiny FCN-32s nets of one architecture (4-bit, width 8, 5 classes, 64x64 tile; random
weights, seeds 0 and 1, BatchNorm and activation scales calibrated on scikit-image's bundled
photos, as tests/hw/test_swap_weights.py makes them):

- ``old/``: seed 0 built with ``--runtime-weights`` for the pynq-z2 (estimate-only, no Vivado:
  ``compile_export(..., runtime_weights=True)``), the package whose bitfile the board tests
  emulate (``fcnseg.testing.emulated_zynq.emulated_package`` puts its weights in the stand-in
  bitstream);
- ``swapped/``: ``fcnseg swap-weights old seed1.safetensors`` (the same bitfile, seed 1's
  layers, ``.dat`` files and output scale/bias);
- ``reference.npz``: ``pixels`` (uint8 NHWC: two random tiles, an all-0 and an all-255 tile) and
  ``scores`` (int64 NHWC), float64 Brevitas of seed 1 on them: the exact reference the board
  tests hold the emulated board to, where torch is not installed.

The board tests (``.venv-board``) use the checked-in result::

    .venv/bin/python tests/board/data/make_runtime_fixture.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
OUT = Path(__file__).resolve().parent / "fcn32s-rw"
TILE = (64, 64)


def main() -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    from fcnseg.hw.boards import get_board
    from fcnseg.hw.build import BuildOptions, compile_export
    from fcnseg.hw.swap_weights import swap_weights
    from fcnseg.quantize.export import export_checkpoint
    from fcnseg.quantize.models.io import save_checkpoint
    from tests.helpers.exact_nets import brevitas_scores, random_pixels
    from tests.helpers.fcn_nets import calibrated

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="fcn32s-rw-"))
    try:
        old = calibrated("fcn32s", seed=0, size=TILE)
        new = calibrated("fcn32s", seed=1, size=TILE)
        ckpt_old = save_checkpoint(work / "seed0.safetensors", old, old.cfg)
        ckpt_new = save_checkpoint(work / "seed1.safetensors", new, new.cfg)
        export_checkpoint(ckpt_old, TILE, work / "export")
        opts = BuildOptions(
            work / "export",
            work / "build",
            get_board("pynq-z2"),
            target_fps=3000,
            vivado=False,
            hardware_sources=False,
            standalone_thresholds=True,
            runtime_weights=True,
        )
        built = compile_export(opts, progress=lambda message: None).package_dir
        swap_weights(built, ckpt_new, work / "swapped", lambda message: None)
        pixels = np.concatenate(
            [
                random_pixels((2, *TILE, 3), seed=5),
                np.zeros((1, *TILE, 3), np.uint8),
                np.full((1, *TILE, 3), 255, np.uint8),
            ]
        )
        scores = brevitas_scores(new, pixels).astype(np.int64)
        if OUT.exists():
            shutil.rmtree(OUT)
        OUT.mkdir(parents=True)
        shutil.copytree(built, OUT / "old")
        shutil.copytree(work / "swapped", OUT / "swapped")
        np.savez_compressed(OUT / "reference.npz", pixels=pixels, scores=scores)
        print(f"wrote {OUT}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
