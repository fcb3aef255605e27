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
A fine-tuning run (``--finetune CHECKPOINT``, e.g. one more epoch of the shipped model before
``fcnseg swap-weights``) is one QAT phase that starts from a quantized checkpoint as it is:
weights and learned scales, no calibration, so the bit widths a bitfile fixes stay the same.

Interruptions: the end-of-epoch writes (metrics line, both checkpoints, optimizer state) run with
SIGINT deferred, so Ctrl-C never leaves a ``last`` checkpoint whose optimizer state belongs to
another epoch; :func:`run_status` then says what each phase left behind, for ``--resume``.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fcnseg.errors import UserError
from fcnseg.quantize.calibrate import calibrate, init_from_float
from fcnseg.quantize.console import progress_wanted
from fcnseg.quantize.data.augment import Augment
from fcnseg.quantize.data.base import SegmentationDataset
from fcnseg.quantize.data.palette import IGNORE_INDEX
from fcnseg.quantize.data.spec import open_dataset
from fcnseg.quantize.evaluate import evaluate, to_tensor, upsample_logits
from fcnseg.quantize.metrics import jsonable
from fcnseg.quantize.train_config import TrainConfig
from fcnseg.quantize.train_state import load_optimizer, save_optimizer

if TYPE_CHECKING:
    from fcnseg.quantize.models import ModelConfig

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
    #: a quantized checkpoint to go on from (``fcnseg train --finetune``): its weights and learned
    #: activation scales, no calibration; ``init_from`` is then None
    start_from: Path | None = None


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


@contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C) until the block is done, then raise ``KeyboardInterrupt``.

    Only the main thread can handle signals; elsewhere the block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


#: config fields a resumed phase may change: they do not alter what is computed
RESUME_MAY_CHANGE = frozenset({"threads"})


def check_resumable(saved_path: Path, resolved: TrainConfig) -> None:
    """Refuse to resume a phase whose saved ``config.json`` differs from the config given now.

    Different epochs, steps per epoch, data or learning rates would continue another run's
    schedule silently; the message names each differing field with both values.
    """
    if not saved_path.is_file():
        return
    saved = TrainConfig.load(saved_path).to_dict()
    given = resolved.to_dict()
    differ = sorted(k for k in saved.keys() | given.keys() if saved.get(k) != given.get(k))
    differ = [k for k in differ if k not in RESUME_MAY_CHANGE]
    if differ:
        changes = ", ".join(f"{k} {saved.get(k)!r} -> {given.get(k)!r}" for k in differ)
        raise UserError(
            f"cannot resume {saved_path.parent}: its config differs ({changes}); resume with "
            "the options of the interrupted run"
        )


