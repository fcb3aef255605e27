"""Click commands of the training stage: ``fcnseg train``, ``fcnseg export``, ``fcnseg eval``.

Heavy libraries (torch, brevitas, onnx) are imported inside the command functions only, so
``fcnseg --help`` stays fast and ``fcnseg eval --package`` can run on a board without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fcnseg.errors import UserError
from fcnseg.host.farm.options import tls_options

if TYPE_CHECKING:
    from fcnseg.quantize.data.base import SegmentationDataset


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
    help="Run directory: checkpoints, metrics.jsonl, config.json, train.log.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=0),
    help="The main phase's epochs: QAT, or the float phase with --float or a float model.",
)
@click.option(
    "--float-epochs",
    type=click.IntRange(min=0),
    help="Epochs of the float-twin phase before QAT (0 = none: QAT from scratch).",
)
@click.option(
    "--steps-per-epoch",
    type=click.IntRange(min=1),
    help="Cap on optimizer steps per epoch, every phase (default: the whole training split).",
)
@click.option(
    "--val-images",
    type=click.IntRange(min=1),
    help="Cap on validation images per epoch (default: the whole validation split).",
)
@click.option("--resume", is_flag=True, help="Continue the run in RUN_DIR from its last epoch.")
@click.option(
    "--finetune",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Go on training this quantized checkpoint (weights and learned scales, no calibration) "
    "for --epochs of QAT, e.g. before `fcnseg swap-weights`; its model must be the config's.",
)
@click.option(
    "--float", "float_only", is_flag=True, help="Train only the float twin (no quantization)."
)
@click.option("--seed", type=int, help="Override the config's seed.")
@click.option("--threads", type=click.IntRange(min=1), help="Override torch's thread count.")
@click.option(
    "--no-progress",
    is_flag=True,
    help="No progress bar (bars show only when stderr is a terminal anyway).",
)
def train(
    config_path: Path,
    run_dir: Path,
    epochs: int | None,
    float_epochs: int | None,
    steps_per_epoch: int | None,
    val_images: int | None,
    resume: bool,
    finetune: Path | None,
    float_only: bool,
    seed: int | None,
    threads: int | None,
    no_progress: bool,
) -> None:
    """Train an FCN (QAT, after an optional float-twin phase; or float only with --float).

    Epoch lines go to stdout and RUN_DIR/train.log. After Ctrl-C the epochs finished so far are
    kept (each epoch's checkpoints are written as one step) and the command to go on is printed.
    """
    from fcnseg.quantize.console import quiet_warnings

    log_path = run_dir / "train.log"
    with quiet_warnings(log_path):
        from fcnseg.quantize.train_classifier import is_classification_config

        if is_classification_config(config_path):
            if finetune is not None:
                raise UserError(f"{config_path}: --finetune is for the FCN configs")
            _train_classifier(config_path, run_dir, epochs, seed, threads, _run_log(log_path))
            return
        from fcnseg.quantize.train import plan, run_status, run_training
        from fcnseg.quantize.train_config import TrainConfig

        overrides = {
            "seed": seed,
            "threads": threads,
            "float_epochs": float_epochs,
            "steps_per_epoch": steps_per_epoch,
            "val_images": val_images,
        }
        cfg = TrainConfig.load(config_path)
        cfg = cfg.replace(**{k: v for k, v in overrides.items() if v is not None})
        phases = plan(cfg, run_dir, float_only, epochs, finetune)
        try:
            summaries = run_training(
                cfg,
                run_dir,
                resume=resume,
                float_only=float_only,
                epochs=epochs,
                log=_run_log(log_path),
                progress=not no_progress,
                finetune=finetune,
            )
        except KeyboardInterrupt:
            click.echo(f"fcnseg: training interrupted; {run_dir} holds:", err=True)
            for line in run_status(phases):
                click.echo(f"  {line}", err=True)
            command = _resume_command(click.get_current_context())
            click.echo(f"go on with: {command}", err=True)
            raise SystemExit(130) from None
    for summary in summaries:
        click.echo(
            f"{summary['phase']}: best val mean IU {100 * summary['best_mean_iu']:.2f} "
            f"-> {summary['best']}"
        )


def _train_classifier(
    config_path: Path,
    run_dir: Path,
    epochs: int | None,
    seed: int | None,
    threads: int | None,
    log: Callable[[str], None],
) -> None:
    """``fcnseg train`` of a ``"task": "classification"`` config (quantize/train_classifier.py):
    one QAT phase; --epochs, --seed and --threads override the config."""
    from fcnseg.quantize.train_classifier import ClassifierTrainConfig, run_classifier_training

    cfg = ClassifierTrainConfig.load(config_path)
    overrides = {"epochs": epochs, "seed": seed, "threads": threads}
    cfg = cfg.replace(**{k: v for k, v in overrides.items() if v is not None})
    summary = run_classifier_training(cfg, run_dir, log=log)
    click.echo(
        f"classification: best val accuracy {100 * summary['val']:.1f}%, test "
        f"{100 * summary['test']:.1f}% -> {summary['best']}"
    )


def _run_log(path: Path) -> Callable[[str], None]:
    """A log function: each line to stdout (above any progress bar) and appended to ``path``."""
    import sys

    from tqdm import tqdm

    def log(line: str) -> None:
        tqdm.write(line)
        sys.stdout.flush()  # a piped stdout (`| tee`) gets each line when it is written
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            handle.write(line + "\n")

    return log


def _resume_command(ctx: click.Context) -> str:
    """The ``fcnseg train`` command line that continues this run: same options, plus --resume."""
    import shlex

    words = ["fcnseg", "train"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if not isinstance(param, click.Option) or value is None or value is False:
            continue
        flag = max(param.opts, key=len)
        if param.is_flag:
            words.append(flag)
        else:
            words += [flag, str(value)]
    if not ctx.params.get("resume"):
        words.append("--resume")
    return shlex.join(words)


#: the split ``fcnseg eval`` scores by default: the labelled held-out split each dataset
#: publishes (VOC and Cityscapes release no labels for ``test``; the synthetic scenes have one)
DEFAULT_EVAL_SPLIT = {"synthetic": "test", "voc": "val", "cityscapes": "val"}

#: the host's tiling options as the eval CLI spells them (Segmenter parameter -> flag)
PACKAGE_FLAGS = {"shift_stitch": "--shift-stitch", "overlap": "--overlap"}


@click.command("eval")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A .safetensors checkpoint (with its .json sidecar); needs the 'train' extra.",
)
@click.option(
    "--package",
    type=click.Path(file_okay=False, path_type=Path),
    help="A deployment package folder (host runtime, no torch) [default: the shipped package].",
)
@click.option(
    "--data",
    default="synthetic",
    show_default=True,
    help="synthetic | voc:PATH | cityscapes:PATH",
)
@click.option(
    "--split",
    help="Dataset split [default: test for synthetic, val for VOC and Cityscapes].",
)
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
@click.option(
    "--shift-stitch",
    type=click.Choice(["1", "2", "4"]),
    help="Package only: shift-and-stitch factor (2, 4: finer score maps at 4x, 16x the tiles).",
)
@click.option(
    "--overlap",
    type=click.IntRange(min=0),
    help="Package only: tile overlap in px [default: the exact overlap; less is faster].",
)
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
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="torch threads for --checkpoint.",
)
@click.option(
    "--local-workers",
    type=click.IntRange(min=1),
    default=None,
    help="Package only: score on a Dask cluster of N worker processes on this machine (one "
    "accelerator each); the same confusion matrix as here. Needs fcnseg[cluster].",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Package only: score on the Dask cluster at ADDRESS (workers: `dask worker ADDRESS "
    "--nthreads 1 --resources FPGA=1`, each seeing the package and the dataset at the same "
    "paths). Needs fcnseg[cluster].",
)
@tls_options
def evaluate(
    checkpoint: Path | None,
    package: Path | None,
    data: str,
    split: str | None,
    limit: int | None,
    size: tuple[int, int],
    length: int | None,
    shift_stitch: str | None,
    overlap: int | None,
    per_class: bool,
    json_path: Path | None,
    backend: str,
    threads: int,
    **cluster: Any,
) -> None:
    """Print the FCN metrics (pixel acc., mean acc., mean IU, f.w. IU) of a model on a dataset.

    Without --checkpoint or --package it scores the shipped deployment package, as `fcnseg
    segment` uses it. --shift-stitch and --overlap measure what the host's options cost or buy.
    --local-workers / --scheduler score a package on a Dask cluster, each worker with its own
    accelerator: the confusion matrix (in --json) is the one a local run computes.
    """
    import importlib

    from fcnseg.quantize.console import quiet_warnings

    if checkpoint is not None and package is not None:
        raise UserError("give one of --checkpoint and --package, not both")
    if checkpoint is not None and (shift_stitch is not None or overlap is not None):
        raise UserError(
            "--shift-stitch and --overlap are options of the host's tiling: they apply to "
            "--package (a checkpoint runs each whole image in one pass)"
        )
    farm = _cluster_options(checkpoint, cluster)
    with quiet_warnings():
        if checkpoint is not None:  # needs torch: a missing extra is said before data is read
            importlib.import_module("fcnseg.quantize.evaluate")
        dataset, split = _open_eval_dataset(data, split, tuple(size), length)
        if checkpoint is not None:
            result, source = _evaluate_checkpoint(checkpoint, dataset, limit, threads)
            options: dict[str, Any] = {}
        else:
            options = {"shift_stitch": int(shift_stitch or 1), "overlap": overlap}
            where = {"data": data, "split": split, "size": tuple(size), "length": length}
            result, source = _evaluate_package(
                package, dataset, limit, backend, options, farm=farm and {**farm, **where}
            )
    click.echo(
        f"{source} on {data} [{split}], {result['images']} images, {result['pixels']} pixels"
    )
    _print_and_save(result, dataset, per_class, json_path, source, data, split, options)


def _cluster_options(checkpoint: Path | None, cluster: dict[str, Any]) -> dict[str, Any]:
    """The cluster to score on (``local_workers``, ``scheduler``, ``security``), or {} for this
    process; a combination that cannot work is one line (before any data is read)."""
    local_workers, scheduler = cluster["local_workers"], cluster["scheduler"]
    if local_workers is None and scheduler is None:
        given = [f"--{k.replace('_', '-')}" for k in ("tls_ca_file", "tls_cert", "tls_key")
                 if cluster[k]]  # fmt: skip
        if given:
            raise UserError(f"{', '.join(given)}: only for a tls:// --scheduler")
        return {}
    if local_workers is not None and scheduler is not None:
        raise UserError("--local-workers and --scheduler exclude each other: choose one cluster")
    if checkpoint is not None:
        flag = "--local-workers" if local_workers is not None else "--scheduler"
        raise UserError(
            f"{flag} scores a --package on a cluster (each worker's accelerator); a "
            "--checkpoint is scored here, with torch"
        )
    from fcnseg.host.farm.client import security_of

    security = security_of(scheduler, cluster)
    return {"local_workers": local_workers, "scheduler": scheduler, "security": security}


def _open_eval_dataset(
    data: str, split: str | None, size: tuple[int, int], length: int | None
) -> tuple[SegmentationDataset, str]:
    """The dataset to score and the split used (the dataset's labelled held-out one by default).

    The synthetic scenes take their textures from scikit-image, which a board does not have:
    that is one line up front, pointing at the real-data folders that work there.
    """
    import importlib.util

    from fcnseg.quantize.data import spec
    from fcnseg.quantize.data.synthetic import SyntheticScenes

    if split is None:
        split = DEFAULT_EVAL_SPLIT.get(data.partition(":")[0], "val")
    dataset = spec.open_dataset(data, split, size=size, length=length)
    if isinstance(dataset, SyntheticScenes) and importlib.util.find_spec("skimage") is None:
        raise UserError(
            "the synthetic scenes need scikit-image, which this environment lacks (pip install "
            "scikit-image, or fcnseg[train]); on a board evaluate a dataset folder: "
            "--data voc:PATH or --data cityscapes:PATH"
        )
    return dataset, split


def _print_and_save(
    result: dict[str, Any],
    dataset: SegmentationDataset,
    per_class: bool,
    json_path: Path | None,
    source: str,
    data: str,
    split: str,
    options: dict[str, Any],
) -> None:
    """Print the metrics table; with ``json_path`` also write them (atomically) as JSON."""
    import json

    from fcnseg.atomic import atomic_write_text
    from fcnseg.quantize.metrics import format_table, jsonable

    click.echo(format_table(result, dataset.classes if per_class else None))
    if json_path is not None:
        record = {"source": source, "data": data, "split": split, **options, **result}
        atomic_write_text(json_path, json.dumps(jsonable(record), indent=2) + "\n")


def _evaluate_checkpoint(
    checkpoint: Path, dataset: SegmentationDataset, limit: int | None, threads: int
) -> tuple[dict[str, Any], str]:
    """Score a checkpoint with torch (the 'train' extra), as training validation does."""
    import torch

    from fcnseg.quantize.console import progress_wanted
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
    result = evaluate_model(model, dataset, limit=limit, progress=progress_wanted(), confusion=True)
    return result, f"{checkpoint} ({model.cfg.arch}, {kind})"


def _evaluate_package(
    package: Path | None,
    dataset: SegmentationDataset,
    limit: int | None,
    backend: str,
    options: dict[str, Any],
    *,
    farm: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], str]:
    """Score a deployment package through the host runtime (numpy only with the sim backend).

    ``package`` None is the shipped default package; ``options`` are Segmenter tiling options.
    With ``farm`` (:func:`_cluster_options` and the dataset's spec) the images are scored on
    the cluster (:mod:`fcnseg.quantize.farm_eval`); this process only checks the package (on
    the simulator: the client need not be a board) and adds the workers' matrices up.
    """
    from tqdm import tqdm

    from fcnseg.errors import ParameterError
    from fcnseg.host import Segmenter
    from fcnseg.quantize.console import progress_wanted
    from fcnseg.quantize.metrics import ConfusionMatrix

    try:
        segmenter = Segmenter.load(package, backend="sim" if farm else backend, **options)
    except ParameterError as error:
        raise UserError(error.spelled(PACKAGE_FLAGS)) from error
    name = str(package) if package is not None else str(segmenter.package.path)
    kind = "package" if package is not None else "shipped default package"
    classes = segmenter.classes
    if classes is not None and len(classes) != len(dataset.classes):
        raise UserError(
            f"{name} predicts {len(classes)} classes, the dataset has {len(dataset.classes)}"
        )
    count = len(dataset) if limit is None else min(limit, len(dataset))
    matrix = ConfusionMatrix(len(dataset.classes))
    if farm:
        _score_on_cluster(matrix, package, backend, options, farm, count)
    else:
        bar = tqdm(
            range(count), desc="eval", unit="img", leave=False, disable=not progress_wanted()
        )
        for index in bar:
            image, label = dataset[index]
            matrix.update(label, segmenter(image))
    result = matrix.scores()
    result["images"] = count
    result["pixels"] = int(matrix.matrix.sum())
    result["confusion"] = matrix.matrix.tolist()
    tiling = ", ".join(
        f"{PACKAGE_FLAGS[k]} {v}" for k, v in options.items() if v is not None and v != 1
    )
    return result, f"{name} ({kind}, {backend} backend{', ' + tiling if tiling else ''})"


def _score_on_cluster(
    matrix: Any,
    package: Path | None,
    backend: str,
    options: dict[str, Any],
    farm: dict[str, Any],
    count: int,
) -> None:
    """Add the cluster's confusion matrix of images ``0 .. count-1`` to ``matrix`` and say each
    worker's share; Ctrl-C is exit 130 (what has not started is cancelled)."""
    import os

    from fcnseg.quantize.console import progress_wanted
    from fcnseg.quantize.farm_eval import EvalSpec, absolute_data, evaluate_on_cluster

    spec = EvalSpec(
        package=os.path.abspath(package) if package is not None else None,
        backend=backend,
        data=absolute_data(farm["data"]),
        split=farm["split"],
        size=farm["size"],
        length=farm["length"],
        shift_stitch=options["shift_stitch"],
        overlap=options["overlap"],
    )

    def say(line: str) -> None:
        click.echo(line, err=True)

    try:
        score = evaluate_on_cluster(
            spec,
            count,
            matrix.num_classes,
            local_workers=farm["local_workers"],
            scheduler=farm["scheduler"],
            security=farm["security"],
            say=say,
            progress=progress_wanted(),
        )
    except KeyboardInterrupt:
        click.echo("fcnseg: eval interrupted: no metrics (the cluster's tasks were cancelled)",
                   err=True)  # fmt: skip
        raise SystemExit(130) from None
    matrix.matrix += score.matrix
    for line in score.shares():
        say(line)


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
    """Export CHECKPOINT (.safetensors + .json) to QONNX at a fixed tile size, with a model card.

    Prints what was exported and the time taken: the export itself and the whole command
    (which includes loading torch and Brevitas).
    """
    import time

    from fcnseg.quantize.console import quiet_warnings

    started = time.perf_counter()
    with quiet_warnings():
        import torch

        from fcnseg.quantize.export import check_tile, export_checkpoint, tiling_warning

        torch.set_num_threads(threads)
        tile = check_tile(tile)
        if not checkpoint.is_file():
            raise UserError(f"checkpoint not found: {checkpoint}")
        card = export_checkpoint(checkpoint, tile, out_dir)
    click.echo(
        f"{out_dir}: {card['arch']} {'quantized' if card['quantized'] else 'float'}, tile "
        f"{tile[0]}x{tile[1]} -> scores {card['output']['shape'][2:]} at stride "
        f"{card['output_stride']}, receptive field {card['receptive_field']} px; export "
        f"{card['export_seconds']:.1f} s, wall time {time.perf_counter() - started:.1f} s"
    )
    warning = tiling_warning(card)
    if warning:
        click.echo(f"warning: {warning}", err=True)
