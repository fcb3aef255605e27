"""What the benchmarks measure: the default FCN-8s, shipped or stood in for.

The subject is, in order of preference:

1. ``shipped``: the deployment package ``host/packages/fcn8s-pynq-z2`` with the default model's
   checkpoint and export in ``models/default-fcn8s/`` (weights, QCDQ export and package agree);
   (when that export is missing, the checkpoint is exported here at the package's tile, if the
   package's model card names it by sha256);
2. ``random weights``: the default config (``quantize/configs/default-fcn8s.json``) with random
   weights (speed does not depend on them; accuracy is not measured on it), exported at 256x256
   and compiled for the Pynq-Z2 with ``fcnseg compile``'s own code (estimate-only, ~1 min here);
3. ``tiny`` (``--quick``): a tiny FCN-8s at 64x64 tiles, same code path, for smoke runs and tests.

Built subjects live in the run's scratch folder; the subject is resolved once per run
(``ctx.cache``) and described in the results (``subject``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcnseg.benchmarks.runner import REPO, Context, Skipped

#: the board of the package the host benchmarks run (the one ``fcnseg segment`` uses by default).
DEFAULT_BOARD = "pynq-z2"
DEFAULT_TILE = (256, 256)
TINY_TILE = (64, 64)
DEFAULT_CONFIG = REPO / "quantize" / "configs" / "default-fcn8s.json"


@dataclass
class Subject:
    source: str  #: "shipped" | "random weights" | "tiny"
    package_dir: Path
    export_dir: Path | None  #: model.onnx, model_qcdq.onnx, model.json (None if not available)
    checkpoint: Path | None  #: the quantized checkpoint (shipped only)
    net: Any = None  #: the Brevitas module, when built here (else loaded from ``checkpoint``)

    def describe(self) -> dict[str, Any]:
        from fcnseg.host.package import load_package

        pkg = load_package(self.package_dir)
        card = pkg.model_card
        return {
            "source": self.source,
            "package": _rel(self.package_dir),
            "checkpoint": _rel(self.checkpoint) if self.checkpoint else None,
            "checkpoint_matches_package": self.net is not None
            or checkpoint_matches(self.package_dir, self.checkpoint),
            "tile": list(pkg.tile),
            "output_stride": pkg.output_stride,
            "classes": len(pkg.output_scale),
            "board": pkg.board,
            "model_config": card.get("model_config"),
        }

    def brevitas(self) -> Any:
        """The quantized torch module (needs torch)."""
        if self.net is None:
            if not checkpoint_matches(self.package_dir, self.checkpoint):
                raise Skipped("no checkpoint whose sha256 the package's model card names")
            from fcnseg.quantize.models.io import load_checkpoint

            self.net, _ = load_checkpoint(self.checkpoint)
        return self.net.eval()


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def shipped_package(ctx: Context, board: str = DEFAULT_BOARD) -> Path | None:
    """``host/packages/fcn8s-<board>`` if it holds a package."""
    path = ctx.packages_dir / f"fcn8s-{board}"
    return path if (path / "accelerator.json").is_file() else None


def quantized_checkpoint(model_dir: Path) -> Path | None:
    """The default model's quantized checkpoint in ``model_dir`` (not a float twin)."""
    found = sorted(
        p
        for p in Path(model_dir).glob("*.safetensors")
        if "float" not in p.name and not p.name.endswith(".optim.safetensors")
    )
    return found[0] if found else None


def float_checkpoint(model_dir: Path) -> Path | None:
    """The float twin: ``*float*.safetensors`` in ``model_dir`` or its ``float/`` folder."""
    found = sorted(Path(model_dir).glob("*float*.safetensors")) + sorted(
        Path(model_dir).glob("float/*.safetensors")
    )
    found = [p for p in found if not p.name.endswith(".optim.safetensors")]
    best = [p for p in found if "best" in p.name]
    return (best or found or [None])[0]


def tiny_config() -> Any:
    from fcnseg.quantize.models import ModelConfig

    return ModelConfig(
        arch="fcn8s",
        num_classes=7,
        widths=(4, 4, 8, 8, 8),
        depths=(1, 1, 1, 1, 1),
        head_width=8,
        head_kernel=3,
    )


