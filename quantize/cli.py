"""Click commands of the training stage: ``fcnseg train``, ``fcnseg export``, ``fcnseg eval``.

Heavy libraries (torch, brevitas, onnx) are imported inside the command functions only, so
``fcnseg --help`` stays fast and ``fcnseg eval --package`` can run on a board without torch.
"""

from __future__ import annotations

from pathlib import Path

import click

from fcnseg.errors import UserError


@click.command("train")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Training config JSON (see quantize/train_config.py; quantize/configs/ has the defaults).",
)
@click.option(
    "-o",
    "--output",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory: checkpoints, metrics.jsonl, config.json.",
)
@click.option("--epochs", type=click.IntRange(min=0), help="Override the main phase's epochs.")
@click.option("--resume", is_flag=True, help="Continue the run in RUN_DIR from its last epoch.")
@click.option(
    "--float", "float_only", is_flag=True, help="Train only the float twin (no quantization)."
)
@click.option("--seed", type=int, help="Override the config's seed.")
@click.option("--threads", type=click.IntRange(min=1), help="Override torch's thread count.")
@click.option("--no-progress", is_flag=True, help="No progress bar (epoch lines only).")
def train(
    config_path: Path,
    run_dir: Path,
    epochs: int | None,
    resume: bool,
    float_only: bool,
    seed: int | None,
    threads: int | None,
    no_progress: bool,
) -> None:
    """Train an FCN (QAT, after an optional float-twin phase; or float only with --float)."""
    from fcnseg.quantize.train import run_training
    from fcnseg.quantize.train_config import TrainConfig

    cfg = TrainConfig.load(config_path)
    overrides = {k: v for k, v in {"seed": seed, "threads": threads}.items() if v is not None}
    cfg = cfg.replace(**overrides)
    summaries = run_training(
        cfg, run_dir, resume=resume, float_only=float_only, epochs=epochs, progress=not no_progress
    )
    for summary in summaries:
        click.echo(
            f"{summary['phase']}: best val mean IU {100 * summary['best_mean_iu']:.2f} "
            f"-> {summary['best']}"
        )


@click.command("eval")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A .safetensors checkpoint (with its .json sidecar).",
)
@click.option(
    "--package",
    type=click.Path(file_okay=False, path_type=Path),
    help="A deployment package folder (runs on the host runtime, no torch needed).",
)
@click.option(
    "--data",
    default="synthetic",
    show_default=True,
    help="synthetic | voc:PATH | cityscapes:PATH",
)
@click.option("--split", default="test", show_default=True, help="Dataset split.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N images.")
@click.option(
    "--size",
    nargs=2,
    type=click.IntRange(min=1),
    default=(256, 256),
    show_default=True,
    help="Synthetic scene size H W.",
)
@click.option("--length", type=click.IntRange(min=1), help="Synthetic split length.")
@click.option("--classes", "per_class", is_flag=True, help="Also print per-class acc. and IU.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the metrics to this JSON file.",
)
@click.option(
    "--backend",
    type=click.Choice(["sim", "pynq"]),
    default="sim",
    show_default=True,
    help="Host backend for --package.",
)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
def evaluate(
    checkpoint: Path | None,
    package: Path | None,
    data: str,
    split: str,
    limit: int | None,
    size: tuple[int, int],
    length: int | None,
    per_class: bool,
    json_path: Path | None,
    backend: str,
    threads: int,
) -> None:
    """Print the FCN metrics (pixel acc., mean acc., mean IU, f.w. IU) of a model on a dataset."""
    import json

    from fcnseg.quantize.data.spec import open_dataset
    from fcnseg.quantize.metrics import format_table, jsonable

    if (checkpoint is None) == (package is None):
        raise UserError("give exactly one of --checkpoint and --package")
    dataset = open_dataset(data, split, size=tuple(size), length=length)
    if checkpoint is not None:
        result, source = _evaluate_checkpoint(checkpoint, dataset, limit, threads)
    else:
        result, source = _evaluate_package(package, dataset, limit, backend)
    click.echo(
        f"{source} on {data} [{split}], {result['images']} images, {result['pixels']} pixels"
    )
    click.echo(format_table(result, dataset.classes if per_class else None))
    if json_path is not None:
        record = {"source": source, "data": data, "split": split, **result}
        json_path.write_text(json.dumps(jsonable(record), indent=2) + "\n")


def _evaluate_checkpoint(checkpoint: Path, dataset, limit: int | None, threads: int):
    import torch

    from fcnseg.quantize.evaluate import evaluate as evaluate_model
    from fcnseg.quantize.models.io import load_checkpoint

    torch.set_num_threads(threads)
    model, meta = load_checkpoint(checkpoint)
    if model.cfg.num_classes != len(dataset.classes):
        raise UserError(
            f"{checkpoint} predicts {model.cfg.num_classes} classes, the dataset has "
            f"{len(dataset.classes)}"
        )
    kind = f"{model.cfg.weight_bits}-bit" if model.cfg.quantized else "float"
    result = evaluate_model(model, dataset, limit=limit, progress=True)
    return result, f"{checkpoint} ({model.cfg.arch}, {kind})"


def _evaluate_package(package: Path, dataset, limit: int | None, backend: str):
    """Score a deployment package through the host runtime (numpy only with the sim backend)."""
    try:
        from fcnseg.host import Segmenter
    except ImportError as error:  # pragma: no cover - the host stage ships with fcnseg
        raise UserError(f"package evaluation needs fcnseg.host.Segmenter ({error})") from error
    from fcnseg.quantize.metrics import ConfusionMatrix

    segmenter = Segmenter.load(package, backend=backend)
    classes = segmenter.classes
    if classes is not None and len(classes) != len(dataset.classes):
        raise UserError(
            f"{package} predicts {len(classes)} classes, the dataset has {len(dataset.classes)}"
        )
    count = len(dataset) if limit is None else min(limit, len(dataset))
    matrix = ConfusionMatrix(len(dataset.classes))
    for index in range(count):
        image, label = dataset[index]
        matrix.update(label, segmenter(image))
    result = matrix.scores()
    result["images"] = count
    result["pixels"] = int(matrix.matrix.sum())
    return result, f"{package} (package, {backend} backend)"


@click.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--tile",
    nargs=2,
    type=int,
    default=(256, 256),
    show_default=True,
    metavar="H W",
    help="Fixed input tile of the accelerator (multiples of 32).",
)
@click.option(
    "-o",
    "--output",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Export folder (replaced atomically): model.onnx, model_qcdq.onnx, model.json.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="torch threads (tracing gains nothing from more; shared cores lose a lot).",
)
def export(checkpoint: Path, tile: tuple[int, int], out_dir: Path, threads: int) -> None:
    """Export CHECKPOINT (.safetensors + .json) to QONNX at a fixed tile size, with a model card."""
    import torch

    from fcnseg.quantize.export import check_tile, export_checkpoint

    torch.set_num_threads(threads)
    tile = check_tile(tile)
    if not checkpoint.is_file():
        raise UserError(f"checkpoint not found: {checkpoint}")
    card = export_checkpoint(checkpoint, tile, out_dir)
    click.echo(
        f"{out_dir}: {card['arch']} {'quantized' if card['quantized'] else 'float'}, tile "
        f"{tile[0]}x{tile[1]} -> scores {card['output']['shape'][2:]} at stride "
        f"{card['output_stride']}, receptive field {card['receptive_field']} px, "
        f"{card['export_seconds']:.1f} s"
    )
