"""Emulated boards for a farm's workers (:mod:`fcnseg.host.farm`): a worker plugin that gives
each Dask worker process its own emulated Zynq, for the board tests and the farm benchmark.

It lives in an importable module because Dask workers import it by reference (the client's
cloudpickle sends the class by name), and outside ``tests/`` because the benchmark
(:mod:`fcnseg.benchmarks.farm`) uses it too. Needs pynq on the workers (``.venv-board``).
"""

from __future__ import annotations

from typing import Any

from distributed import WorkerPlugin


class EmulatedBoard(WorkerPlugin):
    """Gives the worker process its own emulated Zynq (:mod:`fcnseg.testing.emulated_zynq`),
    installed as pynq's active device, so the farm's plugin opens the ``pynq`` backend on it.
    Register it before the batch: a worker's plugins are set up in the order they were
    registered, also on a restarted worker.

    Its fabric is the bit-exact simulator, or with ``paced`` zero scores at the package's
    estimated timing (:func:`~fcnseg.testing.emulated_zynq.standin_device`: its interval and
    latency, times ``time_scale``): what a real board's fabric would cost, without the
    simulator's CPU time.
    """

    name = "fcnseg-emulated-board"

    def __init__(self, package: str, *, paced: bool = False, time_scale: float = 1.0) -> None:
        self.package = package
        self.paced = paced
        self.time_scale = time_scale
        self.device: Any = None

    def setup(self, worker: Any) -> None:
        from fcnseg.host.package import load_package
        from fcnseg.testing import emulated_zynq as ez

        package = load_package(self.package)
        if self.paced:
            timing = ez.FabricTiming.of_package(package, self.time_scale)
            self.device = ez.standin_device(package, timing=timing)
        else:
            self.device = ez.EmulatedZynq(ez.sim_accelerator(package))
        self.device.__enter__()

    def teardown(self, worker: Any) -> None:
        if self.device is not None:
            self.device.__exit__(None, None, None)
            self.device = None


def board_tiles(dask_worker: Any) -> int:
    """Tiles this worker's emulated board has run (for ``client.run``)."""
    plugin = dask_worker.plugins.get(EmulatedBoard.name)
    return int(plugin.device.stats["tiles"]) if plugin and plugin.device else 0
