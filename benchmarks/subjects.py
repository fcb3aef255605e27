"""What the benchmarks measure: a deployment package, given, shipped or built here.

The subject is, in order of preference:

1. ``package``: the package given with ``fcnseg bench --package DIR``;
2. ``shipped``: the default deployment package installed with the host runtime
   (``fcn8s-pynq-z2`` in ``fcnseg.host``'s package data, found through
   :func:`~fcnseg.benchmarks.runner.shipped_packages_dir`);
3. ``random weights``: the shipped package's topology (its model card's ``model_config``) with
   random weights (speed does not depend on them; accuracy is not measured on it), exported at
   256x256 and compiled for the Pynq-Z2 with ``fcnseg compile``'s own code (~1 min here);
4. ``tiny`` (``--quick`` without ``--package``): a tiny FCN-8s at 64x64 tiles, same code path,
   for smoke runs and tests.

The quantized checkpoint (``--checkpoint FILE``) is the Brevitas reference of a package whose
model card names it by sha256; its QCDQ export is ``export/`` beside it, or exported here at the
package's tile. Built subjects live in the run's scratch folder; the subject is resolved once per
run (``ctx.cache``) and described in the results (``subject``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcnseg.benchmarks.runner import Context, Skipped

#: the board of the package the host benchmarks run (the one ``fcnseg segment`` uses by default).
DEFAULT_BOARD = "pynq-z2"
DEFAULT_TILE = (256, 256)
TINY_TILE = (64, 64)


@dataclass
class Subject:
    """One deployment package and, when known, the checkpoint and export it was made from."""

    source: str  #: "package" | "shipped" | "random weights" | "tiny"
    package_dir: Path
    export_dir: Path | None  #: model.onnx, model_qcdq.onnx, model.json (None if not available)
    checkpoint: Path | None  #: the quantized checkpoint (``--checkpoint``)
    net: Any = None  #: the Brevitas module, when built here (else loaded from ``checkpoint``)

    def describe(self) -> dict[str, Any]:
        from fcnseg.host.package import load_package

        pkg = load_package(self.package_dir)
        config = pkg.card.model_config
        return {
            "source": self.source,
            "package": display_path(self.package_dir),
            "checkpoint": display_path(self.checkpoint) if self.checkpoint else None,
            "checkpoint_matches_package": self.net is not None
            or checkpoint_matches(self.package_dir, self.checkpoint),
            "tile": list(pkg.tile),
            "output_stride": pkg.output_stride,
            "classes": len(pkg.output_scale),
            "board": pkg.board,
            "model_config": dict(config) if config is not None else None,
        }

    def brevitas(self) -> Any:
        """The quantized torch module (needs torch)."""
        if self.net is None:
            if not checkpoint_matches(self.package_dir, self.checkpoint):
                raise Skipped(
                    "no checkpoint whose sha256 the package's model card names (pass "
                    "--checkpoint FILE, the checkpoint the package was exported from)"
                )
            from fcnseg.quantize.models.io import load_checkpoint

            self.net, _ = load_checkpoint(self.checkpoint)
        return self.net.eval()


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when inside it (results stay portable)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def shipped_package(ctx: Context, board: str = DEFAULT_BOARD) -> Path | None:
    """The installed ``fcn8s-<board>`` package (``ctx.packages_dir``), if it holds one."""
    if ctx.packages_dir is None:
        return None
    path = Path(ctx.packages_dir) / f"fcn8s-{board}"
    return path if (path / "accelerator.json").is_file() else None


def float_checkpoint(checkpoint: Path) -> Path | None:
    """The float twin of ``checkpoint``: ``*float*.safetensors`` beside it or in ``float/``
    beside it (a training run's layout), ``best`` preferred."""
    folder = Path(checkpoint).parent
    found = sorted(folder.glob("*float*.safetensors")) + sorted(folder.glob("float/*.safetensors"))
    found = [p for p in found if not p.name.endswith(".optim.safetensors") and p != checkpoint]
    best = [p for p in found if "best" in p.name]
    return (best or found or [None])[0]


def tiny_config() -> Any:
    from fcnseg.quantize.config import ModelConfig

    return ModelConfig(
        arch="fcn8s",
        num_classes=7,
        widths=(4, 4, 8, 8, 8),
        depths=(1, 1, 1, 1, 1),
        head_width=8,
        head_kernel=3,
    )


def default_config(ctx: Context) -> Any:
    """The default model's topology: the shipped package's model card ``model_config``."""
    from fcnseg.host.package import load_package
    from fcnseg.quantize.config import ModelConfig

    package = shipped_package(ctx)
    config = load_package(package).card.model_config if package is not None else None
    if not config:
        raise Skipped(
            "no deployment package to measure: pass --package DIR (none is installed with the "
            "host runtime to take a topology from)"
        )
    return ModelConfig.from_dict(dict(config))


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


def built_subject(ctx: Context, source: str, cfg: Any, tile: tuple[int, int]) -> Subject:
    """``cfg`` with random weights, exported at ``tile`` and compiled for the default board
    (estimate-only) in the scratch folder: a subject when no package is given or shipped."""
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
    return load_package(package_dir).card.source_sha256 == sha256_file(checkpoint)


def export_for(ctx: Context, package: Path, checkpoint: Path | None) -> Path | None:
    """The QONNX + QCDQ export of ``checkpoint``: ``export/`` beside it when it holds
    ``model_qcdq.onnx``, else exported here at the package's tile (None when the checkpoint
    is not the package's source, or torch is missing)."""
    if checkpoint is None or not checkpoint_matches(package, checkpoint):
        return None
    beside = Path(checkpoint).parent / "export"
    if (beside / "model_qcdq.onnx").is_file():
        return beside
    try:
        from fcnseg.host.package import load_package
        from fcnseg.quantize.export import export_checkpoint
    except ModuleNotFoundError:
        return None
    out = ctx.work_dir / "subject-export"
    export_checkpoint(checkpoint, load_package(package).tile, out)
    return out


def _resolve(ctx: Context) -> Subject:
    """Pick the subject (see the module docstring); builds one when nothing is given."""
    if ctx.package is not None:
        package = Path(ctx.package)
        if not (package / "accelerator.json").is_file():
            from fcnseg.errors import UserError

            raise UserError(f"--package {package}: no accelerator.json there (not a package)")
        shipped = shipped_package(ctx)
        same = shipped is not None and shipped.resolve() == package.resolve()
        source = "shipped" if same else "package"
    elif ctx.quick:
        return built_subject(ctx, "tiny", tiny_config(), TINY_TILE)
    else:
        package = shipped_package(ctx)
        source = "shipped"
        if package is None:
            try:
                return built_subject(ctx, "random weights", default_config(ctx), DEFAULT_TILE)
            except ModuleNotFoundError as error:
                raise Skipped(
                    f"no deployment package (pass --package DIR) and {error.name!r}, needed "
                    "to build one, is not installed here"
                ) from error
    checkpoint = Path(ctx.checkpoint) if ctx.checkpoint is not None else None
    return Subject(source, package, export_for(ctx, package, checkpoint), checkpoint)


def default_subject(ctx: Context) -> Subject:
    """The subject of this run (see the module docstring), resolved once."""
    if "subject" not in ctx.cache:
        subject = _resolve(ctx)
        ctx.cache["subject"] = subject
        ctx.cache["subject_info"] = subject.describe()
    return ctx.cache["subject"]
