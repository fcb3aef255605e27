"""Training: float and quantization-aware (QAT), seeded, resumable, validated every epoch.

A run directory holds, per phase (the float-twin phase lives in ``RUN/float/``)::

    config.json                 the resolved TrainConfig (what reproduces the run)
    metrics.jsonl               one JSON line per epoch: loss, lr, time, validation metrics
    best.safetensors/.json      the checkpoint with the highest validation mean IU so far
    last.safetensors/.json      the latest epoch's checkpoint (``epoch``/``step`` in the JSON)
    last.optim.safetensors/.json  its optimizer state (for ``--resume``)

Determinism: torch is seeded from ``(seed, epoch)`` at every epoch start, the epoch's sample order
from ``numpy.random.default_rng([seed, epoch])`` and each sample's augmentation from
``default_rng([seed, epoch, index])``, so a run resumed at an epoch boundary sees exactly the
batches the uninterrupted run would have seen.

Quantized phases start by copying the float twin's weights (``init_from`` or the run's own float
phase) and calibrating the activation scales on a few training batches (:mod:`.calibrate`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fcnseg.errors import UserError
from fcnseg.quantize.calibrate import calibrate, init_from_float
from fcnseg.quantize.data.augment import Augment
from fcnseg.quantize.data.base import SegmentationDataset
from fcnseg.quantize.data.palette import IGNORE_INDEX
from fcnseg.quantize.data.spec import open_dataset
from fcnseg.quantize.evaluate import evaluate, to_tensor, upsample_logits
from fcnseg.quantize.metrics import jsonable
from fcnseg.quantize.train_config import TrainConfig
from fcnseg.quantize.train_state import load_optimizer, save_optimizer

Log = Callable[[str], None]

#: the "epoch" whose sample order and augmentation the calibration batches use
CALIBRATION_EPOCH = 999_999


@dataclass(frozen=True)
class Phase:
    """One training phase: a model config, a length, a learning rate, where it writes."""

    name: str  # "float" or "qat"
    run_dir: Path
    model: dict[str, Any]
    epochs: int
    lr: float
    init_from: Path | None


class CachedDataset:
    """Keeps every item of a dataset in memory once read (for rendered synthetic scenes)."""

    def __init__(self, dataset: SegmentationDataset) -> None:
        self.dataset = dataset
        self.classes = dataset.classes
        self.palette = dataset.palette
        self._items: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index not in self._items:
            self._items[index] = self.dataset[index]
        return self._items[index]


def open_datasets(cfg: TrainConfig) -> tuple[SegmentationDataset, SegmentationDataset]:
    """The training and validation datasets the config names.

    Rendered synthetic scenes are kept in memory (``cache_train``; validation scenes always), so
    later epochs and phases do not render them again.
    """
    train = open_dataset(cfg.dataset, cfg.train_split, cfg.scene_size, cfg.train_length)
    val = open_dataset(cfg.dataset, cfg.val_split, cfg.scene_size, cfg.val_length)
    if cfg.dataset == "synthetic":
        val = CachedDataset(val)
        if cfg.cache_train:
            train = CachedDataset(train)
    return train, val


def model_config(cfg: TrainConfig, fields: dict[str, Any], num_classes: int):
    """A ``ModelConfig`` from the config's model fields, with the dataset's class count."""
    from fcnseg.quantize.models import ModelConfig

    fields = dict(fields)
    if fields.setdefault("num_classes", num_classes) != num_classes:
        raise UserError(
            f"config model.num_classes={fields['num_classes']} but {cfg.dataset} has {num_classes}"
        )
    try:
        return ModelConfig.from_dict(fields)
    except (TypeError, ValueError) as error:
        raise UserError(f"bad model config: {error}") from error


def batches(
    dataset: SegmentationDataset, cfg: TrainConfig, epoch: int, steps: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` augmented batches ``(images NCHW float 0..255, labels NHW int64)`` of ``epoch``."""
    augment = Augment(cfg.crop, cfg.scale_range, cfg.flip)
    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(dataset))
    for step in range(steps):
        images, labels = [], []
        for position in range(step * cfg.batch_size, (step + 1) * cfg.batch_size):
            index = int(order[position % len(order)])
            rng = np.random.default_rng([cfg.seed, epoch, index])
            image, label = augment(*dataset[index], rng)
            images.append(image)
            labels.append(label)
        yield to_tensor(np.stack(images)), torch.from_numpy(np.stack(labels)).long()


