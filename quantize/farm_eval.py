"""``fcnseg eval --package ... --local-workers N | --scheduler ADDRESS``: a package scored on a
Dask cluster (issue 17), with exactly the confusion matrix of a local ``fcnseg eval``.

The farm's pieces are reused (:mod:`fcnseg.host.farm`): the cluster started or joined, TLS, the
Ctrl-C flag (:func:`~fcnseg.host.farm.client.session`), the results fetched as they finish
(:func:`~fcnseg.host.farm.client.each_result`) and the plugin that opens each worker's
accelerator once (:class:`~fcnseg.host.farm.worker.OpenOnce`). What is this module's:

- :class:`EvalSpec` is what a worker opens: the package on its backend (the board's overlay,
  or the simulator) and the dataset, by the same spec the client read (a dataset folder with an
  absolute path: it must be on storage every worker sees at that path);
- the images ``0 .. count-1`` are cut into chunks of consecutive indices (:func:`chunks`), one
  task each (:func:`score_chunk`), which returns the chunk's confusion matrix (int64); the
  client adds them up. A chunk is a pure function of its indices, so a task run again after
  its worker died (at most :data:`~fcnseg.host.farm.client.RETRIES` times) returns the same
  matrix, and the client takes one result per chunk, each once: every image is counted
  exactly once and the sum is the local run's matrix, integer for integer;
- an image a worker cannot read (a broken file in the dataset, or a module the dataset needs
  missing there: scikit-image for the synthetic scenes) stops the evaluation with its one line
  naming the worker, as a local run stops (exit 2): a metric over part of the data would
  mislead.

Imports no torch (the ``--package`` path runs on a board) and Dask only when called.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import numpy as np

from fcnseg.errors import UserError

#: The worker plugin's name (one evaluation at a time per cluster; a segment batch's differs).
EVAL_PLUGIN = "fcnseg-eval"
#: The most images one task scores: small enough to spread a short split over every worker,
#: large enough that Dask's per-task cost (a few ms) stays small next to a tile's.
MAX_CHUNK = 8
#: Chunks per worker aimed at, so a slow worker does not hold the end of the run up.
CHUNKS_PER_WORKER = 4


def absolute_data(data: str) -> str:
    """``data`` with an absolute folder (``voc:PATH`` -> ``voc:/abs/PATH``): workers may run in
    other folders. ``synthetic`` (no folder) is unchanged."""
    kind, colon, path = data.partition(":")
    return f"{kind}:{os.path.abspath(path)}" if colon and path else data


@dataclass(frozen=True)
class EvalSpec:
    """The evaluation as a worker opens it: the package and its backend, and the dataset."""

    package: str | None  #: absolute path, or None: the worker's shipped default package
    backend: str
    data: str  #: the dataset spec, any folder absolute (:func:`absolute_data`)
    split: str
    size: tuple[int, int] = (256, 256)
    length: int | None = None
    shift_stitch: int = 1
    overlap: int | None = None

    def open(self) -> Opened:
        """The Segmenter on this worker's backend and the dataset (:class:`Opened`)."""
        from fcnseg.host.segmenter import Segmenter
        from fcnseg.quantize.data import spec

        seg = Segmenter.load(
            self.package, self.backend, shift_stitch=self.shift_stitch, overlap=self.overlap
        )
        dataset = spec.open_dataset(self.data, self.split, size=self.size, length=self.length)
        return Opened(seg, dataset)


@dataclass
class Opened:
    """What :class:`EvalSpec` opened on one worker."""

    seg: Any  #: the :class:`~fcnseg.host.segmenter.Segmenter` (its engine closed on teardown)
    dataset: Any  #: the :class:`~fcnseg.quantize.data.base.SegmentationDataset`


@dataclass
class ChunkResult:
    """One task's outcome: the confusion matrix of images ``start .. stop-1``, or the one line
    that says why they could not be scored; who did it and how long it took."""

    start: int
    stop: int
    worker: str
    seconds: float = 0.0
    matrix: np.ndarray | None = None  #: int64, ``(classes, classes)``
    error: str | None = None


