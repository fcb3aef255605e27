"""The training config: one strict dataclass, read from JSON, saved with every run.

Like finn's ``DataflowBuildConfig``: unknown keys are an error (a typo must not silently fall back
to a default; the strict round-trip shared with ``ModelConfig`` and ``BuildOptions`` is
:mod:`fcnseg.config`), every field is documented here, and the resolved config is written to
``RUN_DIR/config.json`` so a run can be reproduced from its own outputs.

A run has one or two phases. With ``float_epochs > 0`` and a quantized model, the float twin is
trained first (into ``RUN_DIR/float/``), then the quantized net is initialised from the float
twin's best checkpoint, its activation scales are calibrated, and QAT runs for ``epochs``. Both
phases' best checkpoints are then at hand, which is how the float-vs-4-bit comparison is made.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fcnseg import config as config_io
from fcnseg.config import ConfigError

#: how errors name this config
CONFIG_NAME = "training config"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (besides the code)."""

    #: run name, recorded in checkpoints
    name: str = "fcn"
    #: ``ModelConfig`` fields (``num_classes`` is taken from the dataset when left out)
    model: dict[str, Any] = field(default_factory=dict)
    #: dataset spec: ``synthetic``, ``voc:PATH`` or ``cityscapes:PATH``
    dataset: str = "synthetic"
    train_split: str = "train"
    val_split: str = "val"
    #: synthetic scenes only: scene size [H, W] and number of scenes per split (None = default)
    scene_size: tuple[int, int] = (256, 256)
    train_length: int | None = None
    val_length: int | None = None
    #: keep the rendered synthetic training scenes in memory (they are re-augmented every epoch)
    cache_train: bool = True
    #: training crop [H, W] (multiples of 32), the accelerator tile by default
    crop: tuple[int, int] = (256, 256)
    #: random rescale factor range before cropping, and random horizontal flips
    scale_range: tuple[float, float] = (0.75, 1.25)
    flip: bool = True
    batch_size: int = 8
    #: epochs and peak learning rate of the main phase (QAT, or float for a float model)
    epochs: int = 10
    lr: float = 1e-3
    #: epochs and peak learning rate of the float-twin phase before QAT (0 = no float phase)
    float_epochs: int = 0
    float_lr: float = 3e-3
    #: AdamW weight decay (conv weights only; not BN, biases or quantizer scales)
    weight_decay: float = 1e-4
    #: linear warm-up steps, then cosine decay to 0 over the phase
    warmup_steps: int = 50
    #: batches run in Brevitas calibration mode before QAT (0 = none)
    calibration_batches: int = 8
    #: a float checkpoint to initialise the main phase from: the quantized net (instead of a float
    #: phase), or a float model (continued training, e.g. the fair float baseline for QAT)
    init_from: str | None = None
    #: cap on optimizer steps per epoch (None = the whole training split; tests use a few)
    steps_per_epoch: int | None = None
    #: cap on validation images (None = the whole validation split)
    val_images: int | None = None
    seed: int = 0
    #: torch intra-op threads (the machine is shared)
    threads: int = 2

    def __post_init__(self) -> None:
        for name in ("scene_size", "crop"):
            value = tuple(int(v) for v in getattr(self, name))
            if len(value) != 2 or min(value) < 1:
                raise ConfigError(
                    f"training config {name} must be [H, W] of positive ints, got {value}"
                )
            object.__setattr__(self, name, value)
        if self.crop[0] % 32 or self.crop[1] % 32:
            raise ConfigError(
                f"training config crop must be multiples of 32, got {list(self.crop)}"
            )
        scale = tuple(float(v) for v in self.scale_range)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise ConfigError(
                f"training config scale_range must be [low, high] > 0, got {list(scale)}"
            )
        object.__setattr__(self, "scale_range", scale)
        if self.batch_size < 1 or self.epochs < 0 or self.float_epochs < 0:
            raise ConfigError("training config batch_size must be >= 1 and epochs >= 0")
        if self.lr <= 0 or self.float_lr <= 0:
            raise ConfigError("training config learning rates must be positive")
        if not isinstance(self.model, dict):
            raise ConfigError("training config model must be an object of ModelConfig fields")

    @property
    def quantized(self) -> bool:
        """Whether the main phase trains the quantized net (``ModelConfig.quantized``)."""
        return bool(self.model.get("quantized", True))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (the project's one round-trip, :mod:`fcnseg.config`)."""
        return config_io.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict` (unknown keys: :class:`~fcnseg.config.UnknownConfigKeys`)."""
        return config_io.from_dict(cls, data, CONFIG_NAME)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a JSON training config; one-line :class:`~fcnseg.config.ConfigError` if bad."""
        return config_io.load(cls, path, CONFIG_NAME)

    def save(self, path: str | Path) -> None:
        """Write the config as JSON (atomically), e.g. ``RUN_DIR/config.json``."""
        config_io.save(self, path)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
