"""Benchmark: the seed's classifier claims (issue 18), measured on the shipped classifier package.

The seed says a classifier whose FC layers became convolutions scores many positions of a larger
image in one pass, and that averaging those scores classifies the image. Three parts, all on the
classification package (``--package`` when it is one, else the installed ``classifier-pynq-z2``),
registered as three benchmarks (``classify``, ``classify_estimates``, ``classify_accuracy``:
:func:`run`, :func:`run_estimates`, :func:`run_accuracy`), each with its own table:

1. **One pass vs 36 crops, simulator.** A photo (:mod:`.inputs`) resized to 384x384: the 6x6 map
   of one pass (:meth:`Classifier.score_map <fcnseg.host.classify.Classifier.score_map>`, the
   code ``fcnseg classify`` runs) vs the 36 crops of 224x224 at stride 32, each run alone through
   the same simulator engine (a 224 input gives one cell). The sides in turns, CPU (thread clock;
   the simulator's BLAS is capped at 1 thread) and wall time per repetition, the speed-up per
   repetition (crops_i / one_pass_i). Check: all 36 cells equal their crops' scores, integers.
2. **One pass vs 36 crops, finn-estimated accelerator time** (finn-plus cycle estimates, not
   measured on a board). A tile's time on a streaming accelerator is finn's initiation interval
   (``max_cycles`` / clock: tiles follow each other that often) and one tile alone its latency
   (finn's critical path, pessimistic); ``n`` tiles in a row take ``latency + (n - 1) *
   interval``. Rows: the package's 384 accelerator on one tile (the 36 positions in one pass);
   the same accelerator on 36 tiles (a crop costs a whole tile on a fixed-size accelerator); and
   the same checkpoint exported at 224x224 and compiled here for the same board with
   ``fcnseg compile``'s code (estimate-only, in the run's scratch folder, once per run), twice:
   at the board's default target (what ``fcnseg compile --board`` gives) and at the target
   ``fps_384 * (384/224)^2`` (the 384 build's pixel rate, so finn folds it about as wide; the
   target is ours, the folding and cycles are finn's). Needs torch and finn-plus and the
   package's own checkpoint (``--checkpoint`` or ``models/classifier/checkpoint.safetensors``
   under the current folder, accepted only when its sha256 is the model card's); else a note.
3. **Accuracy on the held-out test split** (:class:`~fcnseg.quantize.data.dominant.
   DominantShapes` ``("test", 224, 200)``: 200 scenes never trained or validated on, rendered at
   224x224, the classifier's window, labelled by their own masks; scenes without a visible shape
   left out), every variant through :class:`~fcnseg.host.classify.Classifier` on the simulator:

   - ``native``: the 224 scene as it is, one position (what training reports as test accuracy);
   - ``centre crop``: the scene enlarged to 384x384 (Pillow bilinear, :data:`RESAMPLE
     <fcnseg.host.classify.RESAMPLE>`), its 224 crop at (80, 80), one position;
   - ``enlarged, mean``: the scene enlarged to 384x384, the 36 positions' dequantized logits
     averaged (the seed's recipe); ``enlarged, max``: the same 36, maximum per class;
   - ``multi-scale``: the mean over 288x288, 384x384 and 480x480 of each size's mean-pooled
     logits (4, 36 and 81 positions);
   - ``stride 16``: the 384x384 image and its copies cropped by 16 px along y, x and both,
     interleaved (121 positions at stride 16), averaged.

   Top-1 accuracy with a 95% Wilson interval, and each variant's difference from the centre
   crop with a 95% paired bootstrap interval (the same scenes, resampled 2000 times), so "does
   averaging help?" is answered with its uncertainty. Check: ``native`` on the simulator equals
   the test accuracy the checkpoint's training recorded (the integer path classifies exactly as
   Brevitas did), when the whole split is run.

``--quick``: 8 scenes, one repetition, no compile.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from fcnseg.benchmarks import inputs
from fcnseg.benchmarks.runner import Context, Skipped, check, headline, interleaved, ratio_headline
from fcnseg.benchmarks.timing import brief, paired_ratio

#: the shipped classification package looked up in ``ctx.packages_dir``.
PACKAGE_NAME = "classifier-pynq-z2"
#: the checkpoint looked up under the current folder (``make bench`` runs in the checkout).
CHECKPOINT = Path("models/classifier/checkpoint.safetensors")
IMAGE, STEP = 384, 32
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


def classifier_package(ctx: Context) -> Path:
    """The classification package measured: ``--package`` when it is one, else the shipped one."""
    from fcnseg.host.package import load_package

    if ctx.package is not None and load_package(ctx.package).card.task == "classification":
        return Path(ctx.package)
    if ctx.packages_dir is not None:
        path = Path(ctx.packages_dir) / PACKAGE_NAME
        if (path / "accelerator.json").is_file():
            return path
    raise Skipped(f"no classification package ({PACKAGE_NAME} is not installed; pass --package)")


def classifier_checkpoint(ctx: Context, package: Path) -> Path | None:
    """The package's source checkpoint: ``--checkpoint`` or :data:`CHECKPOINT`, whichever has
    the sha256 its model card names (None if neither)."""
    from fcnseg.benchmarks.subjects import checkpoint_matches

    for candidate in (ctx.checkpoint, CHECKPOINT):
        if candidate is not None and Path(candidate).is_file():
            if checkpoint_matches(package, Path(candidate)):
                return Path(candidate)
    return None


def crop_positions(cells: int, step: int = STEP) -> list[tuple[int, int]]:
    """Top-left corners of the ``cells x cells`` crops, row-major."""
    return [(i * step, j * step) for i in range(cells) for j in range(cells)]


def _one_pass_part(ctx: Context, clf: Any) -> tuple[dict, dict | None, dict]:
    """Part 1: the row, the speed-up and the exactness check."""
    from fcnseg.host.classify import resize

    window = clf.geometry.window
    rgb = resize(inputs.photo(ctx.samples_dir, IMAGE, IMAGE), (IMAGE, IMAGE))
    cells = clf.geometry.cells(IMAGE)
    crops = [rgb[None, y : y + window, x : x + window] for y, x in crop_positions(cells)]

    def on_crops() -> np.ndarray:
        return np.concatenate([np.asarray(clf.engine.run(c)) for c in crops])

    one = np.asarray(clf.score_map(rgb))
    each = on_crops()
    equal = each.shape[1:3] == (1, 1) and np.array_equal(
        each[:, 0, 0].reshape(cells, cells, -1), one
    )
    t = interleaved({"one_pass": lambda: clf.score_map(rgb), "crops": on_crops}, ctx.reps)
    speedup = paired_ratio(t["crops"], t["one_pass"], 1)
    row = {
        "what": f"{IMAGE}x{IMAGE} photo, fcnseg sim",
        "one_pass_cpu_ms": brief(t["one_pass"]["cpu"], 1e3, 1),
        f"crops_{len(crops)}_cpu_ms": brief(t["crops"]["cpu"], 1e3, 1),
        "one_pass_wall_ms": brief(t["one_pass"]["wall"], 1e3, 1),
        f"crops_{len(crops)}_wall_ms": brief(t["crops"]["wall"], 1e3, 1),
        "cpu_speedup": speedup and speedup["cpu"],
        "wall_speedup": speedup and speedup["wall"],
        "reps": t["one_pass"]["reps"],
        "clock": "thread",
    }
    c = check(
        f"all {cells * cells} cells of one {IMAGE}x{IMAGE} pass == the {window}x{window} crops "
        "at stride 32 run alone (integers)",
        bool(equal),
        f"{inputs.describe(ctx.samples_dir)}; map {one.shape[0]}x{one.shape[1]}x{one.shape[2]}",
    )
    return row, speedup, c


def _timing(estimates: dict[str, Any]) -> tuple[float, float]:
    """``(interval_ms, latency_ms)`` from a package's finn estimates."""
    clock_mhz = float(estimates.get("clock_mhz") or 1e3 / float(estimates["clock_ns"]))
    interval = float(estimates["max_cycles"]) / (clock_mhz * 1e3)
    latency = float(estimates.get("estimated_latency_ms") or interval)
    return interval, latency


