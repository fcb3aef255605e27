"""QAT of the image classifier (``fcnseg.quantize.models.classifier``) on the dominant-shape task.

``fcnseg train --config quantize/configs/classifier.json -o RUN`` lands here when the config says
``"task": "classification"`` (:func:`is_classification_config`). One quantized phase at the
classifier's window (224x224): activation scales calibrated on a few training batches
(:func:`fcnseg.quantize.calibrate.calibrate`), then AdamW with linear warm-up and cosine decay
(``train.make_optimizer``/``train.learning_rate``, shared with the FCNs) and cross entropy on the
image-level labels of :mod:`fcnseg.quantize.data.dominant` (scenes without a visible shape left
out). The training images are the scenes as rendered, flipped left-right at random (a flip keeps
the dominant shape).

Determinism as in ``train.py``: torch is seeded from ``(seed, epoch)``, the sample order comes
from ``default_rng([seed, epoch])`` and each flip from ``default_rng([seed, epoch, index])``.
The run directory gets ``config.json``, ``metrics.jsonl`` (one line per epoch: loss, lr, seconds,
validation accuracy), ``best.safetensors/.json`` (highest validation accuracy; its sidecar's
``metrics`` also hold the held-out ``test`` accuracy) and ``last.safetensors/.json``. There is no
``--resume`` (a run takes minutes); the FCNs' resumable machinery stays in ``train.py``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fcnseg import config as config_io
from fcnseg.config import ConfigError
from fcnseg.errors import UserError

#: the ``task`` value that routes ``fcnseg train`` here
TASK = "classification"
CONFIG_NAME = "classifier training config"

Log = Callable[[str], None]


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """Everything a classifier run depends on (besides the code); unknown keys are an error."""

    #: always "classification"
    task: str = TASK
    #: a name for the run (informative)
    name: str = "classifier"
    #: ClassifierConfig fields (num_classes is the task's)
    model: dict[str, Any] = field(default_factory=dict)
    #: scenes per split (train, val, test), rendered at the classifier's window
    train_length: int = 1600
    val_length: int = 100
    test_length: int = 200
    batch_size: int = 16
    epochs: int = 6
    lr: float = 0.002
    weight_decay: float = 0.0001
    warmup_steps: int = 30
    calibration_batches: int = 4
    #: random left-right flips of the training images
    flip: bool = True
    #: a float FCN checkpoint whose backbone (same widths and depths) initialises the classifier's
    #: convs and batch norms (:func:`init_backbone`); None = random initialisation
    init_backbone: str | None = None
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        if self.task != TASK:
            raise ConfigError(f"{CONFIG_NAME}: task must be {TASK!r}, got {self.task!r}")
        if min(self.train_length, self.val_length, self.test_length, self.batch_size) < 1:
            raise ConfigError(f"{CONFIG_NAME}: lengths and batch_size must be positive")
        if self.epochs < 1 or self.lr <= 0 or self.threads < 1:
            raise ConfigError(f"{CONFIG_NAME}: epochs, lr and threads must be positive")

    @classmethod
    def load(cls, path: str | Path) -> ClassifierTrainConfig:
        return config_io.load(cls, path, CONFIG_NAME)

    def replace(self, **changes: Any) -> ClassifierTrainConfig:
        return dataclasses.replace(self, **changes)


def is_classification_config(path: str | Path) -> bool:
    """True if the JSON config at ``path`` has ``"task": "classification"`` (else it is an FCN's
    ``TrainConfig``, whose loader reports any problem with the file)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("task") == TASK


def model_config(cfg: ClassifierTrainConfig):
    """The ClassifierConfig of the run (the task's six classes)."""
    from fcnseg.quantize.data.dominant import SHAPE_CLASSES
    from fcnseg.quantize.models.classifier import ClassifierConfig

    fields = dict(cfg.model)
    if fields.setdefault("num_classes", len(SHAPE_CLASSES)) != len(SHAPE_CLASSES):
        raise UserError(f"config model.num_classes must be {len(SHAPE_CLASSES)} (the shapes)")
    try:
        return ClassifierConfig.from_dict(fields)
    except (TypeError, ValueError) as error:
        raise UserError(f"bad classifier model config: {error}") from None


def init_backbone(model, checkpoint: str | Path) -> int:
    """Copy the backbone of an FCN checkpoint (``features.stage{s}.conv{s}_{i}`` and its batch
    norm) into the classifier (``features.conv{s}_{i}``); return the tensors copied.

    Why: from random weights the classifier stayed at chance on the image-level task within the
    minutes a CPU run may take, while the same backbone trained densely, as an FCN-32s on the
    segmentation scenes (``quantize/configs/classifier-backbone.json``), learns shapes in
    minutes. The weights are the same tensors whether the convs pad or not: only the border
    values differ, and the classifier has no border. Shapes must match (same widths, depths).
    """
    from fcnseg.quantize.models.io import load_checkpoint

    fcn, _ = load_checkpoint(checkpoint)
    source = {k: v for k, v in fcn.state_dict().items() if k.startswith("features.stage")}
    target = model.state_dict()
    state = {}
    for key, value in source.items():
        _, _, rest = key.split(".", 2)  # features.stageN.<name>...
        mine = f"features.{rest}"
        if mine not in target or target[mine].shape != value.shape:
            raise UserError(
                f"init_backbone {checkpoint}: {key} {tuple(value.shape)} has no twin in the "
                "classifier (widths and depths must be the classifier's)"
            )
        state[mine] = value
    model.load_state_dict(state, strict=False)
    return len(state)


