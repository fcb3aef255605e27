"""The ``sim`` backend: the package's HW layers in the bit-accurate numpy simulator.

A thin adapter: the simulator (``fcnseg.host.sim``) already has the Engine interface; this module
is what the backend registry imports, so the choice of engine stays in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fcnseg.host.package import Package
    from fcnseg.host.sim.engine import SimEngine


def open_engine(package: Package, batch: int = 4) -> SimEngine:
    """A :class:`~fcnseg.host.sim.engine.SimEngine` over ``package``; ``batch`` tiles at a time."""
    from fcnseg.host.sim.engine import SimEngine

    return SimEngine(package, batch=batch)
