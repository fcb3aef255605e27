"""The model card: what the trained net is, as one typed, validated record (numpy-free).

The export writes it as ``model.json`` (``fcnseg.quantize.export``); the hw stage reads it from
there (``fcnseg.hw.build``, ``fcnseg.hw.to_package``) and copies it into the deployment package's
``accelerator.json`` (``model_card``), where the host reads it (:mod:`fcnseg.host.package`,
``fcnseg.host.segmenter``) and the benchmarks describe their subjects with it. Every reader goes
through :meth:`ModelCard.from_json`, so each fact has one name, one type and one rule for a
missing value, and a bad card is refused once, up front, with a one-line
:class:`~fcnseg.errors.UserError` that names the key.

Keys (JSON name = attribute name)::

    classes          [str], one per output channel                        required
    output_stride    int >= 1: input pixels per score cell (32/16/8)      required
    tile             [H, W]: the accelerator's input size                  in packages always
    net_stride       int, a multiple of output_stride: input sizes must be multiples of it
                     (32 for the five-pool backbone); cards written before the key existed
                     derive it from ``model_config.depths`` (one 2x2/2 pool per stage)
    receptive_field  int >= 1: pixels (per axis) one score cell sees; None = unknown
    palette          [[r, g, b]] 0..255, at least one colour per class
    task             "segmentation" (the default when missing, and then not written back:
                     cards from before the key round-trip unchanged) | "classification"
    window           int: the classifier's input side in pixels (224 for a 224x224 net): one
                     score cell is the classifier on the window x window crop at its origin;
                     required for classification and refused for segmentation; at least
                     net_stride (a window that does not move is no classifier slid over an
                     image), at most the tile's shorter side (a tile holds at least one crop),
                     and at least receptive_field (a cell sees nothing outside its crop)
    output_scale     [float], output_bias [float]: logits = q * scale + bias (1 or C entries;
                     exports only: a package carries them in ``io.output``)
    arch, quantized, model_config, source_checkpoint {file, sha256}, format "fcnseg-model/1"

Any other key (``input``, ``output``, ``files``, ``metrics``, ``export_seconds``, ``name`` ...)
is informative: kept verbatim in :attr:`ModelCard.extra` and written back by
:meth:`ModelCard.to_json`, so a card survives ``from_json -> to_json`` unchanged (``net_stride``
excepted: a derived one is written out).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from fcnseg.errors import UserError

if TYPE_CHECKING:
    from fcnseg.host.tiling import Geometry

#: the ``format`` value of model.json (a card may omit it; any other value is refused)
CARD_FORMAT = "fcnseg-model/1"
#: the model card's file name in an export folder
CARD_FILE = "model.json"
#: the longest class name a card may hold (legends and PNG text chunks carry every name)
MAX_CLASS_NAME = 200
#: what a package's score map means: per-pixel classes, or a classifier slid over the image
TASKS = ("segmentation", "classification")
#: the task of a card without the key (every card written before it existed)
DEFAULT_TASK = "segmentation"
#: the command a package of each task is for (named when one is refused by the other)
TASK_COMMANDS = {"segmentation": "fcnseg segment", "classification": "fcnseg classify"}


@dataclass(frozen=True)
class ModelCard:
    """A validated model card (module docstring); build it with :meth:`from_json`."""

    classes: tuple[str, ...]
    output_stride: int
    tile: tuple[int, int] | None = None
    net_stride: int | None = None
    receptive_field: int | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None
    task: str = DEFAULT_TASK
    window: int | None = None
    output_scale: tuple[float, ...] | None = None
    output_bias: tuple[float, ...] | None = None
    arch: str | None = None
    quantized: bool | None = None
    model_config: Mapping[str, Any] | None = None
    source_checkpoint: Mapping[str, Any] | None = None
    format: str | None = None
    #: every other key of the JSON object, verbatim
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def source_sha256(self) -> str | None:
        """sha256 of the checkpoint the card was exported from, if it records one."""
        return (self.source_checkpoint or {}).get("sha256")

    def require_task(self, task: str, where: str = "this package") -> None:
        """Refuse, in one line naming ``where`` and the right command, a card of another task
        (a segmentation command given a classifier's package, or the reverse)."""
        if self.task != task:
            raise UserError(
                f"{where} is a {self.task} package, not a {task} one; use "
                f"`{TASK_COMMANDS[self.task]}` with it, or give a {task} package"
            )

    @classmethod
    def from_json(cls, data: Any, where: str = "model card") -> ModelCard:
        """Parse and validate a card's JSON object; ``where`` prefixes every error message."""
        if not isinstance(data, Mapping):
            raise UserError(f"{where}: not a JSON object")
        return cls(**_typed_fields(data, where), extra=MappingProxyType(_extra(data)))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelCard:
        """Read a ``model.json`` (an export folder's card); one-line errors."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(
                f"{path} not found: give the folder written by `fcnseg export`"
            ) from None
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise UserError(f"{path}: unreadable model card ({type(error).__name__})") from None
        return cls.from_json(data, where=str(path))

    def to_json(self) -> dict[str, Any]:
        """The JSON object (same key names as the attributes; None fields left out)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "task" and value == DEFAULT_TASK:
                continue  # the default is not written (module docstring)
            if f.name != "extra" and value is not None:
                out[f.name] = _plain(value)
        out.update(_plain(dict(self.extra)))
        return out

    def replace(self, **changes: Any) -> ModelCard:
        """A copy with some fields changed, validated again."""
        return ModelCard.from_json({**self.to_json(), **_plain(changes)})

    def without_output_affine(self) -> ModelCard:
        """The card as a package stores it: scale and bias live in ``io.output`` there."""
        return dataclasses.replace(self, output_scale=None, output_bias=None)

    def geometry(self, net_stride: int | None = None) -> Geometry:
        """The tiling geometry (:class:`fcnseg.host.tiling.Geometry`) of this card's net.

        The one constructor from contract facts: tile, output stride and receptive field from
        the card; the net stride from ``net_stride`` when the caller knows it better (a
        package derives it from its layers), else from the card. A card without a tile or a
        net stride cannot tile and is refused by name.
        """
        from fcnseg.host.tiling import Geometry

        if self.tile is None:
            raise UserError("model card lacks 'tile' (the accelerator's input size)")
        stride = net_stride if net_stride is not None else self.net_stride
        if stride is None:
            raise UserError("model card lacks 'net_stride' (and 'model_config' to derive it)")
        try:
            return Geometry(
                tile=self.tile,
                output_stride=self.output_stride,
                net_stride=int(stride),
                receptive_field=self.receptive_field,
            )
        except ValueError as error:
            raise UserError(f"model card: {error}") from None


#: the typed keys, in the order :meth:`ModelCard.to_json` writes them
_TYPED = tuple(f.name for f in dataclasses.fields(ModelCard) if f.name != "extra")


def _extra(data: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k): v for k, v in data.items() if k not in _TYPED}


