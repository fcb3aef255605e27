"""Benchmark 7: accuracy — float vs 4-bit mIoU of the default model on held-out synthetic scenes.

Measured here with the quantize stage's evaluation code (:func:`fcnseg.quantize.evaluate.evaluate`,
the same code behind ``fcnseg eval``) on the ``test`` split of the synthetic scenes (seeds from
2,000,000, never used for training or validation), 256x256: the quantized checkpoint given with
``--checkpoint FILE`` (``make bench``: ``models/default-fcn8s/checkpoint.safetensors``) and its
float twin (``*float*.safetensors`` beside it, or ``float/`` of the training run). When the
subject package was made from that checkpoint, the deployed path is measured too: the
:class:`~fcnseg.host.segmenter.Segmenter` on the simulator over the same scenes (integer
scores, host upsampling), which should equal the Brevitas figure. What training recorded in the
checkpoints' JSON (validation split) and in ``eval-test-<checkpoint>.json`` (``fcnseg eval`` on the
test split) is shown for comparison, not reused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fcnseg.benchmarks.runner import Context, Skipped, headline, ratio
from fcnseg.benchmarks.subjects import checkpoint_matches, display_path, float_checkpoint

SCENE = (256, 256)
FULL_SCENES = 200  # the test split's default length, as models/README.md's table
QUICK_SCENES = 4


def _recorded(path: Path) -> float | None:
    """``mean_iu`` from a JSON file (a checkpoint sidecar's ``metrics`` or an eval output)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    metrics = data.get("metrics", data)
    value = metrics.get("mean_iu") if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, int | float) else None


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 2)


def _sim_miou(package_dir: Path, dataset: Any, count: int, backend: str) -> float:
    from fcnseg.host.segmenter import Segmenter
    from fcnseg.quantize.metrics import ConfusionMatrix

    seg = Segmenter.load(package_dir, backend)
    matrix = ConfusionMatrix(len(dataset.classes))
    for i in range(count):
        image, label = dataset[i]
        matrix.update(label, seg(image))
    return float(matrix.scores()["mean_iu"])


def run(ctx: Context) -> dict[str, Any]:
    import torch

    from fcnseg.quantize.data.synthetic import SyntheticScenes
    from fcnseg.quantize.evaluate import evaluate
    from fcnseg.quantize.models.io import load_checkpoint

    torch.set_num_threads(1)
    if ctx.checkpoint is None:
        raise Skipped("no quantized checkpoint to score: pass --checkpoint FILE")
    quant = Path(ctx.checkpoint)
    floats = float_checkpoint(quant)
    count = QUICK_SCENES if ctx.quick else FULL_SCENES
    dataset = SyntheticScenes("test", size=SCENE, length=count)
    rows = []
    results: dict[str, float] = {}
    for label, path in (("float", floats), ("4-bit (Brevitas)", quant)):
        if path is None:
            continue
        model, meta = load_checkpoint(path)
        metrics = evaluate(model, dataset, batch_size=4)
        results[label] = float(metrics["mean_iu"])
        rows.append(
            {
                "model": label,
                "checkpoint": display_path(path),
                "mIoU_%": round(100 * metrics["mean_iu"], 2),
                "pixel_acc_%": round(100 * metrics["pixel_acc"], 2),
                "recorded_val_mIoU_%": _pct(_recorded(path.with_suffix(".json"))),
                "recorded_test_mIoU_%": _pct(
                    _recorded(path.parent / f"eval-test-{path.stem}.json")
                ),
                "scenes": count,
            }
        )
    subject = ctx.cache.get("subject")
    if subject is not None and checkpoint_matches(subject.package_dir, quant):
        value = _sim_miou(subject.package_dir, dataset, count, ctx.backend)
        results["4-bit (package, sim)"] = value
        rows.append(
            {
                "model": "4-bit (deployment package on the simulator)",
                "checkpoint": display_path(subject.package_dir),
                "mIoU_%": round(100 * value, 2),
                "pixel_acc_%": None,
                "recorded_val_mIoU_%": None,
                "recorded_test_mIoU_%": None,
                "scenes": count,
            }
        )
    notes = [] if floats else ["no float twin checkpoint found: float mIoU not measured"]
    heads = [headline(f"{k} mIoU", round(100 * v, 2), "%") for k, v in results.items()]
    if "float" in results:
        heads.append(
            headline(
                "4-bit / float mIoU", ratio(results["4-bit (Brevitas)"], results["float"], 3), "x"
            )
        )
    return {
        "title": f"Accuracy on the held-out synthetic test split ({count} scenes of "
        f"{SCENE[0]}x{SCENE[1]})",
        "method": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "rows": rows,
        "headline": heads,
        "checks": [],
        "notes": notes,
    }
