"""FCN metrics: hand-computed cases and an independent implementation (scikit-learn)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fcnseg.quantize.metrics import ConfusionMatrix, confusion_matrix, format_table, scores


def test_confusion_matrix_counts_rows_truth_columns_prediction_and_skips_ignore():
    truth = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])
    expected = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    np.testing.assert_array_equal(confusion_matrix(truth, pred, 3), expected)


def test_hand_computed_scores():
    # truth: 4 px of class 0, 2 of class 1; prediction gets 3 of class 0 and 1 of class 1 right.
    hist = np.array([[3, 1], [1, 1]])
    result = scores(hist)
    assert result["pixel_acc"] == pytest.approx(4 / 6)
    assert result["mean_acc"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    iu = [3 / (4 + 4 - 3), 1 / (2 + 2 - 1)]
    assert result["class_iu"] == pytest.approx(iu)
    assert result["mean_iu"] == pytest.approx(sum(iu) / 2)
    assert result["fw_iu"] == pytest.approx((4 * iu[0] + 2 * iu[1]) / 6)


def test_absent_classes_follow_the_papers_nanmean():
    # class 2 never occurs (row and column zero): left out of every mean.
    # class 1 is only predicted, never true: accuracy undefined (left out), IU = 0 (counted).
    hist = np.array([[2, 1, 0], [0, 0, 0], [0, 0, 0]])
    result = scores(hist)
    assert math.isnan(result["class_acc"][1]) and math.isnan(result["class_acc"][2])
    assert result["class_iu"][1] == 0.0 and math.isnan(result["class_iu"][2])
    assert result["mean_acc"] == pytest.approx(2 / 3)
    assert result["mean_iu"] == pytest.approx((2 / 3 + 0) / 2)
    assert result["fw_iu"] == pytest.approx(2 / 3)


def test_empty_matrix_gives_nan_not_an_error():
    result = scores(np.zeros((3, 3), dtype=np.int64))
    assert all(math.isnan(result[k]) for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"))


def test_out_of_range_labels_are_errors():
    with pytest.raises(ValueError, match="truth"):
        confusion_matrix(np.array([3]), np.array([0]), 3)
    with pytest.raises(ValueError, match="prediction"):
        confusion_matrix(np.array([0]), np.array([7]), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros(3), np.zeros(4), 3)


@pytest.mark.parametrize("seed", range(5))
def test_against_sklearn_and_a_direct_implementation(seed):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 9))
    truth = rng.integers(0, n, size=(3, 40, 50))
    truth[rng.random(truth.shape) < 0.1] = 255
    # a biased predictor: right 60% of the time, so the matrix is not uniform
    pred = np.where(rng.random(truth.shape) < 0.6, truth % n, rng.integers(0, n, truth.shape))
    accumulator = ConfusionMatrix(n)
    for t, p in zip(truth, pred, strict=True):
        accumulator.update(t, p)
    keep = truth != 255
    reference = sklearn_metrics.confusion_matrix(truth[keep], pred[keep], labels=np.arange(n))
    np.testing.assert_array_equal(accumulator.matrix, reference)

    # The paper's formulas, written out per class with plain Python loops.
    result = accumulator.scores()
    t_i = [sum(reference[i]) for i in range(n)]
    iu = [reference[i, i] / (t_i[i] + reference[:, i].sum() - reference[i, i]) for i in range(n)]
    assert result["pixel_acc"] == pytest.approx(np.trace(reference) / keep.sum())
    assert result["mean_acc"] == pytest.approx(
        np.mean([reference[i, i] / t_i[i] for i in range(n)])
    )
    assert result["mean_iu"] == pytest.approx(np.mean(iu))
    assert result["fw_iu"] == pytest.approx(
        sum(t * u for t, u in zip(t_i, iu, strict=True)) / sum(t_i)
    )
    assert result["mean_iu"] == pytest.approx(
        sklearn_metrics.jaccard_score(truth[keep], pred[keep], average="macro")
    )


def test_format_table_lists_the_four_metrics_and_classes():
    text = format_table(scores(np.array([[3, 1], [1, 1]])), classes=("bg", "thing"))
    for word in ("pixel acc.", "mean acc.", "mean IU", "f.w. IU", "bg", "thing"):
        assert word in text