@dataclass
class PhaseRun:
    """The mutable state of a phase being trained: model, optimizer and counters."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    epoch: int = 0
    step: int = 0
    best: float = -math.inf


def _start_phase(
    cfg: TrainConfig,
    phase: Phase,
    mcfg: ModelConfig,
    train_set: SegmentationDataset,
    resume: bool,
    log: Log,
) -> PhaseRun:
    """A :class:`PhaseRun` resumed from ``phase.run_dir/last`` or freshly initialised."""
    from fcnseg.quantize.models import build_model
    from fcnseg.quantize.models.io import load_checkpoint

    last = phase.run_dir / "last.safetensors"
    if resume and last.is_file():
        model, meta = load_checkpoint(last)
        if meta["model_config"] != mcfg.to_dict():
            raise UserError(
                f"cannot resume {phase.run_dir}: its model config differs from the config"
            )
        optimizer = make_optimizer(model, cfg, phase.lr)
        load_optimizer(last.with_suffix(""), optimizer)
        state = PhaseRun(model, optimizer, int(meta["epoch"]), int(meta["step"]))
        state.best = meta.get("best_mean_iu") or -math.inf
        log(f"[{phase.name}] resuming {phase.run_dir} at epoch {state.epoch}, step {state.step}")
        return state
    if last.is_file():
        raise UserError(f"{phase.run_dir} already holds a run; pass --resume or choose another -o")
    if phase.start_from is not None:
        model, meta = load_checkpoint(phase.start_from)
        _check_same_model(phase.start_from, meta["model_config"], mcfg.to_dict())
        log(f"[{phase.name}] fine-tuning {phase.start_from} (its weights and learned scales)")
        phase.run_dir.mkdir(parents=True, exist_ok=True)
        return PhaseRun(model, make_optimizer(model, cfg, phase.lr))
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
    phase.run_dir.mkdir(parents=True, exist_ok=True)
    return PhaseRun(model, make_optimizer(model, cfg, phase.lr))


def _train_epoch(
    cfg: TrainConfig,
    phase: Phase,
    state: PhaseRun,
    train_set: SegmentationDataset,
    steps: int,
    progress: bool,
) -> tuple[list[float], float]:
    """One epoch of optimizer steps; returns the batch losses and the last learning rate."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed * 100_003 + state.epoch)
    state.model.train()
    losses: list[float] = []
    lr = phase.lr
    bar = tqdm(
        batches(train_set, cfg, state.epoch, steps),
        total=steps,
        desc=f"{phase.name} {state.epoch + 1}/{phase.epochs}",
        unit="batch",
        disable=not progress_wanted(progress),
        leave=False,
    )
    for x, y in bar:
        lr = learning_rate(state.step, steps * phase.epochs, phase.lr, cfg.warmup_steps)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        loss = segmentation_loss(state.model(x), y)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        state.step += 1
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.2g}")
    return losses, lr


def _save_epoch(
    phase: Phase, state: PhaseRun, mcfg: ModelConfig, record: dict[str, Any], meta: dict[str, Any]
) -> tuple[bool, dict[str, Any]]:
    """Count the epoch, append its metrics record and write its checkpoints.

    Returns whether it is the best epoch so far and the record as written.

    Runs with SIGINT deferred: the metrics line, ``best``, ``last`` and the optimizer state always
    describe the same epoch.
    """
    from fcnseg.quantize.models.io import save_checkpoint

    run_dir = phase.run_dir
    with deferred_interrupt():
        state.epoch += 1
        record = {"phase": phase.name, "epoch": state.epoch, "step": state.step, **record}
        _append_jsonl(run_dir / "metrics.jsonl", record)
        mean_iu = record["val"]["mean_iu"]
        improved = mean_iu > state.best
        state.best = max(state.best, mean_iu)
        meta = {**meta, "epoch": state.epoch, "step": state.step, "best_mean_iu": state.best}
        if improved:
            save_checkpoint(run_dir / "best.safetensors", state.model, mcfg, jsonable(meta))
        last = run_dir / "last.safetensors"
        save_checkpoint(last, state.model, mcfg, jsonable(meta))
        save_optimizer(last.with_suffix(""), state.optimizer)
    return improved, record


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
    pair to every phase. Progress bars show only when ``progress`` and stderr is a terminal.
    """
    torch.set_num_threads(cfg.threads)
    run_dir = phase.run_dir
    train_set, val_set = open_datasets(cfg) if datasets is None else datasets
    mcfg = model_config(cfg, phase.model, len(train_set.classes))
    steps = steps_per_epoch(cfg, train_set)
    resolved = cfg.replace(model=mcfg.to_dict(), epochs=phase.epochs, lr=phase.lr)
    if resume and (run_dir / "last.safetensors").is_file():
        check_resumable(run_dir / "config.json", resolved)
    state = _start_phase(cfg, phase, mcfg, train_set, resume, log)
    resolved.save(run_dir / "config.json")
    meta_base = {
        "classes": list(train_set.classes),
        "palette": np.asarray(train_set.palette).tolist(),
        "run": cfg.name,
        "phase": phase.name,
        "dataset": cfg.dataset,
    }
    summary: dict[str, Any] = {"phase": phase.name, "run_dir": str(run_dir), "epochs": []}
    while state.epoch < phase.epochs:
        started = time.monotonic()
        losses, lr = _train_epoch(cfg, phase, state, train_set, steps, progress)
        train_time = time.monotonic() - started
        val = evaluate(state.model, val_set, limit=cfg.val_images)
        val_summary = {k: val[k] for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")}
        record = {
            "loss": float(np.mean(losses)),
            "first_loss": losses[0],
            "last_loss": losses[-1],
            "lr": lr,
            "train_seconds": round(train_time, 2),
            "val_seconds": round(time.monotonic() - started - train_time, 2),
            "val": {**val_summary, "class_iu": val["class_iu"]},
        }
        meta = {
            **meta_base,
            "metrics": {"split": cfg.val_split, "images": val["images"], **val_summary},
        }
        improved, record = _save_epoch(phase, state, mcfg, record, meta)
        summary["epochs"].append(record)
        log(
            f"[{phase.name}] epoch {state.epoch}/{phase.epochs} step {state.step} loss "
            f"{record['loss']:.4f} val mIoU {100 * val['mean_iu']:.2f} pixel acc "
            f"{100 * val['pixel_acc']:.2f} ({train_time:.0f}s){' *best*' if improved else ''}"
        )
    summary["best_mean_iu"] = state.best
    summary["best"] = str(run_dir / "best.safetensors")
    return summary


def _check_same_model(checkpoint: Path, theirs: dict[str, Any], ours: dict[str, Any]) -> None:
    """Refuse, naming the first differing key, a checkpoint whose model is not the config's."""
    for key in sorted(set(theirs) | set(ours)):
        if theirs.get(key) != ours.get(key):
            raise UserError(
                f"cannot fine-tune {checkpoint}: its model differs from the config's: {key} "
                f"{theirs.get(key)!r} in the checkpoint vs {ours.get(key)!r} in the config"
            )


