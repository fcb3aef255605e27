"""The tiny training config the train tests share: a net and data small enough for seconds.

8 synthetic scenes of 64x64, batch 4, one thread; tests override what they vary
(``tiny_train_config(epochs=50)``).
"""

from __future__ import annotations

from typing import Any

TINY_TRAIN: dict[str, Any] = {
    "name": "tiny",
    "model": {
        "arch": "fcn8s",
        "widths": [4, 8, 8, 8, 8],
        "depths": [1, 1, 1, 1, 1],
        "head_width": 8,
        "head_kernel": 1,
    },
    "scene_size": [64, 64],
    "train_length": 8,
    "val_length": 3,
    "crop": [64, 64],
    "scale_range": [1, 1],
    "batch_size": 4,
    "epochs": 2,
    "float_epochs": 1,
    "warmup_steps": 1,
    "calibration_batches": 2,
    "threads": 1,
}


def tiny_train_config(**overrides: Any) -> dict[str, Any]:
    """A copy of :data:`TINY_TRAIN` with ``overrides`` applied (top-level keys)."""
    return {**TINY_TRAIN, "model": dict(TINY_TRAIN["model"]), **overrides}
