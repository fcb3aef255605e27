"""The worker side of a farm (:mod:`fcnseg.host.farm`): the plugin that opens a worker's
accelerator once, and the task that segments one image with it.

Both live in this installed module, so the client's cloudpickle sends them by reference (every
node runs the same fcnseg and Python). :class:`FarmSpec` is everything a worker needs to build
the batch's :class:`~fcnseg.host.batch.Batch` (absolute paths: workers may run in other folders);
:class:`FarmPlugin` builds it in ``setup`` (the Segmenter opened on the worker's backend: the
board's overlay, or the simulator) and closes it in ``teardown``; :func:`segment_one` runs
:meth:`Batch.one` on it and returns the image's record, never raising for a failed image.
:class:`OpenOnce` is that plugin for any spec with an ``open()`` (``fcnseg eval`` on a cluster
opens its Segmenter and dataset with it: :mod:`fcnseg.quantize.farm_eval`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed import WorkerPlugin, get_worker

from fcnseg.errors import ParameterError, UserError
from fcnseg.host.batch import Batch, BatchStopped
from fcnseg.host.inputs import Job
from fcnseg.host.summary import ImageRecord

#: The plugin's name on every worker (one farm batch at a time per cluster).
PLUGIN = "fcnseg-farm"
#: Seconds between looks at an image another host's run holds (:func:`segment_one`).
CLAIM_POLL_S = 2.0
#: The scheduler's event topic of finished images (:func:`done_event`).
DONE_TOPIC = "fcnseg-farm-done"
#: What a task's record says when the image's mask was written after the batch started.
WRITTEN_SINCE = (
    "written since this batch started: by another run, or by an attempt of this batch whose "
    "worker was lost after writing it"
)


@dataclass(frozen=True)
class FarmSpec:
    """The batch as a worker opens it: the package and backend, and :class:`Batch`'s options."""

    package: str | None  #: absolute path, or None: the worker's shipped default package
    backend: str
    out_dir: str  #: absolute
    shift_stitch: int = 1
    overlap: int | None = None
    board: str | None = None
    backend_options: dict[str, Any] = field(default_factory=dict)
    batch_options: dict[str, Any] = field(default_factory=dict)  #: Batch's output options
    overwrite: bool = False
    started: float = 0.0  #: the client's wall clock at the start (masks written since: ours)

    def open(self) -> Batch:
        """The Segmenter opened on this worker's backend, in a :class:`Batch` of the options."""
        from fcnseg.host.segmenter import Segmenter

        seg = Segmenter.load(
            self.package,
            self.backend,
            shift_stitch=self.shift_stitch,
            overlap=self.overlap,
            board=self.board,
            **self.backend_options,
        )
        batch = WorkerBatch(seg, Path(self.out_dir), **self.batch_options)
        batch.overwrite, batch.started = self.overwrite, self.started
        batch.bar = _NoBar()
        return batch


