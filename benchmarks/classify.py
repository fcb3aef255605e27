"""Benchmark: the seed's classifier claims (issue 18), measured on the shipped classifier package.

The seed says a classifier whose FC layers became convolutions scores many positions of a larger
image in one pass, and that averaging those scores classifies the image. Three parts, all on the
classification package (``--package`` when it is one, else the installed ``classifier-pynq-z2``),
three benchmarks, each with its own table: ``classify`` (this module: part 1 and what the three
share), ``classify_estimates`` (:mod:`.classify_estimates`) and ``classify_accuracy``
(:mod:`.classify_accuracy`):

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
     logits (9, 36 and 81 positions);
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

from pathlib import Path
from typing import Any

import numpy as np

from fcnseg.benchmarks import inputs
from fcnseg.benchmarks.runner import Context, Skipped, check, interleaved, ratio_headline
from fcnseg.benchmarks.timing import brief, paired_ratio

#: the shipped classification package looked up in ``ctx.packages_dir``.
PACKAGE_NAME = "classifier-pynq-z2"
#: the checkpoint looked up under the current folder (``make bench`` runs in the checkout).
CHECKPOINT = Path("models/classifier/checkpoint.safetensors")
IMAGE, STEP = 384, 32


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


def load_classifier(ctx: Context) -> tuple[Path, Any]:
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


def method(part: int) -> str:
    """The module docstring's paragraph for ``part`` (1, 2, 3), for the results' method text."""
    doc = __doc__ or ""
    marker = f"{part}. **"
    start = doc.find(marker)
    end = doc.find(f"{part + 1}. **", start) if part < 3 else doc.find("``--quick``", start)
    return " ".join(doc[start + 3 : end].split()) if start >= 0 else ""


def run(ctx: Context) -> dict[str, Any]:
    """Part 1: one pass vs 36 crops on the simulator."""
    _, clf = load_classifier(ctx)
    row, speedup, one_check = _one_pass_part(ctx, clf)
    return {
        "title": "The seed's classifier: one 384x384 pass vs 36 crops of 224x224 (simulator)",
        "method": method(1),
        "rows": [row],
        "headline": [ratio_headline("classifier one pass vs 36 crops (sim)", speedup, "x", ">= 8")],
        "checks": [one_check],
        "notes": [],
    }