def plan(
    cfg: TrainConfig,
    run_dir: Path,
    float_only: bool = False,
    epochs: int | None = None,
    finetune: Path | None = None,
) -> list[Phase]:
    """The phases a run consists of (see :mod:`.train_config`); with ``finetune`` one QAT phase
    that goes on from that quantized checkpoint."""
    model = dict(cfg.model)
    main_epochs = cfg.epochs if epochs is None else epochs
    if finetune is not None:
        if float_only or not cfg.quantized:
            raise UserError("--finetune goes on with QAT: it needs a quantized config, not --float")
        return [Phase("qat", run_dir, model, main_epochs, cfg.lr, None, Path(finetune))]
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
    finetune: Path | None = None,
) -> list[dict[str, Any]]:
    """Run every phase of ``cfg`` into ``run_dir``; return one summary per phase."""
    if log is None:
        from tqdm import tqdm

        log = tqdm.write
    run_dir = Path(run_dir)
    datasets = open_datasets(cfg)
    summaries = []
    for phase in plan(cfg, run_dir, float_only, epochs, finetune):
        summaries.append(train_phase(cfg, phase, resume, log, progress, datasets))
    return summaries


def _sidecar(path: Path) -> dict[str, Any] | None:
    """A checkpoint's JSON sidecar, or None if it is absent or unreadable."""
    try:
        data = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and path.is_file() else None


def run_status(phases: list[Phase]) -> list[str]:
    """What each phase of a run has left in its folder, one line per phase.

    Read from the checkpoints' JSON sidecars only (no torch): the epochs finished (``last``) and
    the best checkpoint with its validation mean IU, or that the phase has not finished an epoch.
    """
    lines = []
    for phase in phases:
        last = _sidecar(phase.run_dir / "last.safetensors")
        best_path = phase.run_dir / "best.safetensors"
        best = _sidecar(best_path)
        if last is None or best is None:
            lines.append(f"{phase.name}: no epoch finished yet ({phase.run_dir})")
            continue
        done = int(last.get("epoch", 0))
        state = "done" if done >= phase.epochs else "interrupted"
        iu = best.get("best_mean_iu")
        iu_text = f"val mean IU {100 * iu:.2f}" if isinstance(iu, (int, float)) else "no score"
        lines.append(
            f"{phase.name}: {done} of {phase.epochs} epochs ({state}); last "
            f"{phase.run_dir / 'last.safetensors'}; best {best_path} "
            f"(epoch {best.get('epoch', '?')}, {iu_text})"
        )
    return lines
