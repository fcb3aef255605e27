"""Benchmark: the seed's classifier, does averaging positions help? (held-out test accuracy)

Part 3 of :mod:`.classify` (whose docstring defines every variant): top-1 accuracy of a centre
crop, the enlarged image's 36 positions averaged (mean, max), multi-scale and stride 16, on the
held-out test split through :class:`~fcnseg.host.classify.Classifier` on the simulator, with 95%
Wilson intervals and paired bootstrap intervals of each variant's difference from the centre crop.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fcnseg.benchmarks.classify import IMAGE, load_classifier, method
from fcnseg.benchmarks.runner import Context, Skipped, check, headline

CENTRE = 80  # (384 - 224) / 2
MULTI_SCALE = (288, 384, 480)
FULL_SCENES, QUICK_SCENES = 200, 8
BOOTSTRAP = 2000
Z95 = 1.959963984540054


def wilson(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``correct / total`` (95% for the default z)."""
    if total < 1:
        raise ValueError("wilson interval of no trials")
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, resamples: int = BOOTSTRAP, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of ``mean(a) - mean(b)`` over the same items resampled with
    replacement (``a``, ``b``: 0/1 per item, paired)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(a), (resamples, len(a)))
    differences = a[picks].mean(axis=1) - b[picks].mean(axis=1)
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(low), float(high)


def _positions(result: Any) -> str:
    """The positions a :class:`~fcnseg.host.classify.Classification` pooled, per scale."""
    return " + ".join(str(r.scores.shape[0] * r.scores.shape[1]) for r in result.scales)


def _variants(clf: Any, scene: np.ndarray) -> dict[str, tuple[int, str]]:
    """Each variant's ``(predicted class, positions pooled)`` for one 224 scene (module
    docstring of :mod:`.classify`)."""
    from fcnseg.host.classify import pool_logits, resize

    size = (IMAGE, IMAGE)
    enlarged = resize(scene, size)
    centre = enlarged[CENTRE : CENTRE + 224, CENTRE : CENTRE + 224]
    mean = clf.classify(enlarged, scales=[size])
    maximum = pool_logits(mean.scales[0].scores, clf.output_scale, clf.output_bias, "max")
    native = clf.classify(scene, scales=[(224, 224)])
    one = clf.classify(centre, scales=[(224, 224)])
    multi = clf.classify(scene, scales=[(s, s) for s in MULTI_SCALE])
    fine = clf.classify(enlarged, scales=[size], stride=16)
    return {
        "native": (int(np.argmax(native.logits)), _positions(native)),
        "centre crop": (int(np.argmax(one.logits)), _positions(one)),
        "enlarged, mean": (int(np.argmax(mean.logits)), _positions(mean)),
        "enlarged, max": (int(np.argmax(maximum)), _positions(mean)),
        "multi-scale": (int(np.argmax(multi.logits)), _positions(multi)),
        "stride 16": (int(np.argmax(fine.logits)), _positions(fine)),
    }


#: the variants, in table order (module docstring of :mod:`.classify`)
VARIANTS = ("native", "centre crop", "enlarged, mean", "enlarged, max", "multi-scale", "stride 16")


def accuracy_part(ctx: Context, clf: Any, scenes: int) -> tuple[list[dict], list[dict], list[dict]]:
    """Part 3 on the first ``scenes`` test scenes: rows, headlines, checks."""
    from fcnseg.quantize.data.dominant import NO_LABEL, DominantShapes

    data = DominantShapes("test", 224, scenes)
    labels: list[int] = []
    predicted: dict[str, list[int]] = {name: [] for name in VARIANTS}
    positions: dict[str, str] = {}
    for index in range(len(data)):
        scene, label = data[index]
        if label == NO_LABEL:
            continue
        labels.append(label)
        for name, (value, pooled) in _variants(clf, scene).items():
            predicted[name].append(value)
            positions[name] = pooled  # the same for every scene (all are 224x224)
    truth = np.array(labels)
    right = {name: np.array(values) == truth for name, values in predicted.items()}
    base = right["centre crop"]
    rows, heads = [], []
    for name, hits in right.items():
        low, high = wilson(int(hits.sum()), len(hits))
        d_low, d_high = paired_bootstrap(hits, base)
        rows.append(
            {
                "variant": name,
                "positions": positions[name],
                "correct": int(hits.sum()),
                "scenes": len(hits),
                "top1_%": round(100 * float(hits.mean()), 1),
                "wilson95_%": [round(100 * low, 1), round(100 * high, 1)],
                "vs_centre_crop_pts": round(100 * float(hits.mean() - base.mean()), 1),
                "vs_centre_crop_95_pts": [round(100 * d_low, 1), round(100 * d_high, 1)],
            }
        )
        heads.append(headline(f"top-1 accuracy, {name}", round(100 * float(hits.mean()), 1), "%"))
    checks = []
    metrics = clf.package.card.extra.get("metrics") if clf.package is not None else None
    recorded = (metrics or {}).get("test") or {}
    if recorded.get("images") == len(truth):
        native = float(right["native"].mean())
        checks.append(
            check(
                "native accuracy on the simulator == the test accuracy training recorded",
                abs(native - float(recorded["accuracy"])) < 1e-12,
                f"sim {100 * native:.2f}% vs recorded {100 * float(recorded['accuracy']):.2f}% "
                f"on {len(truth)} scenes",
            )
        )
    return rows, heads, checks


def run(ctx: Context) -> dict[str, Any]:
    """Part 3: accuracy of the positions' variants on the held-out test split."""
    import importlib.util

    if importlib.util.find_spec("skimage") is None:  # the synthetic scenes' textures
        raise Skipped("needs 'skimage' (the synthetic scenes' textures), not installed here")
    _, clf = load_classifier(ctx)
    scenes = QUICK_SCENES if ctx.quick else FULL_SCENES
    rows, heads, checks = accuracy_part(ctx, clf, scenes)
    return {
        "title": "The seed's classifier: does averaging positions help? (held-out test accuracy)",
        "method": method(3),
        "rows": rows,
        "headline": heads,
        "checks": checks,
        "notes": [
            "wilson95_%: the 95% Wilson interval of top-1; vs_centre_crop_95_pts: a 95% paired "
            f"bootstrap interval ({BOOTSTRAP} resamples of the same scenes) of the difference "
            "from the centre crop, in percentage points. Chance is about 1/6."
        ],
    }
