"""Run a torch FCN over a dataset and score it with the FCN metrics.

Prediction mirrors what the host does with the accelerator's score map: pad the image to a
multiple of 32 (the nets need it), run the net, upsample the coarse scores bilinearly to the padded
size, crop the padding off, take the per-pixel argmax. Training validation and ``fcnseg eval``
share this code, so a checkpoint's recorded metrics are the ones ``fcnseg eval`` prints.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fcnseg.quantize.data.base import SegmentationDataset
from fcnseg.quantize.metrics import ConfusionMatrix

#: every net's input must be a multiple of this (five 2x2 pools)
SIZE_MULTIPLE = 32


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3) uint8`` -> float NCHW holding 0..255, the nets' input convention."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()


def upsample_logits(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Coarse score map -> logits at ``size`` (bilinear, as the host does it)."""
    return F.interpolate(scores, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def predict(model: nn.Module, image: np.ndarray) -> np.ndarray:
    """Label map ``(H, W) uint8`` of one ``(H, W, 3) uint8`` image of any size."""
    height, width = image.shape[:2]
    pad_h = -height % SIZE_MULTIPLE
    pad_w = -width % SIZE_MULTIPLE
    padded = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
    scores = model(to_tensor(padded[None]))
    logits = upsample_logits(scores, (height + pad_h, width + pad_w))[:, :, :height, :width]
    return logits.argmax(dim=1)[0].to(torch.uint8).numpy()


@torch.no_grad()
def predict_batch(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """Label maps ``(N, H, W)`` of equal-size images whose sides are multiples of 32."""
    scores = model(to_tensor(images))
    logits = upsample_logits(scores, images.shape[1:3])
    return logits.argmax(dim=1).to(torch.uint8).numpy()


def evaluate(
    model: nn.Module,
    dataset: SegmentationDataset,
    limit: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
    confusion: bool = False,
) -> dict:
    """The FCN metrics of ``model`` on (the first ``limit`` images of) ``dataset``.

    With ``confusion`` the result also holds the integer confusion matrix (rows: true class,
    columns: predicted) as ``confusion``, as ``fcnseg eval --json`` records it for a package;
    training's validation leaves it out of its per-epoch metrics.jsonl lines.

    Equal-size, 32-aligned images (the synthetic scenes) go through in batches; others one by one.
    The model is put in eval mode and left there.
    """
    model.eval()
    count = len(dataset) if limit is None else min(limit, len(dataset))
    matrix = ConfusionMatrix(len(dataset.classes))
    indices: Iterable[int] = range(count)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="eval", unit="img", leave=False)
    batch: list[tuple[np.ndarray, np.ndarray]] = []

    def flush() -> None:
        images = np.stack([image for image, _ in batch])
        labels = np.stack([label for _, label in batch])
        matrix.update(labels, predict_batch(model, images))
        batch.clear()

    for index in indices:
        image, label = dataset[index]
        aligned = image.shape[0] % SIZE_MULTIPLE == 0 and image.shape[1] % SIZE_MULTIPLE == 0
        if not aligned:
            matrix.update(label, predict(model, image))
            continue
        if batch and batch[0][0].shape != image.shape:
            flush()
        batch.append((image, label))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    result = matrix.scores()
    result["images"] = count
    result["pixels"] = int(matrix.matrix.sum())
    if confusion:
        result["confusion"] = matrix.matrix.tolist()
    return result