def default_config() -> Any:
    from fcnseg.quantize.models import ModelConfig

    return ModelConfig.from_dict(json.loads(DEFAULT_CONFIG.read_text())["model"])


def random_net(cfg: Any, tile: tuple[int, int], seed: int = 0) -> Any:
    """``cfg`` with random weights, activation scales settled by one pass on random pixels."""
    import torch

    from fcnseg.quantize.models import build_model

    torch.manual_seed(seed)
    net = build_model(cfg)
    net.train()
    with torch.no_grad():
        net(torch.rand(2, 3, *tile) * 255)
    return net.eval()


def build_package_for(
    ctx: Context, export_dir: Path, board: str, out_dir: Path, target_fps: float | None = None
) -> Path:
    """``fcnseg compile EXPORT --board BOARD`` (estimate-only) into ``out_dir``; the package."""
    from fcnseg.hw.boards import get_board
    from fcnseg.hw.build import BuildOptions, compile_export

    result = compile_export(
        BuildOptions(
            export_dir=export_dir,
            out_dir=out_dir,
            board=get_board(board),
            target_fps=target_fps,
            vivado=False,
        ),
        progress=lambda msg: ctx.log(f"  compile: {msg}"),
    )
    if result.package_dir is None:
        raise RuntimeError(f"compile of {export_dir} for {board} wrote no package")
    return result.package_dir


def _built(ctx: Context, source: str, cfg: Any, tile: tuple[int, int]) -> Subject:
    from fcnseg.quantize.export import export_model

    root = ctx.work_dir / f"subject-{source.replace(' ', '-')}"
    net = random_net(cfg, tile)
    export_dir = root / "export"
    export_model(net, {}, tile, export_dir)
    ctx.log(f"bench: building a {source} FCN-8s package ({tile[0]}x{tile[1]}) with fcnseg compile")
    package_dir = build_package_for(ctx, export_dir, DEFAULT_BOARD, root / "build")
    return Subject(source, package_dir, export_dir, None, net)


def checkpoint_matches(package_dir: Path, checkpoint: Path | None) -> bool:
    """True when the package's model card names ``checkpoint`` (by sha256) as its source."""
    from fcnseg.host.package import load_package, sha256_file

    if checkpoint is None:
        return False
    source = load_package(package_dir).model_card.get("source_checkpoint") or {}
    return source.get("sha256") == sha256_file(checkpoint)


def _export_shipped(ctx: Context, package: Path, checkpoint: Path | None) -> Path | None:
    """Export the shipped checkpoint at the package's tile (QONNX + QCDQ) into the scratch
    folder, when ``models/default-fcn8s/export`` is not there (None if it cannot be made)."""
    if checkpoint is None or not checkpoint_matches(package, checkpoint):
        return None
    try:
        from fcnseg.host.package import load_package
        from fcnseg.quantize.export import export_checkpoint
    except ModuleNotFoundError:
        return None
    out = ctx.work_dir / "shipped-export"
    export_checkpoint(checkpoint, load_package(package).tile, out)
    return out


def default_subject(ctx: Context) -> Subject:
    """The subject of this run (see the module docstring), resolved once."""
    if "subject" in ctx.cache:
        return ctx.cache["subject"]
    if ctx.quick:
        subject = _built(ctx, "tiny", tiny_config(), TINY_TILE)
    else:
        package = shipped_package(ctx)
        checkpoint = quantized_checkpoint(ctx.model_dir)
        export_dir = ctx.model_dir / "export"
        if package is not None:
            if not (export_dir / "model_qcdq.onnx").is_file():
                export_dir = _export_shipped(ctx, package, checkpoint)
            subject = Subject("shipped", package, export_dir, checkpoint)
        else:
            try:
                subject = _built(ctx, "random weights", default_config(), DEFAULT_TILE)
            except ModuleNotFoundError as error:
                raise Skipped(
                    f"no shipped package in {_rel(ctx.packages_dir)} and {error.name!r} (needed "
                    "to build one) is not installed here"
                ) from error
    ctx.cache["subject"] = subject
    ctx.cache["subject_info"] = subject.describe()
    return subject
