"""Board fit: finn's resource estimates against a board's budget, and re-folding until it fits.

finn-plus reports estimates but never compares them with the device: a 99k-LUT design "builds"
for a 53k-LUT Pynq-Z2. Here the budget is the preset's totals times ``1 - margin`` (the margin
leaves room for the shell: DMAs, interconnect, FIFOs that the estimates do not include).

Rates are the accelerator's: tiles/s, one tile being its fixed input (finn calls the same number
FPS and its target ``target_fps``; a frame of any other size takes several tiles, see
:mod:`fcnseg.host.tiling`). Folding is monotone enough in practice (fewer cycles per tile -> more
PE/SIMD -> more LUT and BRAM) that a bisection over the target rate finds the fastest folding that
fits in a few cheap re-foldings (0.5 s each for the shipped FCN-8s) of the specialised model,
without re-running the streamlining. The same bisection, started above the built rate, tells a
user whose design fits with room to spare how much faster a fold still fits (:func:`find_headroom`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from fcnseg.errors import UserError
from fcnseg.hw.boards import RESOURCES, Board


@dataclass
class Fit:
    """The outcome of comparing estimated totals with a budget."""

    fits: bool
    margin: float
    budget: dict[str, float]
    used: dict[str, float]
    #: resources over budget: name -> (used, budget)
    over: dict[str, tuple[float, float]] = field(default_factory=dict)

    def utilisation(self) -> dict[str, float]:
        """Used / full device total, per resource (0 when the device has none and none is used)."""
        full = {
            r: b / (1.0 - self.margin) if self.margin < 1 else b for r, b in self.budget.items()
        }
        return {
            r: (self.used.get(r, 0.0) / full[r]) if full[r] else float(self.used.get(r, 0.0) > 0)
            for r in RESOURCES
        }

    def to_json(self) -> dict:
        return {
            "fits": self.fits,
            "margin": self.margin,
            "budget": self.budget,
            "used": self.used,
            "over": {r: list(v) for r, v in self.over.items()},
            "utilisation": self.utilisation(),
        }


def check_fit(totals: Mapping[str, float], board: Board, margin: float) -> Fit:
    """Compare estimated ``totals`` (finn's ``estimate_layer_resources.json["total"]``)."""
    if not 0.0 <= margin < 1.0:
        raise UserError(f"--margin must be in [0, 1), got {margin}")
    budget = {r: v * (1.0 - margin) for r, v in board.budget().items()}
    used = {r: float(totals.get(r, 0.0)) for r in RESOURCES}
    over = {r: (used[r], budget[r]) for r in RESOURCES if used[r] > budget[r]}
    return Fit(fits=not over, margin=margin, budget=budget, used=used, over=over)


def biggest_layer(layer_resources: Mapping[str, Mapping[str, float]], resource: str) -> str:
    """The layer using the most of ``resource`` (the one to name in an error)."""
    layers = {k: v for k, v in layer_resources.items() if k != "total"}
    return max(layers, key=lambda name: float(layers[name].get(resource, 0.0)))


def misfit_message(
    fit: Fit, layer_resources: Mapping[str, Mapping[str, float]], board: Board
) -> str:
    """One line naming the resource most over budget and the layer using most of it."""
    resource, (used, budget) = max(fit.over.items(), key=lambda kv: kv[1][0] / max(kv[1][1], 1e-9))
    layer = biggest_layer(layer_resources, resource)
    share = float(layer_resources[layer].get(resource, 0.0))
    return (
        f"does not fit {board.name}: {resource} {used:.0f} > budget {budget:.0f} "
        f"({board.budget()[resource]} - {fit.margin:.0%} margin); layer {layer} alone uses "
        f"{share:.0f} {resource}"
    )


@dataclass
class Probe:
    """One re-folding tried by :func:`bisect_fps`."""

    target_fps: float
    fps: float
    fit: Fit


def bisect_fps(
    estimate: Callable[[float], tuple[float, Fit]],
    high_fps: float,
    low_fps: float = 1.0,
    rel_tol: float = 0.05,
    max_probes: int = 12,
) -> tuple[Probe | None, list[Probe]]:
    """Highest target rate (tiles/s) in ``[low_fps, high_fps]`` whose folding fits; bisection in
    log space.

    ``estimate(target_fps) -> (estimated tiles/s, Fit)`` re-folds and estimates. Returns the best
    fitting probe (None if even ``low_fps`` does not fit) and all probes made, for the report.
    """
    probes: list[Probe] = []

    def probe(target: float) -> Probe:
        fps, fit = estimate(target)
        probes.append(Probe(target, fps, fit))
        return probes[-1]

    lowest = probe(low_fps)
    if not lowest.fit.fits:
        return None, probes
    best, lo, hi = lowest, math.log(low_fps), math.log(high_fps)
    while len(probes) < max_probes and hi - lo > math.log1p(rel_tol):
        mid = probe(math.exp((lo + hi) / 2))
        if mid.fit.fits:
            lo = math.log(mid.target_fps)
            if mid.fps > best.fps:
                best = mid
        else:
            hi = math.log(mid.target_fps)
    return best, probes


@dataclass
class Headroom:
    """A faster folding than the built one that still fits the board (finn-plus estimates)."""

    #: the built folding's estimated tiles/s
    current_tiles_per_s: float
    #: the fastest fitting folding found: its estimated tiles/s, target and fit
    tiles_per_s: float
    target_fps: float
    fit: Fit
    #: re-foldings tried to find it
    probes: int

    def suggested_target(self) -> int:
        """A ``--target-fps`` to type: the rate found, rounded down to two significant digits.

        Any target up to the rate found folds to that folding or a smaller one (SetFolding raises
        each layer's parallelism until it meets the target, so a lower target stops no later),
        and smaller foldings use fewer resources: the suggestion fits too.
        """
        rate = self.tiles_per_s
        step = 10 ** max(0, math.floor(math.log10(rate)) - 1)
        return max(1, int(rate // step * step))

    def to_json(self) -> dict:
        return {
            "current_tiles_per_s": self.current_tiles_per_s,
            "tiles_per_s": self.tiles_per_s,
            "target_fps": self.target_fps,
            "suggested_target_fps": self.suggested_target(),
            "utilisation": self.fit.utilisation(),
            "probes": self.probes,
            "method": "re-folded and estimated by finn-plus (not synthesised)",
        }


def find_headroom(
    estimate: Callable[[float], tuple[float, Fit]],
    current_tiles_per_s: float,
    *,
    min_gain: float = 1.2,
    max_speedup: float = 64.0,
    max_probes: int = 10,
) -> Headroom | None:
    """The fastest folding that fits, if it is at least ``min_gain`` times the built one.

    ``estimate`` is the re-folding estimator of :func:`bisect_fps`. The first probe asks for
    ``min_gain`` times the current rate: if that does not fit there is no headroom worth a
    message (one cheap probe); otherwise a bisection up to ``max_speedup`` times the current
    rate finds the limit within 5 %. A full-parallel design that fits everywhere ends at the
    rate the folding saturates at.
    """
    if current_tiles_per_s <= 0:
        return None
    low, high = current_tiles_per_s * min_gain, current_tiles_per_s * max_speedup
    best, probes = bisect_fps(estimate, high_fps=high, low_fps=low, max_probes=max_probes)
    if best is None or best.fps < current_tiles_per_s * min_gain:
        return None
    return Headroom(current_tiles_per_s, best.fps, best.target_fps, best.fit, len(probes))