def batches(dataset, cfg: ClassifierTrainConfig, epoch: int, steps: int) -> Iterator[tuple]:
    """``steps`` batches ``(images NCHW float 0..255, labels int64)`` of ``epoch``, labelled
    items only, each flipped left-right with probability 1/2 (``flip``)."""
    import torch

    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(dataset))
    order = np.array([i for i in order if dataset[i][1] >= 0])
    for step in range(steps):
        images, labels = [], []
        for position in range(step * cfg.batch_size, (step + 1) * cfg.batch_size):
            index = int(order[position % len(order)])
            image, label = dataset[index]
            if cfg.flip and np.random.default_rng([cfg.seed, epoch, index]).random() < 0.5:
                image = image[:, ::-1]
            images.append(np.ascontiguousarray(image.transpose(2, 0, 1)))
            labels.append(label)
        yield torch.from_numpy(np.stack(images)).float(), torch.tensor(labels, dtype=torch.long)


def accuracy(model, dataset, batch: int = 25) -> dict[str, Any]:
    """Top-1 accuracy of ``model`` (eval mode) on the labelled items of ``dataset``, and the
    per-class item counts (how balanced the split is)."""
    import torch

    model.eval()
    correct = total = 0
    counts = np.zeros(len(dataset.classes), dtype=np.int64)
    with torch.no_grad():
        for start in range(0, len(dataset), batch):
            items = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
            items = [(x, y) for x, y in items if y >= 0]
            if not items:
                continue
            x = torch.from_numpy(np.stack([i[0].transpose(2, 0, 1) for i in items])).float()
            y = np.array([i[1] for i in items])
            predicted = model(x).argmax(1).numpy()
            correct += int((predicted == y).sum())
            total += len(items)
            counts += np.bincount(y, minlength=len(counts))
    return {"accuracy": correct / max(1, total), "images": total, "per_class": counts.tolist()}


def run_classifier_training(
    cfg: ClassifierTrainConfig, run_dir: str | Path, log: Log = print
) -> dict[str, Any]:
    """Train, validate every epoch, keep the best; return a summary (best path, accuracies)."""
    import torch
    import torch.nn.functional as F

    from fcnseg.atomic import atomic_write_text
    from fcnseg.quantize.calibrate import calibrate
    from fcnseg.quantize.data.dominant import SHAPE_CLASSES, DominantShapes
    from fcnseg.quantize.data.palette import voc_palette
    from fcnseg.quantize.models.classifier import Classifier
    from fcnseg.quantize.models.io import save_checkpoint
    from fcnseg.quantize.train import learning_rate, make_optimizer

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    mcfg = model_config(cfg)
    side = mcfg.window
    atomic_write_text(run_dir / "config.json", json.dumps(config_io.to_dict(cfg), indent=2) + "\n")
    train = DominantShapes("train", side, cfg.train_length)
    val = DominantShapes("val", side, cfg.val_length)
    torch.manual_seed(cfg.seed)
    model = Classifier(mcfg)
    if cfg.init_backbone:
        copied = init_backbone(model, cfg.init_backbone)
        log(f"backbone: {copied} tensors from {cfg.init_backbone}")
    calibrate(model, (x for x, _ in batches(train, cfg, 999_999, cfg.calibration_batches)))
    optimizer = make_optimizer(model, cfg, cfg.lr)  # type: ignore[arg-type]  # weight_decay
    labelled = int((train.labels() >= 0).sum())
    steps = max(1, labelled // cfg.batch_size)
    total = steps * cfg.epochs
    meta = {
        "task": TASK,
        "classes": list(SHAPE_CLASSES),
        "palette": voc_palette(len(SHAPE_CLASSES) + 1)[1:].tolist(),
    }
    best, step = -1.0, 0
    metrics_path = run_dir / "metrics.jsonl"
    metrics_path.write_text("")
    for epoch in range(cfg.epochs):
        torch.manual_seed(cfg.seed * 1000 + epoch)
        model.train()
        started, losses = time.perf_counter(), []
        for x, y in batches(train, cfg, epoch, steps):
            lr = learning_rate(step, total, cfg.lr, cfg.warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            step += 1
        result = accuracy(model, val)
        record = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "lr": lr,
            "seconds": round(time.perf_counter() - started, 1),
            "val_accuracy": result["accuracy"],
        }
        with metrics_path.open("a") as file:
            file.write(json.dumps(record) + "\n")
        log(
            f"epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.3f}, val accuracy "
            f"{100 * result['accuracy']:.1f}% ({record['seconds']:.0f} s)"
        )
        state = {**meta, "epoch": epoch + 1, "metrics": {"val": result}}
        save_checkpoint(run_dir / "last.safetensors", model, mcfg, state)  # type: ignore[arg-type]
        if result["accuracy"] > best:
            best = result["accuracy"]
            save_checkpoint(run_dir / "best.safetensors", model, mcfg, state)  # type: ignore[arg-type]
    from fcnseg.quantize.models.classifier import load_classifier

    model, saved = load_classifier(run_dir / "best.safetensors")
    test = accuracy(model, DominantShapes("test", side, cfg.test_length))
    saved_meta = {k: v for k, v in saved.items() if k not in ("format", "model_config")}
    saved_meta["metrics"] = {**saved_meta["metrics"], "test": test}
    save_checkpoint(run_dir / "best.safetensors", model, mcfg, saved_meta)  # type: ignore[arg-type]
    log(
        f"best val accuracy {100 * best:.1f}%, held-out test accuracy {100 * test['accuracy']:.1f}%"
    )
    return {"best": str(run_dir / "best.safetensors"), "val": best, "test": test["accuracy"]}
