"""One strict dict/JSON round-trip for the project's config dataclasses (standard library only).

``ModelConfig`` (``fcnseg.quantize.config``), ``TrainConfig`` (``fcnseg.quantize.train_config``)
and ``BuildOptions`` (``fcnseg.hw.build``) are frozen-or-plain dataclasses saved next to what they
produced (checkpoint sidecars, ``RUN_DIR/config.json``, ``BUILD_DIR/fcnseg_build.json``) and read
back from JSON. They share these rules, written once here:

- **Unknown keys are an error** (:class:`UnknownConfigKeys`, naming the keys and the config), as
  in finn's ``DataflowBuildConfig``: a typo must not silently fall back to a default.
- Missing required keys and values of the wrong JSON type are :class:`ConfigError`\\ s naming the
  key (``TrainConfig.epochs: expected int, got str``), before the dataclass's own checks run.
- JSON has no tuples, paths or nested dataclasses: :func:`to_dict` writes tuples as lists, paths
  as strings and dataclass fields as objects; :func:`from_dict` turns them back, guided by the
  field annotations, so ``from_dict(C, to_dict(c)) == c`` for every config ``c``.

Why here, in the ground floor: the three configs live in two stages (quantize, hw) whose modules
import torch or finn, and the host runtime must not import either stage; ``fcnseg/`` is the one
place all of them import from, and it holds only standard-library code (like ``fcnseg.atomic``).
mashumaro (finn's choice) would do the same job but is not on a PYNQ image; this is ~150 lines
of ``dataclasses`` + ``typing`` introspection covering exactly the field types the configs use:
``int``, ``float``, ``bool``, ``str``, ``Path``, ``tuple[...]``, ``dict[str, ...]``, ``X | None``,
``Any`` and nested dataclasses. Annotations are resolved with ``typing.get_type_hints``, so a
config class must be defined at module level.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from fcnseg.atomic import atomic_write_text
from fcnseg.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A config that does not describe a valid configuration (one line, names the key).

    Also a ``ValueError``: callers that validated configs by catching ``ValueError`` keep working.
    """


class UnknownConfigKeys(ConfigError):
    """A config dict with keys its dataclass does not have (the one error for unknown keys)."""

    def __init__(self, config: str, keys: Sequence[str], known: Sequence[str]) -> None:
        self.config = config
        self.keys = tuple(keys)
        super().__init__(
            f"unknown {config} keys: {', '.join(map(repr, keys))} "
            f"(known: {', '.join(sorted(known))})"
        )


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass instance as a JSON-ready dict (every field, in declaration order)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"to_dict needs a dataclass instance, got {type(config).__name__}")
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _plain(value: Any) -> Any:
    """One value as plain JSON data (tuples -> lists, paths -> str, dataclasses -> dicts)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def from_dict(cls: type[T], data: Any, name: str | None = None) -> T:
    """Build the dataclass ``cls`` from a dict, strictly (module docstring).

    ``name`` is how errors call the config (default: the class name), e.g. "training config".
    Errors raised by the dataclass's own ``__post_init__`` pass through unchanged.
    """
    what = name or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"{what} must be a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise UnknownConfigKeys(what, unknown, list(fields))
    missing = [
        n
        for n, f in fields.items()
        if n not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{what} lacks required keys: {', '.join(map(repr, missing))}")
    hints = typing.get_type_hints(cls)
    values = {k: _convert(v, hints.get(k, Any), f"{what}.{k}") for k, v in data.items()}
    return cls(**values)


def _convert(value: Any, hint: Any, where: str) -> Any:
    """``value`` (plain JSON data) as the annotated type ``hint``; ConfigError if it is not one."""
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options[:-1]:
            try:
                return _convert(value, option, where)
            except ConfigError:
                continue
        return _convert(value, options[-1], where)
    if origin is tuple:
        return _tuple(value, args, where)
    if origin in (dict, Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            raise _wrong(where, "an object", value)
        item = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, item, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _wrong(where, "a list", value)
        return [_convert(v, args[0] if args else Any, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else from_dict(hint, value, where)
    if hint is Path:
        if not isinstance(value, (str, os.PathLike)):
            raise _wrong(where, "a path (string)", value)
        return Path(value)
    return _scalar(value, hint, where)


def _tuple(value: Any, args: tuple[Any, ...], where: str) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise _wrong(where, "a list", value)
    if len(args) == 2 and args[1] is Ellipsis:
        kinds = [args[0]] * len(value)
    elif args:
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        kinds = list(args)
    else:
        kinds = [Any] * len(value)
    pairs = enumerate(zip(value, kinds, strict=True))
    return tuple(_convert(v, k, f"{where}[{i}]") for i, (v, k) in pairs)


def _scalar(value: Any, hint: Any, where: str) -> Any:
    """int / float / bool / str: JSON's own types, no silent casts (an int is a float, a bool
    is not an int)."""
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str) and isinstance(value, bool):
        raise _wrong(where, hint.__name__, value)
    if isinstance(hint, type) and not isinstance(value, hint):
        raise _wrong(where, hint.__name__, value)
    return value


def _wrong(where: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{where}: expected {expected}, got {type(value).__name__} {value!r:.40}")


def load(cls: type[T], path: str | os.PathLike[str], name: str | None = None) -> T:
    """Read the JSON file ``path`` as ``cls`` (:func:`from_dict`); one-line errors."""
    what = name or cls.__name__
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{what} {path} is unreadable: {error}") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{what} {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a JSON object")
    return from_dict(cls, data, what)


def save(config: Any, path: str | os.PathLike[str]) -> None:
    """Write ``config`` as indented JSON to ``path``, atomically."""
    atomic_write_text(path, json.dumps(to_dict(config), indent=2) + "\n")
