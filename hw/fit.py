"""Board fit: finn's resource estimates against a board's budget, and re-folding until it fits.

finn-plus reports estimates but never compares them with the device: a 99k-LUT design "builds"
for a 53k-LUT Pynq-Z2. Here the budget is the preset's totals times ``1 - margin`` (the margin
leaves room for the shell: DMAs, interconnect, FIFOs that the estimates do not include).

Folding is monotone enough in practice (fewer cycles per frame -> more PE/SIMD -> more LUT and
BRAM) that a bisection over the target FPS finds the fastest folding that fits in a few cheap
re-foldings of the specialised model, without re-running the streamlining.
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
    """Highest target FPS in ``[low_fps, high_fps]`` whose folding fits; bisection in log space.

    ``estimate(target_fps) -> (estimated_fps, Fit)`` re-folds and estimates. Returns the best
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