def _typed_fields(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The typed fields of ``data``, each checked (module docstring's rules)."""
    fmt = _optional(data, "format", _string, where)
    if fmt is not None and fmt != CARD_FORMAT:
        raise UserError(f"{where}: model card format {fmt!r} is not {CARD_FORMAT!r}")
    if "classes" not in data:
        raise UserError(f"{where}: model card lacks 'classes'")
    if "output_stride" not in data:
        raise UserError(f"{where}: model card lacks 'output_stride'")
    classes = _classes(data["classes"], where)
    stride = _positive_int(data["output_stride"], "output_stride", where)
    model_config = _optional(data, "model_config", _mapping, where)
    net_stride = _optional(data, "net_stride", _positive_int, where)
    depths = (model_config or {}).get("depths")
    if net_stride is None and isinstance(depths, list | tuple) and depths:
        net_stride = 2 ** len(depths)  # one 2x2/2 pool per backbone stage
    if net_stride is not None and net_stride % stride:
        raise UserError(
            f"{where}: model card key 'net_stride' ({net_stride}) must be a multiple of "
            f"'output_stride' ({stride})"
        )
    fields: dict[str, Any] = {
        "classes": classes,
        "output_stride": stride,
        "tile": _optional(data, "tile", _tile, where),
        "net_stride": net_stride,
        "receptive_field": _optional(data, "receptive_field", _positive_int, where),
        "palette": _optional(data, "palette", _palette, where),
        "task": _optional(data, "task", _task, where) or DEFAULT_TASK,
        "window": _optional(data, "window", _positive_int, where),
        "output_scale": _optional(data, "output_scale", _floats, where),
        "output_bias": _optional(data, "output_bias", _floats, where),
        "arch": _optional(data, "arch", _string, where),
        "quantized": _optional(data, "quantized", _bool, where),
        "model_config": model_config,
        "source_checkpoint": _optional(data, "source_checkpoint", _mapping, where),
        "format": fmt,
    }
    _check_lengths(fields, where)
    _check_window(fields, where)
    return fields


def _check_window(fields: Mapping[str, Any], where: str) -> None:
    """``window``: required by classification, refused by segmentation, within its bounds."""
    window, task = fields["window"], fields["task"]
    if task != "classification":
        if window is not None:
            raise UserError(f"{where}: model card key 'window' is only for task 'classification'")
        return
    if window is None:
        raise UserError(f"{where}: model card of task 'classification' lacks 'window'")
    bounds = (
        ("net_stride", fields["net_stride"], window < (fields["net_stride"] or 0), "at least"),
        ("tile", fields["tile"], window > min(fields["tile"] or (window,)), "at most the side of"),
        (
            "receptive_field",
            fields["receptive_field"],
            window < (fields["receptive_field"] or 0),
            "at least",
        ),
    )
    for key, value, broken, relation in bounds:
        if broken:
            raise UserError(
                f"{where}: model card key 'window' ({window}) must be {relation} {key!r} "
                f"({_plain(value)})"
            )


def _check_lengths(fields: Mapping[str, Any], where: str) -> None:
    n = len(fields["classes"])
    palette = fields["palette"]
    if palette is not None and len(palette) < n:
        raise UserError(
            f"{where}: model card key 'palette' has {len(palette)} colours for {n} classes"
        )
    for key in ("output_scale", "output_bias"):
        values = fields[key]
        if values is not None and len(values) not in (1, n):
            raise UserError(
                f"{where}: model card key {key!r} has {len(values)} entries, expected 1 or {n}"
            )


def _optional(data: Mapping[str, Any], key: str, parse: Any, where: str) -> Any:
    value = data.get(key)
    return None if value is None else parse(value, key, where)


def _bad(key: str, where: str, expected: str, value: Any) -> UserError:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return UserError(f"{where}: model card key {key!r} must be {expected}, got {shown}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: Any, key: str, where: str) -> int:
    if not _is_int(value) or value < 1:
        raise _bad(key, where, "a positive integer", value)
    return int(value)


def _string(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str):
        raise _bad(key, where, "a string", value)
    return value


def _task(value: Any, key: str, where: str) -> str:
    if value not in TASKS:
        raise _bad(key, where, " or ".join(repr(t) for t in TASKS), value)
    return str(value)


def _bool(value: Any, key: str, where: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(key, where, "true or false", value)
    return value


def _mapping(value: Any, key: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _bad(key, where, "an object", value)
    return MappingProxyType(dict(value))


def _classes(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise _bad("classes", where, "a non-empty list of names", value)
    if not all(isinstance(name, str) and name for name in value):
        raise _bad("classes", where, "a list of non-empty strings", value)
    if not all(name.isprintable() and len(name) <= MAX_CLASS_NAME for name in value):
        # names go into PNG text chunks, classes.json, legends and one-line messages: no
        # newlines or control characters, no lone surrogates (not encodable as UTF-8)
        raise _bad(
            "classes", where, f"printable names of at most {MAX_CLASS_NAME} characters", value
        )
    return tuple(value)


def _tile(value: Any, key: str, where: str) -> tuple[int, int]:
    if not isinstance(value, list | tuple) or len(value) != 2 or not all(map(_is_int, value)):
        raise _bad(key, where, "[height, width] in pixels", value)
    if min(value) < 1:
        raise _bad(key, where, "[height, width] in pixels", value)
    return int(value[0]), int(value[1])


def _palette(value: Any, key: str, where: str) -> tuple[tuple[int, int, int], ...]:
    def colour(c: Any) -> bool:
        return (
            isinstance(c, list | tuple)
            and len(c) == 3
            and all(_is_int(v) and 0 <= v <= 255 for v in c)
        )

    if not isinstance(value, list | tuple) or not all(map(colour, value)):
        raise _bad(key, where, "a list of [r, g, b] colours (0..255)", value)
    return tuple((int(r), int(g), int(b)) for r, g, b in value)


def _floats(value: Any, key: str, where: str) -> tuple[float, ...]:
    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    if not isinstance(value, list | tuple) or not value or not all(map(number, value)):
        raise _bad(key, where, "a non-empty list of finite numbers", value)
    return tuple(float(v) for v in value)


def _plain(value: Any) -> Any:
    """Tuples and read-only mappings back to JSON lists and dicts."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
