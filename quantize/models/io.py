"""Checkpoints: ``<name>.safetensors`` (state dict) + ``<name>.json`` (config and metadata).

No pickle anywhere: tensors go through safetensors, everything else through JSON. The JSON
sidecar holds ``format``, ``model_config`` (:meth:`ModelConfig.to_dict`) and whatever the caller
passes as ``meta`` (classes, palette, metrics, epoch, ...). Both files are written to temporary
names and renamed into place, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from fcnseg.atomic import atomic_path, atomic_write_text
from fcnseg.errors import UserError
from fcnseg.quantize.models import build_model
from fcnseg.quantize.models.common import FCNBase, ModelConfig

#: value of the sidecar's "format" key
CHECKPOINT_FORMAT = "fcnseg-checkpoint/1"

#: state-dict keys of activation scales that only exist once statistics have been collected
_UNCALIBRATED_SUFFIX = "scaling_impl.value"
#: the net a checkpoint rebuilds (an FCN, the classifier)
M = TypeVar("M", bound=nn.Module)


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """``x.safetensors`` -> ``x.json``."""
    return Path(path).with_suffix(".json")


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    cfg: ModelConfig,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s state dict to ``path`` (.safetensors) and its JSON sidecar.

    ``meta`` must be JSON-serialisable; its keys ``format`` and ``model_config`` are reserved.
    Returns the checkpoint path.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors: {path}")
    meta = dict(meta or {})
    reserved = {"format", "model_config"} & set(meta)
    if reserved:
        raise ValueError(f"meta keys {sorted(reserved)} are reserved")
    sidecar = {"format": CHECKPOINT_FORMAT, "model_config": cfg.to_dict(), **meta}
    text = json.dumps(sidecar, indent=2, sort_keys=False) + "\n"
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, tmp)
    atomic_write_text(sidecar_path(path), text)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[FCNBase, dict[str, Any]]:
    """Rebuild the FCN of a checkpoint, load its weights, return ``(model.eval(), meta)``.

    ``meta`` is the whole JSON sidecar (``model_config`` included). Missing or damaged files are a
    :class:`~fcnseg.errors.UserError`.
    """
    return load_model(path, ModelConfig.from_dict, build_model)


def load_model(
    path: str | os.PathLike[str],
    parse_config: Callable[[Any], Any],
    build: Callable[[Any], M],
) -> tuple[M, dict[str, Any]]:
    """Any net saved by :func:`save_checkpoint`: ``parse_config`` reads the sidecar's
    ``model_config``, ``build`` makes the net from it, its weights are loaded strictly (only a
    still-uncalibrated quantizer scale may be missing); ``(model.eval(), meta)``. Missing or
    damaged files are one :class:`~fcnseg.errors.UserError` line."""
    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if not side.is_file():
        raise UserError(f"checkpoint sidecar not found: {side}")
    try:
        meta = json.loads(side.read_text())
        cfg = parse_config(meta["model_config"])
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise UserError(f"bad checkpoint sidecar {side}: {error}") from error
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise UserError(f"bad checkpoint {path}: {error}") from error
    model = build(cfg)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatch
        detail = " ".join(str(error).split())[:300]
        raise UserError(f"checkpoint {path} does not match its config: {detail}") from error
    # Brevitas leaves an activation scale out of the state dict until statistics have initialised
    # it (brevitas.config._FULL_STATE_DICT); such a quantizer is simply still uncalibrated.
    missing = [k for k in result.missing_keys if not k.endswith(_UNCALIBRATED_SUFFIX)]
    if missing or result.unexpected_keys:
        raise UserError(
            f"checkpoint {path} does not match its config: missing {missing[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}"
        )
    return model.eval(), meta