class WorkerBatch(Batch):
    """A :class:`Batch` on a worker: what it would print (notes, an image's failure) is kept
    for the task's result, and the client prints it, so a user sees every line in one place."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.lines: list[str] = []

    def say(self, line: str) -> None:
        self.lines.append(line)

    def said(self) -> list[str]:
        """The lines said since the last call (one task's)."""
        lines, self.lines = self.lines, []
        return lines


class _NoBar:
    """A worker has no progress bar (the client's counts its results)."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class TaskResult:
    """One task's outcome: the image's record, filled in, and the reason the batch must stop
    (a full disk), if writing met one."""

    record: ImageRecord
    stopped: str | None = None
    lines: list[str] = field(default_factory=list)  #: notes the worker said, for the client


class OpenOnce(WorkerPlugin):
    """Opens what a farm's tasks work with once per worker (:meth:`setup`: ``spec.open()``, the
    accelerator opened on the worker's backend) and closes its accelerator at the end
    (:meth:`teardown`). ``spec`` is any picklable object with an ``open()`` method: a
    :class:`FarmSpec` (``fcnseg segment``), or an evaluation's
    (:class:`fcnseg.quantize.farm_eval.EvalSpec`). Tasks get it with :func:`opened`.

    A worker that cannot open it (the package is not on its storage, no board) keeps the one
    line, and its tasks fail with it; the client sees which worker said so.
    """

    def __init__(self, spec: Any, name: str) -> None:
        self.spec, self.name = spec, name
        self.opened: Any = None
        self.error: str | None = None

    def setup(self, worker: Any) -> None:
        try:
            self.opened = self.spec.open()
        except ParameterError as error:
            from fcnseg.host.cli import FLAGS

            self.error = error.spelled(FLAGS)
        except UserError as error:
            self.error = str(error)
        except Exception as error:  # a bug, or a board that failed: one line, with its type
            self.error = f"{type(error).__name__}: {error}"

    def teardown(self, worker: Any) -> None:
        engine = getattr(getattr(self.opened, "seg", None), "engine", None)
        close = getattr(engine, "close", None)
        if callable(close):
            close()
        self.opened = None


class FarmPlugin(OpenOnce):
    """The plugin of an ``fcnseg segment`` batch: opens its :class:`Batch` once per worker."""

    def __init__(self, spec: FarmSpec) -> None:
        super().__init__(spec, PLUGIN)

    @property
    def batch(self) -> Batch | None:
        """The batch opened on this worker, or None (then :attr:`error` says why)."""
        return self.opened


def opened(name: str) -> tuple[Any, Any, str]:
    """In a task: ``(this worker, what plugin `name` opened or None, why not)``."""
    worker = get_worker()
    plugin = worker.plugins.get(name)
    thing = getattr(plugin, "opened", None)
    reason = getattr(plugin, "error", None) or f"the {name} plugin is not set up"
    return worker, thing, reason


class LocalWorker(WorkerPlugin):
    """Makes a worker of a ``--local-workers`` cluster ignore SIGINT: a terminal's Ctrl-C
    reaches the whole process group, and the client alone handles it (it cancels the tasks
    and closes the cluster, :mod:`fcnseg.host.farm.client`); without this, each worker
    process prints a KeyboardInterrupt traceback. Workers of ``--scheduler`` clusters run on
    their own and keep their Ctrl-C."""

    name = "fcnseg-local-worker"

    def setup(self, worker: Any) -> None:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def segment_one(job: Job, record: ImageRecord) -> TaskResult:
    """Segment ``job`` on this worker's accelerator and return its record (a Dask task).

    Never raises for a failed image (a bad file, an unwritable output folder): the record says
    so in one line naming this worker, and Dask does not retry it. Only the loss of the worker
    itself makes Dask run this again elsewhere, and then the claim and the existing-mask checks
    of :meth:`Batch.one` keep the image from being written twice.
    """
    worker, batch, reason = opened(PLUGIN)
    record.worker = worker.address
    if batch is None:
        return _failed(record, f"{job.source}: worker {worker.address}: {reason}")
    start = time.perf_counter()
    stopped = None
    try:
        batch.one(job, record)
        _wait_out_a_remote_claim(batch, job, record)
    except BatchStopped as stop:
        record.status, record.message, stopped = "failed", str(stop), stop.reason
    said = batch.said()
    if record.status == "another-run" and record.message == "done by another run":
        record.message = WRITTEN_SINCE
    elif record.status == "failed" and record.message:
        said = [line for line in said if line != f"fcnseg: {record.message}"]  # the client's
        record.message = f"{record.message} (worker {worker.address})"
    record.seconds = record.seconds or time.perf_counter() - start
    if record.status == "done":
        worker.log_event(DONE_TOPIC, done_event(worker.get_current_task(), record))
    return TaskResult(record, stopped, said)


def _wait_out_a_remote_claim(batch: Batch, job: Job, record: ImageRecord) -> None:
    """If ``job`` is held by a run this host cannot judge (a worker on another host, maybe the
    one this task is a retry of, killed there), look again every :data:`CLAIM_POLL_S` until its
    mask is there or its claim went stale (its heartbeat stopped: at most
    :data:`~fcnseg.host.claims.CLAIM_STALE_SECONDS` after its last beat), then take the image.
    A live holder's heartbeat keeps its claim: then the wait ends after one stale period plus
    two beats, and the image is that run's (``another-run``)."""
    from fcnseg.host.claims import CLAIM_STALE_SECONDS, HEARTBEAT_SECONDS, holder_of, remote

    deadline = time.monotonic() + CLAIM_STALE_SECONDS + 2 * HEARTBEAT_SECONDS
    while record.status == "another-run" and record.message != "done by another run":
        if time.monotonic() > deadline:
            return
        holder = holder_of(batch.outputs(job).mask)
        if holder is not None:  # None: released meanwhile, look again at once
            if not remote(holder):  # a live run on this host: its image
                return
            time.sleep(CLAIM_POLL_S)
        record.status, record.message = "not-attempted", None
        batch.one(job, record)


def done_event(key: Any, record: ImageRecord) -> dict[str, Any]:
    """What the scheduler keeps of a finished image (msgpack-serialisable), sent the moment its
    outputs are committed. A task's result stays on its worker until the client fetches it; if
    the worker dies in between, Dask runs the task again, which finds the image's mask and says
    ``another-run``: the client then takes the image's record from this event instead
    (:func:`fcnseg.host.farm.client.recorded_done`), so the image counts as done once."""
    histogram = None if record.histogram is None else [int(n) for n in record.histogram]
    return {
        "key": str(key),
        "worker": record.worker,
        "size": None if record.size is None else [int(n) for n in record.size],
        "seconds": float(record.seconds),
        "histogram": histogram,
    }


def _failed(record: ImageRecord, line: str) -> TaskResult:
    record.status, record.message = "failed", line
    return TaskResult(record)