def chunks(count: int, workers: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges covering ``0 .. count-1`` in order, each of at most
    :data:`MAX_CHUNK` images, about :data:`CHUNKS_PER_WORKER` per worker."""
    size = max(1, min(MAX_CHUNK, -(-count // (CHUNKS_PER_WORKER * max(1, workers)))))
    return [(start, min(start + size, count)) for start in range(0, count, size)]


def score_chunk(start: int, stop: int, classes: int) -> ChunkResult:
    """The confusion matrix of images ``start .. stop-1`` on this worker (a Dask task).

    A chunk that cannot be scored (the plugin could not open the package or the dataset, an
    image cannot be read) is a result with one line naming this worker, not an exception, so
    Dask does not run it again: only the loss of the worker does.
    """
    from fcnseg.host.farm.worker import opened
    from fcnseg.quantize.metrics import ConfusionMatrix

    worker, where, reason = opened(EVAL_PLUGIN)
    result = ChunkResult(start, stop, worker.address)
    if where is None:
        result.error = f"worker {worker.address}: {reason}"
        return result
    began = time.perf_counter()
    matrix = ConfusionMatrix(classes)
    index = start
    try:
        for index in range(start, stop):
            image, label = where.dataset[index]
            matrix.update(label, where.seg(image))
    except (UserError, OSError, ImportError) as error:  # ImportError: a worker lacks a module
        why = str(error).splitlines()[0] if str(error) else type(error).__name__
        result.error = f"image {index} of the dataset: {why} (worker {worker.address})"
        return result
    result.matrix, result.seconds = matrix.matrix, time.perf_counter() - began
    return result


@dataclass
class FarmScore:
    """The summed confusion matrix of a cluster's evaluation, and each worker's share."""

    matrix: np.ndarray  #: int64
    images: int
    per_worker: dict[str, tuple[int, float]] = dataclasses.field(default_factory=dict)

    def shares(self) -> list[str]:
        """One line per worker: its images, its share and its rate over its own busy time."""
        lines = []
        for worker, (images, busy) in sorted(self.per_worker.items()):
            rate = f"{images / busy:.2f} img/s" if busy > 0 else "- img/s"
            share = 100 * images / self.images if self.images else 0
            lines.append(f"fcnseg: worker {worker}: {images} image(s) ({share:.0f}%), {rate} busy")
        return lines


def evaluate_on_cluster(
    spec: EvalSpec,
    count: int,
    classes: int,
    *,
    local_workers: int | None = None,
    scheduler: str | None = None,
    security: Any = None,
    say: Callable[[str], None] = print,
    progress: bool = False,
) -> FarmScore:
    """Score images ``0 .. count-1`` of ``spec``'s dataset on a cluster (module docstring).

    ``security``: :func:`fcnseg.host.farm.client.security_of`, checked by the caller before
    anything is read. Raises :class:`UserError` with the first chunk's line that could not be
    scored, or when a chunk's workers died more than ``RETRIES`` times; Ctrl-C propagates as
    KeyboardInterrupt (what has not started is cancelled, a local cluster closed).
    """
    from tqdm import tqdm

    from fcnseg.host.farm.client import RESOURCE, RETRIES, each_result, fpga_workers, session
    from fcnseg.host.farm.worker import OpenOnce

    total = np.zeros((classes, classes), dtype=np.int64)
    score = FarmScore(total, 0)
    with session(local_workers, scheduler, say, security) as (client, interrupted):
        client.register_plugin(OpenOnce(spec, EVAL_PLUGIN), name=EVAL_PLUGIN)
        token = f"{os.getpid()}-{time.time_ns()}"
        bar = tqdm(total=count, desc="eval", unit="img", leave=False, disable=not progress)
        try:
            futures = [
                client.submit(
                    score_chunk,
                    start,
                    stop,
                    classes,
                    key=f"fcnseg-eval-{token}-{start}",
                    resources={RESOURCE: 1},
                    retries=RETRIES,
                    pure=False,
                )
                for start, stop in chunks(count, fpga_workers(client))
            ]
            with closing(each_result(client, futures, interrupted)) as results:
                for future, result in results:
                    if future.status == "error":  # lost its workers (or raised) RETRIES + 1 times
                        error = result[1]
                        raise UserError(
                            f"{future.key}: {type(error).__name__}: {error} (gave up after "
                            f"{RETRIES} retries)"
                        )
                    done: ChunkResult = result
                    if done.error is not None:
                        raise UserError(done.error)
                    assert done.matrix is not None  # no error: scored
                    total += done.matrix
                    images, busy = score.per_worker.get(done.worker, (0, 0.0))
                    score.per_worker[done.worker] = (images + done.stop - done.start,
                                                     busy + done.seconds)  # fmt: skip
                    score.images += done.stop - done.start
                    bar.update(done.stop - done.start)
        finally:
            bar.close()
            client.unregister_worker_plugin(EVAL_PLUGIN)
    return score