def steps_per_epoch(cfg: TrainConfig, dataset: SegmentationDataset) -> int:
    steps = max(1, len(dataset) // cfg.batch_size)
    return min(steps, cfg.steps_per_epoch) if cfg.steps_per_epoch else steps


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from ``peak`` to 0 at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """AdamW; weight decay on conv weights only (not BN, biases or quantizer scales)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim == 4]
    ids = {id(p) for p in decay}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=lr,
    )


def segmentation_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pixel-wise cross entropy of the bilinearly upsampled scores, ignoring label 255."""
    logits = upsample_logits(scores, tuple(labels.shape[1:]))
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as file:
        file.write(json.dumps(jsonable(record)) + "\n")


def train_phase(
    cfg: TrainConfig,
    phase: Phase,
    resume: bool,
    log: Log,
    progress: bool = True,
    datasets: tuple[SegmentationDataset, SegmentationDataset] | None = None,
) -> dict[str, Any]:
    """Train one phase into ``phase.run_dir``; return its summary (best metrics, paths, times).

    ``datasets`` (train, val) default to :func:`open_datasets`; a multi-phase run passes the same
    pair to every phase.
    """
    from tqdm import tqdm

    from fcnseg.quantize.models import build_model
    from fcnseg.quantize.models.io import load_checkpoint, save_checkpoint

    torch.set_num_threads(cfg.threads)
    run_dir = phase.run_dir
    last = run_dir / "last.safetensors"
    train_set, val_set = open_datasets(cfg) if datasets is None else datasets
    mcfg = model_config(cfg, phase.model, len(train_set.classes))
    steps = steps_per_epoch(cfg, train_set)
    total_steps = steps * phase.epochs

    epoch = step = 0
    best = -math.inf
    if resume and last.is_file():
        model, meta = load_checkpoint(last)
        if meta["model_config"] != mcfg.to_dict():
            raise UserError(f"cannot resume {run_dir}: its model config differs from the config")
        optimizer = make_optimizer(model, cfg, phase.lr)
        load_optimizer(last.with_suffix(""), optimizer)
        epoch, step = int(meta["epoch"]), int(meta["step"])
        best = meta.get("best_mean_iu") or -math.inf
        log(f"[{phase.name}] resuming {run_dir} at epoch {epoch}, step {step}")
    else:
        if last.is_file():
            raise UserError(f"{run_dir} already holds a run; pass --resume or choose another -o")
        torch.manual_seed(cfg.seed)
        model = build_model(mcfg)
        if phase.init_from is not None:
            init_from_float(model, phase.init_from)
            log(f"[{phase.name}] initialised from float twin {phase.init_from}")
        if mcfg.quantized and cfg.calibration_batches:
            torch.manual_seed(cfg.seed)
            calibration = (
                x for x, _ in batches(train_set, cfg, CALIBRATION_EPOCH, cfg.calibration_batches)
            )
            count = calibrate(model, calibration)
            log(f"[{phase.name}] calibrated activation scales on {count} batches")
        optimizer = make_optimizer(model, cfg, phase.lr)
        run_dir.mkdir(parents=True, exist_ok=True)
    cfg.replace(model=mcfg.to_dict(), epochs=phase.epochs, lr=phase.lr).save(
        run_dir / "config.json"
    )

    meta_base = {
        "classes": list(train_set.classes),
        "palette": np.asarray(train_set.palette).tolist(),
        "run": cfg.name,
        "phase": phase.name,
        "dataset": cfg.dataset,
    }
    summary: dict[str, Any] = {"phase": phase.name, "run_dir": str(run_dir), "epochs": []}
    while epoch < phase.epochs:
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        model.train()
        started = time.monotonic()
        losses = []
        bar = tqdm(
            batches(train_set, cfg, epoch, steps),
            total=steps,
            desc=f"{phase.name} {epoch + 1}/{phase.epochs}",
            unit="batch",
            disable=not progress,
            leave=False,
        )
        for x, y in bar:
            lr = learning_rate(step, total_steps, phase.lr, cfg.warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = segmentation_loss(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.2g}")
        train_time = time.monotonic() - started
        val = evaluate(model, val_set, limit=cfg.val_images)
        epoch += 1
        val_summary = {k: val[k] for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")}
        record = {
            "phase": phase.name,
            "epoch": epoch,
            "step": step,
            "loss": float(np.mean(losses)),
            "first_loss": losses[0],
            "last_loss": losses[-1],
            "lr": lr,
            "train_seconds": round(train_time, 2),
            "val_seconds": round(time.monotonic() - started - train_time, 2),
            "val": {**val_summary, "class_iu": val["class_iu"]},
        }
        _append_jsonl(run_dir / "metrics.jsonl", record)
        summary["epochs"].append(record)
        improved = val["mean_iu"] > best
        best = max(best, val["mean_iu"])
        meta = {
            **meta_base,
            "epoch": epoch,
            "step": step,
            "best_mean_iu": best,
            "metrics": {"split": cfg.val_split, "images": val["images"], **val_summary},
        }
        if improved:
            save_checkpoint(run_dir / "best.safetensors", model, mcfg, jsonable(meta))
        save_checkpoint(last, model, mcfg, jsonable(meta))
        save_optimizer(last.with_suffix(""), optimizer)
        log(
            f"[{phase.name}] epoch {epoch}/{phase.epochs} step {step} loss {record['loss']:.4f} "
            f"val mIoU {100 * val['mean_iu']:.2f} pixel acc {100 * val['pixel_acc']:.2f} "
            f"({train_time:.0f}s){' *best*' if improved else ''}"
        )
    summary["best_mean_iu"] = best
    summary["best"] = str(run_dir / "best.safetensors")
    return summary


def plan(
    cfg: TrainConfig, run_dir: Path, float_only: bool = False, epochs: int | None = None
) -> list[Phase]:
    """The phases a run consists of (see :mod:`.train_config`)."""
    model = dict(cfg.model)
    main_epochs = cfg.epochs if epochs is None else epochs
    if float_only:
        float_epochs = (
            main_epochs if epochs is not None or not cfg.float_epochs else cfg.float_epochs
        )
        return [
            Phase("float", run_dir, {**model, "quantized": False}, float_epochs, cfg.float_lr, None)
        ]
    init_from = Path(cfg.init_from) if cfg.init_from else None
    if not cfg.quantized:
        return [Phase("float", run_dir, model, main_epochs, cfg.lr, init_from)]
    phases = []
    if cfg.float_epochs > 0 and init_from is None:
        float_dir = run_dir / "float"
        float_model = {**model, "quantized": False}
        phases.append(Phase("float", float_dir, float_model, cfg.float_epochs, cfg.float_lr, None))
        init_from = float_dir / "best.safetensors"
    phases.append(Phase("qat", run_dir, model, main_epochs, cfg.lr, init_from))
    return phases


def run_training(
    cfg: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    float_only: bool = False,
    epochs: int | None = None,
    log: Log | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run every phase of ``cfg`` into ``run_dir``; return one summary per phase."""
    if log is None:
        from tqdm import tqdm

        log = tqdm.write
    run_dir = Path(run_dir)
    datasets = open_datasets(cfg)
    summaries = []
    for phase in plan(cfg, run_dir, float_only, epochs):
        summaries.append(train_phase(cfg, phase, resume, log, progress, datasets))
    return summaries
