"""Shared, session-scoped exports and builds for the hw tests (a build takes 10-40 s here).

The nets are small FCN-32s/FCN-8s from ``fcnseg.quantize`` (the real model code, tiny widths)
exported with ``fcnseg.quantize.export`` at 64x64, so every test exercises the same files
``fcnseg export`` writes; builds are made once per session and shared.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# The hw stage runs in the build environment (.venv: finn-plus, torch). In the board environment
# (.venv-board) none of its tests can run, so none are collected there.
if importlib.util.find_spec("finn") is None or importlib.util.find_spec("torch") is None:
    collect_ignore_glob = ["test_*.py"]

TILE = (64, 64)


@dataclass
class Export:
    arch: str
    dir: Path
    model: Any  # the Brevitas module that was exported
    card: dict


def _tiny_config(arch: str):
    from fcnseg.quantize.models import ModelConfig

    return ModelConfig(
        arch=arch,
        num_classes=4,
        widths=(4, 4, 8, 8, 8),
        depths=(1, 1, 1, 1, 1),
        head_width=8,
        head_kernel=3,
    )


def make_export(arch: str, out_dir: Path, tile: tuple[int, int] = TILE, seed: int = 0) -> Export:
    """Build a tiny net, settle its activation scales on random pixels, export it."""
    import torch

    from fcnseg.quantize.export import export_model
    from fcnseg.quantize.models import build_model

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = build_model(_tiny_config(arch))
    model.train()
    with torch.no_grad():  # one calibration-like pass so activation scales are non-trivial
        model(torch.rand(2, 3, *tile) * 255)
    model.eval()
    card = export_model(model, {}, tile, out_dir)
    return Export(arch, out_dir, model, card)


@pytest.fixture(scope="session")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Export]:
    root = tmp_path_factory.mktemp("exports")
    return {arch: make_export(arch, root / arch) for arch in ("fcn32s", "fcn16s", "fcn8s")}


@pytest.fixture(scope="session")
def build_fcn8s(exports: dict[str, Export], tmp_path_factory: pytest.TempPathFactory):
    """FCN-8s for pynq-z2 at a high target FPS (so re-folding lower has room to save LUTs)."""
    from fcnseg.hw.boards import get_board
    from fcnseg.hw.build import BuildOptions, compile_export

    out = tmp_path_factory.mktemp("build") / "fcn8s-pynq-z2"
    messages: list[str] = []
    result = compile_export(
        BuildOptions(
            export_dir=exports["fcn8s"].dir,
            out_dir=out,
            board=get_board("pynq-z2"),
            target_fps=4000,
            vivado=False,
        ),
        progress=messages.append,
    )
    result.messages = messages  # type: ignore[attr-defined]
    return result


@pytest.fixture(scope="session")
def build_fcn32s(exports: dict[str, Export], tmp_path_factory: pytest.TempPathFactory):
    """FCN-32s for zcu104 through the CLI (``fcnseg compile``)."""
    from fcnseg.cli import main

    out = tmp_path_factory.mktemp("build") / "fcn32s-zcu104"
    argv = ["compile", str(exports["fcn32s"].dir), "--board", "zcu104", "--target-fps", "500"]
    argv += ["--no-vivado", "-o", str(out)]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="session")
def build_fcn16s(exports: dict[str, Export], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FCN-16s for kv260 at the board's default target FPS."""
    from fcnseg.hw.boards import get_board
    from fcnseg.hw.build import BuildOptions, compile_export

    out = tmp_path_factory.mktemp("build") / "fcn16s-kv260"
    opts = BuildOptions(exports["fcn16s"].dir, out, get_board("kv260"), vivado=False)
    return compile_export(opts, progress=lambda message: None).out_dir
