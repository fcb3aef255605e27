"""Optimizer state on disk without pickle: tensors in safetensors, everything else in JSON.

``torch.optim.Optimizer.state_dict()`` is ``{"state": {param_index: {name: tensor | number}},
"param_groups": [...]}``. The tensors (Adam's moments and step counts) go to
``<stem>.optim.safetensors`` under keys ``"<param_index>.<name>"``; numbers and the param groups
go to ``<stem>.optim.json``. Both are written to temporary names and renamed into place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fcnseg.atomic import atomic_path, atomic_write_text
from fcnseg.errors import UserError


def optimizer_paths(stem: Path) -> tuple[Path, Path]:
    """``RUN/last`` -> (``RUN/last.optim.safetensors``, ``RUN/last.optim.json``)."""
    return stem.with_name(stem.name + ".optim.safetensors"), stem.with_name(
        stem.name + ".optim.json"
    )


def save_optimizer(stem: Path, optimizer: torch.optim.Optimizer) -> None:
    """Write ``optimizer``'s state next to checkpoint ``stem``."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    numbers: dict[str, Any] = {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            key = f"{index}.{name}"
            if torch.is_tensor(value):
                tensors[key] = value.detach().cpu().contiguous().clone()
            else:
                numbers[key] = value
    tensor_path, json_path = optimizer_paths(stem)
    text = json.dumps({"param_groups": state["param_groups"], "numbers": numbers}) + "\n"
    with atomic_path(tensor_path) as tmp:
        save_file(tensors, tmp)
    atomic_write_text(json_path, text)


def load_optimizer(stem: Path, optimizer: torch.optim.Optimizer) -> None:
    """Restore ``optimizer`` from the files :func:`save_optimizer` wrote for ``stem``."""
    tensor_path, json_path = optimizer_paths(stem)
    if not tensor_path.is_file() or not json_path.is_file():
        raise UserError(
            f"cannot resume: optimizer state {tensor_path.name} / {json_path.name} missing"
        )
    tensors = load_file(str(tensor_path))
    saved = json.loads(json_path.read_text())
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *saved["numbers"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
