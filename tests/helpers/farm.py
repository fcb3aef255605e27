"""Test aids for the farm (:mod:`fcnseg.host.farm`): a worker plugin that slows every image down,
so a test can kill a worker while it is in the middle of one; a package of any class count and a
VOC folder to evaluate on a cluster. (The plugin that gives each worker its own emulated board is
:mod:`fcnseg.testing.farm`: the benchmark uses it too.)

It lives in an importable module (not a test file) because Dask workers import it by reference.
The slowdown is a sleep at the start of :meth:`~fcnseg.host.segmenter.Segmenter.segment`, after
the image was claimed and decoded and before anything is written; while a worker sleeps, its
marker file ``<folder>/<pid>.busy`` holds the wall-clock time the sleep ends, so a test can kill
it inside the sleep (a kill there always leaves a claim to break, never a committed mask).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distributed import WorkerPlugin


class SlowImages(WorkerPlugin):
    """Every ``Segmenter.segment`` on the worker first sleeps ``seconds`` (restored on
    teardown); registered before a batch, it is set up again on a restarted worker."""

    name = "fcnseg-test-slow"

    def __init__(self, seconds: float, folder: str) -> None:
        self.seconds, self.folder = seconds, folder
        self.original: Any = None

    def setup(self, worker: Any) -> None:
        from fcnseg.host.segmenter import Segmenter

        self.original = original = Segmenter.segment
        seconds, marker = self.seconds, Path(self.folder) / f"{os.getpid()}.busy"

        def slowed(seg: Segmenter, image: Any) -> Any:
            marker.write_text(repr(time.time() + seconds))
            try:
                time.sleep(seconds)
            finally:
                with contextlib.suppress(OSError):
                    marker.unlink()
            return original(seg, image)

        Segmenter.segment = slowed

    def teardown(self, worker: Any) -> None:
        from fcnseg.host.segmenter import Segmenter

        if self.original is not None:
            Segmenter.segment = self.original


def busy_until(folder: Path, pid: int) -> float | None:
    """When worker ``pid``'s current sleep ends (wall clock), or None if it is not sleeping."""
    try:
        return float((folder / f"{pid}.busy").read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def worker_cluster(workers: int = 3) -> Iterator[tuple[Any, Any]]:
    """``(cluster, client)``: ``workers`` local worker processes, as ``dask worker ADDRESS
    --nthreads 1 --resources FPGA=1`` would start them, with the farm's retry bound; loopback
    only. Closed on exit."""
    import dask
    import distributed

    from fcnseg.host.farm import client as farm_client

    with dask.config.set({"distributed.scheduler.allowed-failures": farm_client.RETRIES}):
        local = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            resources={"FPGA": 1},
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=50,
        )
    with local, distributed.Client(local) as client:
        yield local, client