def _estimate_row(
    what: str, pkg: Any, tiles: int, one_pass: tuple[float, float] | None
) -> dict[str, Any]:
    """One row of part 2: ``tiles`` tiles in a row on ``pkg``'s accelerator (finn's cycles);
    ``one_pass``: the 384 accelerator's ``(interval, latency)`` ms the ratios divide by."""
    est = pkg.estimates or {}
    interval, latency = _timing(est)
    alone = latency + (tiles - 1) * interval
    total = est.get("total", {})
    return {
        "what": what,
        "tile": f"{pkg.tile[0]}x{pkg.tile[1]}",
        "tiles": tiles,
        "est_interval_ms": round(interval, 3),
        "est_latency_ms": round(latency, 2),
        "est_steady_ms": round(tiles * interval, 2),
        "est_alone_ms": round(alone, 2),
        "steady_vs_one_pass": None
        if one_pass is None
        else round(tiles * interval / one_pass[0], 2),
        "alone_vs_one_pass": None if one_pass is None else round(alone / one_pass[1], 2),
        "target_fps": est.get("target_fps"),
        "est_tiles_per_s": round(float(est.get("estimated_fps", 0.0)), 1),
        "LUT": total.get("LUT"),
        "BRAM_18K": total.get("BRAM_18K"),
        "fits": (est.get("fit") or {}).get("fits"),
    }


