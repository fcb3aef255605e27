"""The FCN paper's four segmentation metrics, from one confusion matrix (numpy only).

With ``n_ij`` the number of pixels of true class ``i`` predicted as class ``j``,
``t_i = sum_j n_ij`` the pixels of class ``i`` and ``n_cl`` the number of classes
(Long, Shelhamer, Darrell, §5):

- pixel accuracy            ``sum_i n_ii / sum_i t_i``
- mean accuracy             ``(1/n_cl) sum_i n_ii / t_i``
- mean IU                   ``(1/n_cl) sum_i n_ii / (t_i + sum_j n_ji - n_ii)``
- frequency-weighted IU     ``(sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)``

Pixels labelled ``ignore_index`` (255) are left out of the matrix. Classes that never occur are
handled as in the paper's own evaluation code (``score.py``, ``np.nanmean``): a class absent from
the truth has an undefined accuracy (0/0 = nan) and is left out of the mean accuracy; its IU is 0
if it was predicted somewhere (a pure false positive, which rightly lowers the mean IU) and nan
(left out of the mean) if it appears in neither truth nor prediction. So evaluating on a split
that lacks some classes does not count them as failures. The frequency-weighted IU weighs each
class by its share of the truth, so absent classes weigh 0. Everything is nan for an empty matrix.

The host uses this module on a board too, so it imports numpy only.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from fcnseg.quantize.data.palette import IGNORE_INDEX

#: The four summary metrics, in the paper's order, with their display names.
METRIC_NAMES: dict[str, str] = {
    "pixel_acc": "pixel acc.",
    "mean_acc": "mean acc.",
    "mean_iu": "mean IU",
    "fw_iu": "f.w. IU",
}


def confusion_matrix(
    truth: np.ndarray, prediction: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Count ``(true class, predicted class)`` pairs: ``(num_classes, num_classes) int64``.

    Row = truth, column = prediction. Pixels whose truth is ``ignore_index`` are skipped; any other
    truth or prediction outside ``0..num_classes-1`` is an error (it would silently vanish from a
    ``bincount`` otherwise).
    """
    truth = np.asarray(truth)
    prediction = np.asarray(prediction)
    if truth.shape != prediction.shape:
        raise ValueError(f"truth {truth.shape} and prediction {prediction.shape} differ in shape")
    keep = truth != ignore_index
    t = truth[keep].astype(np.int64)
    p = prediction[keep].astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(f"truth holds labels outside 0..{num_classes - 1} (and {ignore_index})")
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"prediction holds labels outside 0..{num_classes - 1}")
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def scores(matrix: np.ndarray) -> dict[str, float | list[float]]:
    """The FCN metrics of a confusion matrix (see the module docstring for the definitions).

    Returns ``pixel_acc``, ``mean_acc``, ``mean_iu``, ``fw_iu`` (floats in 0..1, nan when
    undefined) and per-class ``class_acc`` and ``class_iu`` lists (nan where undefined).
    """
    hist = np.asarray(matrix, dtype=np.float64)
    if hist.ndim != 2 or hist.shape[0] != hist.shape[1]:
        raise ValueError(f"a confusion matrix is square, got shape {hist.shape}")
    diag = np.diag(hist)
    truth_per_class = hist.sum(axis=1)
    predicted_per_class = hist.sum(axis=0)
    total = hist.sum()
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of all-nan: nan, on purpose
        pixel_acc = diag.sum() / total if total else np.nan
        class_acc = diag / truth_per_class
        class_iu = diag / (truth_per_class + predicted_per_class - diag)
        mean_acc = np.nanmean(class_acc)
        mean_iu = np.nanmean(class_iu)
        if total:
            freq = truth_per_class / total
            present = freq > 0
            fw_iu = float((freq[present] * class_iu[present]).sum())
        else:
            fw_iu = np.nan
    return {
        "pixel_acc": float(pixel_acc),
        "mean_acc": float(mean_acc),
        "mean_iu": float(mean_iu),
        "fw_iu": float(fw_iu),
        "class_acc": [float(v) for v in class_acc],
        "class_iu": [float(v) for v in class_iu],
    }


class ConfusionMatrix:
    """Accumulates a confusion matrix over many images; ``.scores()`` gives the FCN metrics."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, truth: np.ndarray, prediction: np.ndarray) -> None:
        """Add one image's (or a batch's) pixels."""
        self.matrix += confusion_matrix(truth, prediction, self.num_classes, self.ignore_index)

    def scores(self) -> dict[str, float | list[float]]:
        return scores(self.matrix)


def jsonable(value):
    """``value`` with every nan/inf float replaced by ``None`` (standard JSON has no NaN)."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def format_table(result: dict, classes: Sequence[str] | None = None) -> str:
    """Render the four metrics (in percent), then per-class accuracy and IU if ``classes`` given."""
    lines = ["metric          value"]
    for key, name in METRIC_NAMES.items():
        lines.append(f"{name:<14} {100 * result[key]:6.2f}")
    if classes is not None:
        lines.append("")
        lines.append(f"{'class':<16} {'acc.':>6} {'IU':>6}")
        for name, acc, iu in zip(classes, result["class_acc"], result["class_iu"], strict=True):
            lines.append(f"{name:<16} {100 * acc:6.2f} {100 * iu:6.2f}")
    return "\n".join(lines)
