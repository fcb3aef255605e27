"""Re-fold a specialised HW graph in-process and estimate it: the one fold-and-estimate step.

The board fit (:mod:`fcnseg.hw.build`: re-fold until it fits, the "a faster fold fits" hint) and
the tile search (:mod:`fcnseg.hw.tile_search`) both ask the same question of a specialised,
unfolded graph: folded by finn's own folding steps for a target rate (``SetFolding`` via
``step_target_fps_parallelization``, then ``step_minimize_bit_width``), how many cycles per tile
and what resources, and does that fit the board counting what finn leaves at 0
(:func:`fcnseg.hw.fit.added_resources`)? Nothing is written but finn's scratch files in
``scratch``; SetFolding's per-layer warnings go into the build log.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fcnseg.hw.fit import Fit, added_resources, check_fit

if TYPE_CHECKING:
    from qonnx.core.modelwrapper import ModelWrapper

    from fcnseg.hw.build import BuildOptions


@contextlib.contextmanager
def _finn_log_into(log_path: Path) -> Iterator[None]:
    """Send finn's logger (``finn_logger``: SetFolding's per-layer warnings) to ``log_path``
    instead of the terminal while in the block."""
    finn_log = logging.getLogger("finn_logger")
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("[%(asctime)s] finn: %(message)s"))
    saved = finn_log.propagate
    finn_log.addHandler(handler)
    finn_log.propagate = False
    try:
        yield
    finally:
        finn_log.removeHandler(handler)
        finn_log.propagate = saved
        handler.close()


@dataclass
class Estimate:
    """finn's figures for one folding of one specialised graph, with the board fit."""

    target_fps: float
    max_cycles: int
    critical_path_cycles: int
    #: finn's resource totals (without the bounds the fit adds)
    finn_total: dict[str, float]
    fit: Fit
    #: the folded graph (callers may drop it once they have the figures)
    folded: Any = None

    def tiles_per_s(self, clock_ns: float) -> float:
        return 1e9 / clock_ns / self.max_cycles


def refold(
    base: ModelWrapper, opts: BuildOptions, scratch: Path, target_fps: float
) -> ModelWrapper:
    """``base`` (specialised, unfolded) folded for ``target_fps`` tiles/s, cycles annotated."""
    from finn.builder.build_dataflow_steps import (
        step_minimize_bit_width,
        step_target_fps_parallelization,
    )
    from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles

    from fcnseg.hw.build import LOG_NAME, make_config

    cfg = make_config(replace(opts, out_dir=scratch), [], target_fps=target_fps)
    (scratch / "report").mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()), _finn_log_into(opts.out_dir / LOG_NAME):
        model = step_target_fps_parallelization(base, cfg)
        model = step_minimize_bit_width(model, cfg)
    return model.transform(AnnotateCycles())


def estimate(base: ModelWrapper, opts: BuildOptions, scratch: Path, target_fps: float) -> Estimate:
    """:func:`refold` ``base`` for ``target_fps`` and estimate it: cycles, resources, fit."""
    from finn.analysis.fpgadataflow.dataflow_performance import dataflow_performance
    from finn.analysis.fpgadataflow.op_and_param_counts import aggregate_dict_keys
    from finn.analysis.fpgadataflow.res_estimation import res_estimation

    folded = refold(base, opts, scratch, target_fps)
    layers = folded.analysis(functools.partial(res_estimation, fpgapart=opts.board.part))
    total = {k: float(v) for k, v in aggregate_dict_keys(layers).items()}
    perf = folded.analysis(dataflow_performance)
    return Estimate(
        target_fps=target_fps,
        max_cycles=int(perf["max_cycles"]),
        critical_path_cycles=int(perf["critical_path_cycles"]),
        finn_total=total,
        fit=check_fit(total, opts.board, opts.margin, added_resources(folded, layers)),
        folded=folded,
    )


def estimator(
    spec_path: Path, opts: BuildOptions, scratch: Path
) -> Callable[[float], tuple[float, Fit]]:
    """``target_fps -> (estimated tiles/s, Fit)`` for the specialised graph at ``spec_path``
    (what :func:`fcnseg.hw.fit.bisect_fps` and :func:`~fcnseg.hw.fit.find_headroom` probe)."""
    from qonnx.core.modelwrapper import ModelWrapper

    base = ModelWrapper(str(spec_path))
    clock_ns = opts.resolved_clock_ns()

    def probe(target_fps: float) -> tuple[float, Fit]:
        est = estimate(base, opts, scratch, target_fps)
        return est.tiles_per_s(clock_ns), est.fit

    return probe