def build_224(ctx: Context, checkpoint: Path, board: str, targets: dict[str, float | None]) -> dict:
    """The checkpoint exported at 224x224 and compiled estimate-only for ``board`` once per
    ``targets`` entry (name -> target tiles/s, None: the board's default): name -> package dir.
    Kept in ``ctx.cache`` for the rest of the run."""
    from fcnseg.benchmarks.subjects import build_package_for
    from fcnseg.quantize.export import export_checkpoint

    key = ("classify-224", str(checkpoint), board, tuple(sorted(targets.items(), key=str)))
    if key not in ctx.cache:
        root = ctx.work_dir / "classify-224"
        export_dir = root / "export"
        if not (export_dir / "model.onnx").is_file():
            export_checkpoint(checkpoint, (224, 224), export_dir)
        built = {}
        for name, target in targets.items():
            ctx.log(f"bench: compiling the classifier at 224x224 for {board} ({name})")
            built[name] = build_package_for(ctx, export_dir, board, root / name, target)
        ctx.cache[key] = built
    return ctx.cache[key]


def _estimates_part(ctx: Context, package: Path) -> tuple[list[dict], list[dict], list[str]]:
    """Part 2: rows, headlines, notes."""
    from fcnseg.host.package import load_package

    pkg = load_package(package)
    if not (pkg.estimates or {}).get("max_cycles"):
        return [], [], [f"package {package} has no finn estimates: part 2 not measured"]
    cells = (IMAGE - pkg.card.window) // STEP + 1
    positions = cells * cells
    interval, latency = _timing(pkg.estimates)
    rows = [
        _estimate_row(f"{pkg.tile[0]} accelerator, one pass ({positions} positions)", pkg, 1, None),
        _estimate_row(
            f"{pkg.tile[0]} accelerator, {positions} crops (a tile each)",
            pkg,
            positions,
            (interval, latency),
        ),
    ]
    notes: list[str] = []
    checkpoint = classifier_checkpoint(ctx, package)
    if ctx.quick or not ctx.compile_missing:
        notes.append("224x224 builds not compiled (quick run or compiling disabled)")
    elif checkpoint is None:
        notes.append(
            f"224x224 builds not compiled: no checkpoint with the model card's sha256 "
            f"(--checkpoint, or {CHECKPOINT} under the current folder)"
        )
    else:
        fps = float(pkg.estimates["estimated_fps"])
        targets = {"default-target": None, "pixel-rate-target": fps * (IMAGE / 224) ** 2}
        try:
            built = build_224(ctx, checkpoint, pkg.board, targets)
        except ModuleNotFoundError as error:
            notes.append(f"224x224 builds not compiled: {error.name!r} is not installed here")
            built = {}
        for name, path in built.items():
            small = load_package(path)
            target = small.estimates.get("target_fps")
            rows.append(
                _estimate_row(
                    f"224 build ({name}, {target:.0f} tiles/s asked), {positions} crops",
                    small,
                    positions,
                    (interval, latency),
                )
            )
    heads = [
        headline(
            f"ESTIMATED one pass vs {positions} crops, {r['what']}", r["steady_vs_one_pass"], "x"
        )
        for r in rows[1:]
    ]
    notes.append(
        f"finn's numbers for the {pkg.tile[0]} accelerator: interval {interval:.2f} ms, latency "
        f"{latency:.1f} ms (critical path, pessimistic); steady = tiles x interval, alone = "
        "latency + (tiles - 1) x interval. steady_vs_one_pass divides by the one-pass interval."
    )
    return rows, heads, notes


def _variants(clf: Any, scene: np.ndarray) -> dict[str, int]:
    """Each variant's predicted class for one 224 scene (module docstring)."""
    from fcnseg.host.classify import pool_logits, resize

    size = (IMAGE, IMAGE)
    enlarged = resize(scene, size)
    centre = enlarged[CENTRE : CENTRE + 224, CENTRE : CENTRE + 224]
    mean = clf.classify(enlarged, scales=[size])
    biggest = mean.scales[0].scores
    maximum = pool_logits(biggest, clf.output_scale, clf.output_bias, "max")
    return {
        "native": int(np.argmax(clf.classify(scene, scales=[(224, 224)]).logits)),
        "centre crop": int(np.argmax(clf.classify(centre, scales=[(224, 224)]).logits)),
        "enlarged, mean": int(np.argmax(mean.logits)),
        "enlarged, max": int(np.argmax(maximum)),
        "multi-scale": int(
            np.argmax(clf.classify(scene, scales=[(s, s) for s in MULTI_SCALE]).logits)
        ),
        "stride 16": int(np.argmax(clf.classify(enlarged, scales=[size], stride=16).logits)),
    }


