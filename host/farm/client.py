"""The client side of a farm (:mod:`fcnseg.host.farm`): start or join a cluster, submit one task
per image, collect the records into the batch's summary.

:func:`run_farm` does for a farm what :meth:`fcnseg.host.batch.Batch.all` does on one machine:
the same :meth:`~fcnseg.host.batch.Batch.prepare` (output folder checked, ``classes.json``,
finished images skipped), then the images are tasks on the cluster instead of a pipeline here.
Worker deaths are retried by the scheduler at most :data:`RETRIES` times per task (Dask's
``distributed.scheduler.allowed-failures``, set for a local cluster; a remote scheduler keeps its
own setting), and an exception a task raises (a bug; images that fail do not raise) at most
:data:`RETRIES` times (``retries=`` of each submission).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fcnseg.errors import UserError
from fcnseg.host.farm.security import client_security, warn_if_open

if TYPE_CHECKING:
    from fcnseg.host.batch import Batch
    from fcnseg.host.farm.worker import FarmSpec, TaskResult
    from fcnseg.host.inputs import Job
    from fcnseg.host.summary import ImageRecord

#: How often a task is run again after its worker died (or it raised) before it counts as failed.
RETRIES = 2
#: Seconds between looks at finished tasks (and at Ctrl-C).
POLL_S = 0.05
#: Seconds to wait for the scheduler of an existing cluster to answer.
CONNECT_S = 20.0
#: Seconds to wait for the first worker of an existing cluster.
WORKER_WAIT_S = 60.0
#: The resource one image's task takes: a worker owns one accelerator (``--resources FPGA=1``).
RESOURCE = "FPGA"


def _distributed() -> Any:
    """The ``distributed`` module, or one line saying how to install it."""
    try:
        import distributed
    except ModuleNotFoundError as error:
        raise UserError(
            f"--local-workers/--scheduler need Dask distributed ({error.name} is not installed): "
            "pip install 'fcnseg[cluster]'"
        ) from None
    return distributed


def farm_spec(batch: Batch, options: dict[str, Any]) -> FarmSpec:
    """What the workers need to open this batch (:class:`~fcnseg.host.farm.worker.FarmSpec`),
    with absolute paths."""
    from fcnseg.host.farm.worker import FarmSpec

    package = getattr(batch.seg.package, "path", None)
    names = ("overlay", "legend", "alpha", "overlay_format", "jpeg_quality", "scores")
    batch_options = {name: getattr(batch, name) for name in names}
    batch_options.update(max_pixels=batch.max_pixels, flags=dict(batch.flags))
    return FarmSpec(
        package=os.path.abspath(package) if package is not None else None,
        backend=options["backend"],
        out_dir=os.path.abspath(batch.out_dir),
        shift_stitch=int(options["shift_stitch"]),
        overlap=options["overlap"],
        board=options["board"],
        batch_options=batch_options,
        overwrite=bool(batch.overwrite),
        started=batch.started,
    )


@contextmanager
def connect(
    local_workers: int | None, scheduler: str | None, say: Any, security: Any = None
) -> Iterator[Any]:
    """A ``distributed.Client``: of a new local cluster of ``local_workers`` processes (one
    thread and one ``FPGA`` each; it and its HTTP server on 127.0.0.1), or of the cluster at
    ``scheduler`` (``security``: :func:`~fcnseg.host.farm.security.client_security`), with at
    least one worker that has the ``FPGA`` resource."""
    distributed = _distributed()
    import dask

    if local_workers is not None:
        with dask.config.set({"distributed.scheduler.allowed-failures": RETRIES}):
            cluster = distributed.LocalCluster(
                n_workers=local_workers,
                threads_per_worker=1,
                processes=True,
                resources={RESOURCE: 1},
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",  # its HTTP server: loopback, a free port
                # the workers share this terminal: what matters reaches the records, and at
                # ERROR their shutdown after Ctrl-C logs heartbeat tracebacks
                silence_logs=logging.CRITICAL,
            )
        try:
            with distributed.Client(cluster) as client:
                from fcnseg.host.farm.worker import LocalWorker

                client.register_plugin(LocalWorker(), name=LocalWorker.name)
                yield client
        finally:
            cluster.close()
        return
    assert scheduler is not None
    warn_if_open(scheduler, say)
    try:
        client = distributed.Client(scheduler, timeout=CONNECT_S, security=security)
    except (OSError, TimeoutError, asyncio.TimeoutError) as error:
        why = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"--scheduler {scheduler}: cannot connect ({why})") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except (TimeoutError, asyncio.TimeoutError):  # distinct classes on Python 3.10
            raise UserError(
                f"--scheduler {scheduler}: no worker joined within {WORKER_WAIT_S:.0f} s"
            ) from None
        workers = client.scheduler_info().get("workers", {})
        if not any(w.get("resources", {}).get(RESOURCE) for w in workers.values()):
            raise UserError(
                f"--scheduler {scheduler}: no worker has the {RESOURCE} resource: start each as "
                f"`dask worker {scheduler} --nthreads 1 --resources {RESOURCE}=1`"
            )
        yield client


def for_worker(job: Job) -> Job:
    """``job`` as a worker gets it: an absolute source (workers may run in other folders) and
    no shared frame reader (each task decodes its own frame)."""
    return dataclasses.replace(job, source=Path(os.path.abspath(job.source)), reader=None)


def run_farm(
    batch: Batch,
    jobs: list[Job],
    options: dict[str, Any],
    *,
    local_workers: int | None = None,
    scheduler: str | None = None,
) -> None:
    """Run ``jobs`` on a cluster (module docstring), filling ``batch.summary``. Ctrl-C cancels
    the tasks and propagates; a full disk on a worker stops the batch."""
    start = time.perf_counter()
    security = security_of(scheduler, options)  # before any output: a refusal is exit 2
    try:
        todo = batch.prepare(jobs, overwrite=options["overwrite"])
        if not todo:
            return
        spec = farm_spec(batch, options)
        with session(local_workers, scheduler, batch.say, security) as (client, interrupted):
            _run_tasks(client, batch, spec, todo, interrupted)
    finally:
        batch.summary.seconds = time.perf_counter() - start
    for line in shares(batch.summary.records):
        batch.say(line)


def security_of(scheduler: str | None, options: dict[str, Any]) -> Any:
    """The ``distributed.Security`` of the ``tls_ca_file``/``tls_cert``/``tls_key`` options
    (:func:`~fcnseg.host.farm.security.client_security`): None for ``tcp://``, a one-line
    :class:`UserError` for a combination that cannot work."""
    tls = (options.get("tls_ca_file"), options.get("tls_cert"), options.get("tls_key"))
    return client_security(scheduler, *tls)


@contextmanager
def session(
    local_workers: int | None, scheduler: str | None, say: Any, security: Any = None
) -> Iterator[tuple[Any, threading.Event]]:
    """A connected client (:func:`connect`) and the Ctrl-C flag (:func:`_interrupt_flag`) of
    one farm run, the dashboard link said when there is one; a Ctrl-C during the cluster's
    start is a KeyboardInterrupt at once."""
    with _interrupt_flag() as interrupted:
        with connect(local_workers, scheduler, say, security) as client:
            if interrupted.is_set():  # during the cluster's start
                raise KeyboardInterrupt
            if "dashboard" in client.scheduler_info().get("services", {}):
                say(f"fcnseg: dashboard: {client.dashboard_link}")
            yield client, interrupted


def fpga_workers(client: Any) -> int:
    """How many workers of the cluster own an accelerator (the ``FPGA`` resource)."""
    workers = client.scheduler_info().get("workers", {})
    return sum(1 for w in workers.values() if w.get("resources", {}).get(RESOURCE))


def each_result(
    client: Any, futures: list[Any], interrupted: threading.Event
) -> Iterator[tuple[Any, Any]]:
    """``(future, result)`` of each of ``futures`` as it finishes (``result`` the exception
    and traceback if it failed: ``future.status == "error"``), each once; a Ctrl-C
    (``interrupted``) is a KeyboardInterrupt raised between results, after those already
    finished were yielded. What has not finished is cancelled when the iteration ends, however
    it ends.

    Results are fetched as soon as a task finishes (``with_results``): a result still held on
    a worker when that worker dies would be computed again. Ctrl-C is taken as a flag and acted
    on here, not inside distributed's calls (a KeyboardInterrupt inside ``Client`` calls leaves
    a logged traceback behind).
    """
    from distributed import as_completed

    pending = {future.key: future for future in futures}
    try:
        results = as_completed(list(futures), with_results=True, raise_errors=False)
        while pending:
            ready = results.next_batch(block=False)
            for future, result in ready:
                if pending.pop(future.key, None) is not None:
                    yield future, result
            if interrupted.is_set():
                raise KeyboardInterrupt
            if not ready:
                interrupted.wait(POLL_S)
    finally:
        client.cancel(list(pending.values()))


def shares(records: list[ImageRecord]) -> list[str]:
    """One line per worker: the images it did, its share of the batch's, and its rate (images
    per second of its own busy time)."""
    done: dict[str, list[float]] = {}
    for record in records:
        if record.status == "done" and record.worker is not None:
            done.setdefault(record.worker, []).append(record.seconds)
    total = sum(len(seconds) for seconds in done.values())
    lines = []
    for worker, seconds in sorted(done.items()):
        busy = sum(seconds)
        rate = f"{len(seconds) / busy:.2f} img/s" if busy > 0 else "- img/s"
        lines.append(
            f"fcnseg: worker {worker}: {len(seconds)} image(s) "
            f"({100 * len(seconds) / total:.0f}%), {rate} busy"
        )
    return lines


def _run_tasks(
    client: Any,
    batch: Batch,
    spec: FarmSpec,
    todo: list[tuple[Job, ImageRecord]],
    interrupted: threading.Event,
) -> None:
    """Register the plugin, submit one task per image, merge each record as it comes back
    (:func:`each_result`: fetched at once, each future dropped once merged)."""
    from fcnseg.host.farm.worker import PLUGIN, FarmPlugin, segment_one

    client.register_plugin(FarmPlugin(spec), name=PLUGIN)
    token = f"{os.getpid()}-{time.time_ns()}"
    records: dict[str, ImageRecord] = {}
    per_worker: dict[str, int] = {}  # worker port -> images done, for the progress bar
    try:
        futures = []
        for k, (job, record) in enumerate(todo):
            future = client.submit(
                segment_one,
                for_worker(job),
                record,
                key=f"fcnseg-segment-{token}-{k}",
                resources={RESOURCE: 1},
                retries=RETRIES,
                pure=False,
            )
            futures.append(future)
            records[future.key] = record
        with closing(each_result(client, futures, interrupted)) as results:
            for future, result in results:  # closed (the rest cancelled) before unregistering
                record = records.pop(future.key)
                stop = _merge(client, batch, record, future, result)
                _count(batch, record, per_worker)
                if stop is not None:
                    return
    finally:
        client.unregister_worker_plugin(PLUGIN)


def recorded_done(client: Any, key: str, record: ImageRecord) -> bool:
    """If an earlier attempt of task ``key`` finished its image (its worker died before the
    client fetched the result: :func:`fcnseg.host.farm.worker.done_event`), make ``record``
    that attempt's ``done`` record; True if so."""
    import numpy as np

    from fcnseg.host.farm.worker import DONE_TOPIC

    for _, event in reversed(client.get_events(DONE_TOPIC)):
        if isinstance(event, dict) and event.get("key") == str(key):
            record.status, record.message = "done", None
            record.worker, record.seconds = event.get("worker"), float(event.get("seconds", 0))
            size, histogram = event.get("size"), event.get("histogram")
            record.size = None if size is None else (int(size[0]), int(size[1]))
            record.histogram = None if histogram is None else np.asarray(histogram, np.int64)
            return True
    return False


