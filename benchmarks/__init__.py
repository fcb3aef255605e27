"""``fcnseg bench``: the benchmark suite (issue 8), one module per benchmark.

The top floor of the house: it uses every stage, so it lives in its own top-level folder
(``benchmarks/``, imported as ``fcnseg.benchmarks``), not in the base package. Its subjects come
from ``--package``/``--checkpoint``/``--samples`` or from the installed host runtime's shipped
packages (:mod:`.subjects`, :mod:`.inputs`); the results it writes go where ``-o`` says
(``make bench``: ``bench/results.json`` and ``bench/RESULTS.md``).

Every benchmark is a function ``run(ctx: Context) -> dict`` (see :mod:`.runner` for the result
schema) registered here by name, imported only when it runs, so a benchmark whose dependencies are
missing in the current environment (torch in ``.venv-board``) is reported as skipped instead of
breaking the others. Benchmarks report; they never pass or fail on time: every figure is a ratio
against a reference measured in the same run (median of several repetitions). What they *do*
assert is exactness (bit-exact simulator, identical labels), as checks stored with the figures.

- ``simulator``: per tile of the default FCN-8s, sim vs finn-plus ``execute_onnx`` vs onnxruntime
  vs Brevitas (:mod:`.simulator`).
- ``seed_claim``: one pass of a converted FCN vs its classifier on 36 crops (:mod:`.seed_claim`).
- ``postprocess``: dequant -> bilinear -> argmax, fast vs naive vs torch (:mod:`.postprocess`).
- ``tiling``: shift-and-stitch factors and tile overlaps (:mod:`.tiling`).
- ``end_to_end``: ``fcnseg segment`` on sample images, the pipeline's stages (:mod:`.end_to_end`).
- ``estimates``: finn-plus estimates per board preset (:mod:`.estimates`).
- ``in_flight``: fabric busy % and frames/s on the emulated board at the package's estimated
  rate and latency, serial vs calls in flight (:mod:`.in_flight`; needs pynq: ``.venv-board``).
- ``farm``: images/s of ``fcnseg segment --scheduler`` on 1, 2, 3 local Dask workers, on the
  simulator and on emulated boards paced at the package's estimates (:mod:`.farm`; the paced
  part needs pynq: ``.venv-board``).
- ``frame_rates``: estimated frames/s per board, frame size and tile, steady and counting
  latency (:mod:`.frame_rates`).
- ``accuracy``: float vs 4-bit mIoU on the held-out synthetic split (:mod:`.accuracy`).
- ``classify``, ``classify_estimates``, ``classify_accuracy``: the shipped classifier's one
  384x384 pass vs its 36 crops on the simulator and as finn-estimated accelerator time, and
  held-out accuracy of a centre crop vs averaged positions, multi-scale and stride 16
  (:mod:`.classify`, :mod:`.classify_estimates`, :mod:`.classify_accuracy`).
"""

from __future__ import annotations

#: benchmark name -> "module:function", in report order.
BENCHMARKS: dict[str, str] = {
    "simulator": "fcnseg.benchmarks.simulator:run",
    "seed_claim": "fcnseg.benchmarks.seed_claim:run",
    "postprocess": "fcnseg.benchmarks.postprocess:run",
    "tiling": "fcnseg.benchmarks.tiling:run",
    "end_to_end": "fcnseg.benchmarks.end_to_end:run",
    "estimates": "fcnseg.benchmarks.estimates:run",
    "frame_rates": "fcnseg.benchmarks.frame_rates:run",
    "in_flight": "fcnseg.benchmarks.in_flight:run",
    "farm": "fcnseg.benchmarks.farm:run",
    "accuracy": "fcnseg.benchmarks.accuracy:run",
    "classify": "fcnseg.benchmarks.classify:run",
    "classify_estimates": "fcnseg.benchmarks.classify_estimates:run",
    "classify_accuracy": "fcnseg.benchmarks.classify_accuracy:run",
}

__all__ = ["BENCHMARKS"]