POSITIONS = {
    "native": "1",
    "centre crop": "1",
    "enlarged, mean": "36",
    "enlarged, max": "36",
    "multi-scale": "4 + 36 + 81",
    "stride 16": "121",
}


def accuracy_part(ctx: Context, clf: Any, scenes: int) -> tuple[list[dict], list[dict], list[dict]]:
    """Part 3 on the first ``scenes`` test scenes: rows, headlines, checks."""
    from fcnseg.quantize.data.dominant import NO_LABEL, DominantShapes

    data = DominantShapes("test", 224, scenes)
    labels, predicted = [], {name: [] for name in POSITIONS}
    for index in range(len(data)):
        scene, label = data[index]
        if label == NO_LABEL:
            continue
        labels.append(label)
        for name, value in _variants(clf, scene).items():
            predicted[name].append(value)
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
                "positions": POSITIONS[name],
                "correct": int(hits.sum()),
                "scenes": len(hits),
                "top1_%": round(100 * hits.mean(), 1),
                "wilson95_%": [round(100 * low, 1), round(100 * high, 1)],
                "vs_centre_crop_pts": round(100 * (hits.mean() - base.mean()), 1),
                "vs_centre_crop_95_pts": [round(100 * d_low, 1), round(100 * d_high, 1)],
            }
        )
        heads.append(headline(f"top-1 accuracy, {name}", round(100 * hits.mean(), 1), "%"))
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


def _load(ctx: Context) -> tuple[Path, Any]:
    """The classification package and its :class:`~fcnseg.host.classify.Classifier` on the
    simulator (once per run), refused unless it is a 224 window at stride 32."""
    from fcnseg.host.classify import Classifier

    if "classify" not in ctx.cache:
        package = classifier_package(ctx)
        clf = Classifier.load(package, "sim")
        if clf.geometry.cells(IMAGE) != 6 or clf.geometry.stride != STEP:
            raise Skipped(f"package {package}: not a 224-px window at stride 32 (6x6 on 384)")
        ctx.cache["classify"] = (package, clf)
    return ctx.cache["classify"]


def _method(part: int) -> str:
    """The module docstring's paragraph for ``part`` (1, 2, 3), for the results' method text."""
    doc = __doc__ or ""
    marker = f"{part}. **"
    start = doc.find(marker)
    end = doc.find(f"{part + 1}. **", start) if part < 3 else doc.find("``--quick``", start)
    return " ".join(doc[start + 3 : end].split()) if start >= 0 else ""


def run(ctx: Context) -> dict[str, Any]:
    """Part 1: one pass vs 36 crops on the simulator."""
    _, clf = _load(ctx)
    row, speedup, one_check = _one_pass_part(ctx, clf)
    return {
        "title": "The seed's classifier: one 384x384 pass vs 36 crops of 224x224 (simulator)",
        "method": _method(1),
        "rows": [row],
        "headline": [ratio_headline("classifier one pass vs 36 crops (sim)", speedup, "x", ">= 8")],
        "checks": [one_check],
        "notes": [],
    }


def run_estimates(ctx: Context) -> dict[str, Any]:
    """Part 2: one pass vs 36 crops as finn-estimated accelerator time."""
    package, _ = _load(ctx)
    rows, heads, notes = _estimates_part(ctx, package)
    return {
        "title": "The seed's classifier: one pass vs 36 crops, ESTIMATED accelerator time (finn)",
        "method": _method(2),
        "rows": rows,
        "headline": heads,
        "checks": [],
        "notes": notes,
    }


def run_accuracy(ctx: Context) -> dict[str, Any]:
    """Part 3: accuracy of the positions' variants on the held-out test split."""
    import importlib.util

    if importlib.util.find_spec("skimage") is None:  # the synthetic scenes' textures
        raise Skipped("needs 'skimage' (the synthetic scenes' textures), not installed here")
    _, clf = _load(ctx)
    scenes = QUICK_SCENES if ctx.quick else FULL_SCENES
    rows, heads, checks = accuracy_part(ctx, clf, scenes)
    return {
        "title": "The seed's classifier: does averaging positions help? (held-out test accuracy)",
        "method": _method(3),
        "rows": rows,
        "headline": heads,
        "checks": checks,
        "notes": [
            "wilson95_%: the 95% Wilson interval of top-1; vs_centre_crop_95_pts: a 95% paired "
            f"bootstrap interval ({BOOTSTRAP} resamples of the same scenes) of the difference "
            "from the centre crop, in percentage points. Chance is about 1/6."
        ],
    }