@contextmanager
def _interrupt_flag() -> Iterator[threading.Event]:
    """An event set by the first Ctrl-C (SIGINT) while the block runs; a second one raises
    KeyboardInterrupt as usual. Only the main thread can take signals: elsewhere the event is
    never set."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return

    def flag(signum: int, frame: Any) -> None:
        event.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, flag)
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, previous)


def _count(batch: Batch, record: ImageRecord, per: dict[str, int]) -> None:
    """One more image on the progress bar, which shows the images each worker (by port) has
    done."""
    batch.bar.update()
    if record.worker is not None and record.status == "done":
        port = record.worker.rsplit(":", 1)[-1]
        per[port] = per.get(port, 0) + 1
        if hasattr(batch.bar, "set_postfix_str"):
            batch.bar.set_postfix_str(" ".join(f":{p} {n}" for p, n in sorted(per.items())))


def _merge(client: Any, batch: Batch, record: ImageRecord, future: Any, result: Any) -> str | None:
    """Copy a finished task's record into the summary's ``record`` (a first attempt's, if that
    one finished the image: :func:`recorded_done`); the stop reason, if the batch must stop
    (then the images not reached are recorded as not attempted)."""
    from fcnseg.host.farm.worker import WRITTEN_SINCE

    if future.status == "error":  # the task raised, or lost its workers, RETRIES + 1 times
        error = result[1]
        record.status = "failed"
        record.message = f"{record.input}: {type(error).__name__}: {error} (gave up after retries)"
        batch.say(f"fcnseg: {record.message}")
        return None
    done: TaskResult = result
    for name in (f.name for f in dataclasses.fields(done.record)):
        if name not in ("input", "outputs"):
            setattr(record, name, getattr(done.record, name))
    for line in done.lines:
        batch.say(line)
    if record.status == "another-run" and record.message == WRITTEN_SINCE:
        recorded_done(client, future.key, record)
    if done.stopped is not None:
        batch.stopped(record, done.stopped, record.message or record.input)
        return done.stopped
    if record.status == "failed":
        batch.say(f"fcnseg: {record.message}")
    return None
