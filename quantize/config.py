"""The model config: what an FCN is, as plain data (torch-free).

:class:`ModelConfig` is saved next to every checkpoint and in the export's ``model.json``; the
hw stage and the benchmarks read it without torch, so it lives here rather than beside the torch
modules (``fcnseg.quantize.models.common`` re-exports it). Its dict/JSON form follows the
project's one strict round-trip (:mod:`fcnseg.config`): unknown keys are an
:class:`~fcnseg.config.UnknownConfigKeys`, bad values a :class:`~fcnseg.config.ConfigError`
(both also ``ValueError``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from fcnseg import config as config_io
from fcnseg.config import ConfigError

#: architecture name -> output stride of its score map.
OUTPUT_STRIDES: dict[str, int] = {"fcn32s": 32, "fcn16s": 16, "fcn8s": 8}

#: number of backbone stages; each ends in a 2x2/2 max-pool, so the backbone's stride is 2**5 = 32.
NUM_STAGES = 5


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a net (saved next to every checkpoint and in model.json).

    ``widths[i]``/``depths[i]`` are the channel count and number of 3x3 convs of stage ``i + 1``.
    The head is ``fc6`` (``head_kernel`` x ``head_kernel`` same-padded conv to ``head_width``,
    the paper's 7x7 FC-as-conv made tile-appropriate so the score map is exactly input/32),
    ``fc7`` (1x1, ``head_width``) and ``score_fr`` (1x1, ``num_classes``).
    """

    #: "fcn32s" | "fcn16s" | "fcn8s"
    arch: str = "fcn8s"
    #: number of output classes (including background)
    num_classes: int = 21
    #: channels per backbone stage (5 stages)
    widths: tuple[int, ...] = (16, 32, 64, 64, 128)
    #: 3x3 convs per backbone stage (5 stages)
    depths: tuple[int, ...] = (1, 1, 2, 2, 2)
    #: channels of fc6 and fc7
    head_width: int = 256
    #: fc6 kernel size (odd, same-padded)
    head_kernel: int = 3
    #: weight bits of the inner layers
    weight_bits: int = 4
    #: activation (QuantReLU) bits
    act_bits: int = 4
    #: bits of the input quantizer, first conv and score conv weights, and the fuse quantizer
    io_bits: int = 8
    #: False = the float twin (same topology, plain torch layers)
    quantized: bool = True
    #: dropout after fc6 and fc7 (0 = none)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.arch not in OUTPUT_STRIDES:
            raise ConfigError(
                f"ModelConfig.arch must be one of {sorted(OUTPUT_STRIDES)}, got {self.arch!r}"
            )
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        if len(self.widths) != NUM_STAGES or len(self.depths) != NUM_STAGES:
            raise ConfigError(
                f"ModelConfig widths and depths need {NUM_STAGES} entries (one per stage)"
            )
        if min(self.widths) < 1 or min(self.depths) < 1 or self.head_width < 1:
            raise ConfigError("ModelConfig widths, depths and head_width must be positive")
        if self.num_classes < 1:
            raise ConfigError("ModelConfig.num_classes must be positive")
        if self.head_kernel < 1 or self.head_kernel % 2 == 0:
            raise ConfigError(
                "ModelConfig.head_kernel must be odd (same padding keeps the map at input/32)"
            )
        if min(self.weight_bits, self.act_bits, self.io_bits) < 2:
            raise ConfigError("ModelConfig bit widths must be >= 2")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("ModelConfig.dropout must be in [0, 1)")

    @property
    def output_stride(self) -> int:
        """Input pixels per score-map cell (32, 16 or 8)."""
        return OUTPUT_STRIDES[self.arch]

    @property
    def net_stride(self) -> int:
        """The multiple every input size must be: one 2x2/2 pool per stage, ``2**5 = 32``."""
        return 2**NUM_STAGES

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        return config_io.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (like finn's config)."""
        return config_io.from_dict(cls, data, "ModelConfig")

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (e.g. ``cfg.replace(quantized=False)``)."""
        return dataclasses.replace(self, **changes)
