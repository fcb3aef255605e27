"""Pipelined segmentation: decoding, accelerator calls and finishing overlap in threads.

On a Zynq the fabric is rarely the bottleneck; the ARM cores are (JPEG decoding, tile packing,
bilinear upsampling + argmax, PNG encoding). A :class:`Pipeline` keeps every stage busy at once::

    sources ─▶ [decode] ─q─▶ [accelerate] ─q─▶ [finish × k] ─▶ results, in input order
               image -> RGB   canvas, tiles,    upsample + argmax,
                              engine.run,       write (callback)
                              stitch

Three kinds of threads joined by bounded queues (``depth`` items each, so memory stays bounded
and a slow stage back-pressures the others). Threads work because the heavy parts release the
GIL: numpy's array kernels, Pillow's codecs, and the accelerator wait (a DMA poll that sleeps,
:mod:`fcnseg.host.backends.pynq`; a simulator is numpy). ``accelerate_workers`` threads
(default 2) each take a frame: on an engine that keeps calls in flight (``concurrent``, the
pynq engine) they submit at once, so frame k+1's first tiles enter the fabric while frame k's
last ones drain and one worker cuts tiles and stitches while the other's are in the fabric;
an engine without (a simulator) is one resource they take turns on under a lock. Frames in
flight are the accelerate workers at work: on a concurrent engine, as many as keep its calls
in flight full for the frame's size (two for the shipped 256x256 packages at 512x1024: 65
tiles, 5 calls of 16 against 4 in flight; ``calls + 1`` for frames of one tile), up to
``calls + 1`` workers; the engine's ``calls`` must cover the fabric's latency (``calls *
tiles per call >= L / II``). ``finish_workers`` threads share the
finishing, and a reorder buffer yields results in input order. Every worker of every stage runs
one loop (``_Stages.worker``: take an item, do the stage's work unless the item failed, pass it
on; the stage's last worker out tells the next stage), and the segmenter is only read: the
accelerate stage meters its engine calls by handing ``Segmenter.scores`` a timed ``run``, so
nothing is swapped under a caller that shares the segmenter, and finishing is
:meth:`Segmenter.finish`, the same step as :meth:`Segmenter.segment`'s.

Failures are per item: an image that cannot be decoded or segmented becomes a :class:`Result`
with ``error`` set and the batch goes on (an accelerator timeout makes the engine refuse further
work with the same one-line message, so later items fail fast instead of hanging).

Timing: each result has its per-stage seconds (``tiling`` is the host's share of the
accelerate stage: cutting tiles and stitching). :meth:`Pipeline.report` sums them, measures
the time inside ``engine.run`` (at least one worker inside it, for a concurrent engine), and
compares the fabric's own busy time (tiles / the package's
estimated FPS) with the wall clock: if the fabric is busy at least 90% of the time the host keeps
up; otherwise the busiest stage is the bottleneck. ``host_ms_per_image`` (all CPU-side work,
summed over threads, incl. the engine's packing and copies) divided by the cores is what the
host needs per image on its own, to compare with ``fabric_ms_per_image`` on another CPU.

>>> pipe = Pipeline(Segmenter.load(package), write=save)        # doctest: +SKIP
>>> for result in pipe.run(paths):                                # doctest: +SKIP
...     print(result.index, result.error or "ok")
>>> pipe.report().keeps_up                                        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fcnseg.errors import ParameterError, UserError

if TYPE_CHECKING:
    from fcnseg.host.segmenter import Segmentation, Segmenter

STAGES = ("decode", "accelerate", "finish")
#: Engine phases that run on the host CPU (the rest of an engine call is the fabric's).
HOST_ENGINE_PHASES = (
    "pack_input",
    "copy_input_to_device",
    "copy_output_from_device",
    "unpack_output",
)
#: Threads finishing images by default: two suit a Zynq's two ARM cores (docs/arm_budget.md).
FINISH_WORKERS = 2
#: Accelerator busy fraction above which the host is said to keep up.
KEEPS_UP = 0.9
_DONE = object()


@dataclass
class Result:
    """One input's outcome, yielded in input order."""

    index: int
    source: Any
    segmentation: Segmentation | None = None
    output: Any = None  #: what ``write`` returned
    error: str | None = None
    times: dict[str, float] = field(default_factory=dict)  #: stage -> seconds
    tiles: int = 0  #: accelerator tiles this item ran
    exception: BaseException | None = field(default=None, repr=False)  #: for --debug
    _raise: BaseException | None = field(default=None, repr=False)  # the sources failed here

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Report:
    """What a pipeline run measured (see the module docstring)."""

    images: int
    failed: int
    wall_s: float
    tiles: int
    accelerator_busy_s: float
    stage_busy_s: dict[str, float]  #: summed over items (and workers)
    workers: dict[str, int]
    fabric_fps: float | None = None  #: the accelerator's own rate (the package's estimate)
    engine_timing: dict[str, float] = field(default_factory=dict)  #: engine phases (s), if any

    @property
    def host_busy_s(self) -> float:
        """CPU-side work, summed over threads: decoding, cutting tiles and stitching, the
        engine's host phases (packing, copies, unpacking) and finishing. Divided by the
        number of cores, it is the wall time the host needs, whatever the fabric does."""
        engine = sum(self.engine_timing.get(k, 0.0) for k in HOST_ENGINE_PHASES)
        stages = sum(self.stage_busy_s.get(k, 0.0) for k in ("decode", "tiling", "finish"))
        return stages + engine

    @property
    def fabric_busy_s(self) -> float | None:
        """Seconds the fabric itself computed: tiles / its FPS (None if the FPS is unknown)."""
        return self.tiles / self.fabric_fps if self.fabric_fps else None

    @property
    def fabric_utilisation(self) -> float | None:
        busy = self.fabric_busy_s
        return busy / self.wall_s if busy is not None and self.wall_s else None

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s else 0.0

    @property
    def tiles_per_s(self) -> float:
        return self.tiles / self.wall_s if self.wall_s else 0.0

    @property
    def accelerator_utilisation(self) -> float:
        return self.accelerator_busy_s / self.wall_s if self.wall_s else 0.0

    @property
    def keeps_up(self) -> bool:
        """The host feeds the accelerator: the fabric (or, if its FPS is unknown, the engine
        call) is busy at least :data:`KEEPS_UP` of the wall time."""
        util = self.fabric_utilisation
        return (util if util is not None else self.accelerator_utilisation) >= KEEPS_UP

    @property
    def bottleneck(self) -> str:
        """``"accelerator"`` if the host keeps up, else the busiest host stage per worker."""
        if self.keeps_up:
            return "accelerator"
        load = {s: self.stage_busy_s.get(s, 0.0) / max(1, self.workers.get(s, 1)) for s in STAGES}
        return max(load, key=load.get)

    def to_json(self) -> dict[str, Any]:
        per_image = {
            s: 1e3 * t / self.images if self.images else 0.0 for s, t in self.stage_busy_s.items()
        }
        return {
            "images": self.images,
            "failed": self.failed,
            "wall_s": round(self.wall_s, 4),
            "images_per_s": round(self.images_per_s, 3),
            "tiles": self.tiles,
            "tiles_per_s": round(self.tiles_per_s, 2),
            "accelerator_busy_s": round(self.accelerator_busy_s, 4),
            "accelerator_utilisation": round(self.accelerator_utilisation, 3),
            "fabric_fps": self.fabric_fps,
            "fabric_utilisation": None
            if self.fabric_utilisation is None
            else round(self.fabric_utilisation, 3),
            "engine_ms_per_tile": {
                k: round(1e3 * v / self.tiles, 3) if self.tiles else 0.0
                for k, v in self.engine_timing.items()
                if k not in ("calls", "tiles")
            },
            "stage_ms_per_image": {s: round(v, 2) for s, v in per_image.items()},
            "host_ms_per_image": round(1e3 * self.host_busy_s / self.images, 2)
            if self.images
            else 0.0,
            "fabric_ms_per_image": round(1e3 * self.fabric_busy_s / self.images, 2)
            if self.images and self.fabric_busy_s is not None
            else None,
            "workers": dict(self.workers),
            "keeps_up": self.keeps_up,
            "bottleneck": self.bottleneck,
        }


class _MeteredRun:
    """An engine's ``run`` that sums its busy time and tiles, in all and per calling thread.

    An engine that is not ``concurrent`` is one resource: calls from several threads take
    turns under a lock. A ``concurrent`` one (the pynq engine: calls in flight, thread-safe
    submit/collect) is called from every accelerate worker at once, so one worker's tiles
    enter the fabric while another's drain (frames overlap); its busy time is then the time
    at least one call was inside ``run``, not their sum. The pipeline hands this to
    :meth:`Segmenter.scores` (``run=``) rather than swapping the segmenter's engine.
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], concurrent: bool = False) -> None:
        self.run = run
        self.concurrent = concurrent
        self.busy_s = 0.0
        self.tiles = 0
        self.lock = threading.Lock()  # one call at a time, unless concurrent
        self._meter = threading.Lock()  # the counters
        self._active = 0
        self._since = 0.0
        self._local = threading.local()

    def thread_tiles(self) -> int:
        """Tiles run so far by the calling thread."""
        return getattr(self._local, "tiles", 0)

    def thread_wall(self) -> float:
        """Seconds the calling thread spent in ``run`` so far, waiting for its turn included."""
        return getattr(self._local, "wall", 0.0)

    def _enter(self) -> None:
        with self._meter:
            if self._active == 0:
                self._since = time.perf_counter()
            self._active += 1

    def _leave(self, tiles: int) -> None:
        with self._meter:
            self._active -= 1
            if self._active == 0:
                self.busy_s += time.perf_counter() - self._since
            self.tiles += tiles

    def __call__(self, x: np.ndarray) -> np.ndarray:
        called = time.perf_counter()
        try:
            with contextlib.nullcontext() if self.concurrent else self.lock:
                self._enter()
                try:
                    return self.run(x)
                finally:
                    self._leave(len(x))
                    self._local.tiles = self.thread_tiles() + len(x)
        finally:
            self._local.wall = self.thread_wall() + time.perf_counter() - called


def _message(error: BaseException) -> str:
    if isinstance(error, (UserError, ValueError, OSError)):
        return str(error) or type(error).__name__
    return f"{type(error).__name__}: {error}"


@dataclass
class _Item:
    """One source on its way through the stages: what the queues carry."""

    result: Result
    rgb: np.ndarray | None = None  #: decoded image
    scores: np.ndarray | None = None  #: stitched integer scores


def _items(sources: Iterable[Any]) -> Iterator[_Item]:
    """The sources as numbered items. If iterating them fails, a last, failed item carries the
    error (``Result._raise``), so :meth:`Pipeline.run` raises it after the items before it."""
    index = 0
    try:
        for source in sources:
            yield _Item(Result(index, source))
            index += 1
    except Exception as e:
        yield _Item(Result(index, None, error=_message(e), _raise=e))


def _timed(item: _Item, stage: str, work: Callable[[_Item], None]) -> None:
    """Run one stage on ``item``: its seconds in ``times[stage]``, a failure kept on the item
    (per-item isolation: the batch goes on)."""
    start = time.perf_counter()
    try:
        work(item)
    except Exception as e:
        item.result.error, item.result.exception = _message(e), e
    finally:
        item.result.times[stage] = time.perf_counter() - start


class _Stages:
    """The plumbing of one :meth:`Pipeline.run`: bounded queues, a stop flag, and the one loop
    every worker of every stage runs (:meth:`worker`)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.done: queue.Queue = queue.Queue()  # finished items, in completion order
        self.live: dict[str, int] = {}  # stage -> workers still running
        self.lock = threading.Lock()

    def put(self, q: queue.Queue, obj: Any) -> bool:
        """Put ``obj`` unless the run stops first (then False)."""
        while not self.stop.is_set():
            try:
                q.put(obj, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def get(self, q: queue.Queue) -> Any:
        """The next object of ``q``, or ``_DONE`` once the run stops."""
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                continue
        return _DONE

    def worker(
        self,
        stage: str,
        take: Callable[[], Any],
        work: Callable[[_Item], None],
        outbox: queue.Queue,
        downstream: int,
    ) -> None:
        """Take items until ``_DONE``, run ``work`` on those not failed yet, pass all on in
        ``outbox``; the stage's last worker out tells the ``downstream`` workers it is over."""
        try:
            while (item := take()) is not _DONE:
                if item.result.ok:
                    _timed(item, stage, work)
                if not self.put(outbox, item):
                    return
        finally:
            with self.lock:
                self.live[stage] -= 1
                last = self.live[stage] == 0
            if last:
                for _ in range(downstream):
                    self.put(outbox, _DONE)

    def in_order(self) -> Iterator[Result]:
        """Finished results in input order (a reorder buffer); re-raises a failed listing."""
        pending: dict[int, Result] = {}
        next_index = 0
        while (item := self.done.get()) is not _DONE:
            pending[item.result.index] = item.result
            while next_index in pending:
                result = pending.pop(next_index)
                if result._raise is not None:
                    raise result._raise
                next_index += 1
                yield result


class _Tally:
    """What :meth:`Pipeline.report` needs of the results yielded so far: their count, the
    failed ones and the seconds per stage, summed as they pass (a run's memory does not grow
    with its length: ``fcnseg video`` on a camera runs until stopped)."""

    def __init__(self) -> None:
        self.images = 0
        self.failed = 0
        self.busy = dict.fromkeys((*STAGES, "tiling"), 0.0)

    def add(self, result: Result) -> None:
        self.images += 1
        self.failed += not result.ok
        for stage in self.busy:
            self.busy[stage] += result.times.get(stage, 0.0)


class _Gate:
    """At most ``limit`` holders at once, the limit given by each one coming in (frames in
    flight, sized by their frame: :meth:`Pipeline._frames_in_flight`); no waiting once the run
    stops."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.active = 0
        self.cv = threading.Condition()

    @contextlib.contextmanager
    def hold(self, limit: int) -> Iterator[None]:
        with self.cv:
            while self.active >= limit and not self.stop.is_set():
                self.cv.wait(timeout=0.05)
            self.active += 1
        try:
            yield
        finally:
            with self.cv:
                self.active -= 1
                self.cv.notify_all()


class Pipeline:
    """Segment many images with the stages overlapped (see the module docstring).

    ``decode(source) -> (H, W, 3) uint8`` (default: :func:`fcnseg.host.images.as_rgb_array`:
    paths, Pillow images, arrays); ``write(result) -> Any`` runs in a finish worker after the
    segmentation (its return value lands in ``result.output``; an exception fails that item).
    ``accelerate_workers``: frames in flight at most; default: 2, or for an engine with calls in
    flight (``concurrent``) its ``calls`` + 1 workers, of which as many run at once as a frame
    of that size needs to keep the engine's calls full (:meth:`_frames_in_flight`).
    """

    def __init__(
        self,
        segmenter: Segmenter,
        *,
        decode: Callable[[Any], np.ndarray] | None = None,
        write: Callable[[Result], Any] | None = None,
        depth: int = 2,
        finish_workers: int = FINISH_WORKERS,
        accelerate_workers: int | None = None,
        fabric_fps: float | None = None,
    ) -> None:
        engine = segmenter.engine
        #: frames in flight follow the engine (:meth:`_frames_in_flight`) unless given
        self._adaptive = accelerate_workers is None and bool(getattr(engine, "concurrent", False))
        if accelerate_workers is None:
            accelerate_workers = int(getattr(engine, "calls", 1)) + 1 if self._adaptive else 2
        counts = {
            "depth": depth,
            "finish_workers": finish_workers,
            "accelerate_workers": accelerate_workers,
        }
        for name, value in counts.items():
            if value < 1:
                raise ParameterError(f"{{{name}}} must be >= 1", **{name: value})
        if decode is None:
            from fcnseg.host.images import as_rgb_array

            decode = as_rgb_array
        self.segmenter = segmenter
        self.decode = decode
        self.write = write
        self.depth = depth
        self.finish_workers = finish_workers
        self.accelerate_workers = accelerate_workers
        if fabric_fps is None:  # an FPGA engine knows its fabric's rate; a simulator has none
            fabric_fps = getattr(segmenter.engine, "fabric_fps", None)
        self.fabric_fps = float(fabric_fps) if fabric_fps else None
        self._report: Report | None = None

    # --- stages: what a worker does to one item ---------------------------------------------

    def _decode(self, item: _Item) -> None:
        item.rgb = np.ascontiguousarray(self.decode(item.result.source), dtype=np.uint8)

    def _frames_in_flight(self, item: _Item) -> int:
        """How many frames of ``item``'s size keep a concurrent engine's calls full: its
        ``calls`` over the calls one pass of the frame takes, plus one being cut or stitched;
        at least 2, at most the accelerate workers. (The shipped 256x256 packages at 512x1024:
        65 tiles, 5 calls of 16 against 4 in flight: 2 frames; one-tile frames: calls + 1.)"""
        assert item.rgb is not None
        engine = self.segmenter.engine
        tiles = len(self.segmenter.plan(*item.rgb.shape[:2]).tiles)
        per_pass = -(-tiles // max(1, int(getattr(engine, "batch", 1))))
        wanted = -(-int(getattr(engine, "calls", 1)) // per_pass) + 1
        return max(2, min(self.accelerate_workers, wanted))

    def _accelerate(self, item: _Item, run: _MeteredRun) -> None:
        tiles, wall, start = run.thread_tiles(), run.thread_wall(), time.perf_counter()
        try:
            item.scores = self.segmenter.scores(item.rgb, run=run)
        finally:
            item.result.tiles = run.thread_tiles() - tiles
            # the host's own share of the stage: cutting tiles and stitching
            waited = run.thread_wall() - wall
            item.result.times["tiling"] = time.perf_counter() - start - waited

    def _finish(self, item: _Item) -> None:
        assert item.rgb is not None and item.scores is not None
        item.result.segmentation = self.segmenter.finish(item.scores, item.rgb.shape[:2])
        item.rgb = None  # the decoded image is not needed past here
        if self.write is not None:
            item.result.output = self.write(item.result)

    # --- running ---------------------------------------------------------------------------------

    def run(self, sources: Iterable[Any]) -> Iterator[Result]:
        """Yield one :class:`Result` per source, in input order, as they complete."""
        stages = _Stages()
        engine = self.segmenter.engine
        run = _MeteredRun(engine.run, bool(getattr(engine, "concurrent", False)))
        timing0 = self._engine_timing()
        threads = self._workers(stages, sources, run)
        results = _Tally()  # sums, not the results: a camera may run for days
        start = time.perf_counter()
        try:
            for t in threads:
                t.start()
            for result in stages.in_order():
                results.add(result)
                yield result
        finally:
            stages.stop.set()
            for t in threads:
                t.join(timeout=5)
            wall = time.perf_counter() - start
            self._report = self._measured(results, wall, run, timing0)

    def _workers(
        self, stages: _Stages, sources: Iterable[Any], run: _MeteredRun
    ) -> list[threading.Thread]:
        """The threads of one run: one decoder (it iterates ``sources``), the accelerate and
        finish workers, each stage feeding the next through a queue of ``depth`` items."""
        items = _items(sources)
        decoded: queue.Queue = queue.Queue(self.depth)
        scored: queue.Queue = queue.Queue(self.depth)

        def next_source() -> Any:
            return _DONE if stages.stop.is_set() else next(items, _DONE)

        gate = _Gate(stages.stop)

        def accelerate(item: _Item) -> None:
            if not self._adaptive:
                self._accelerate(item, run)
                return
            with gate.hold(self._frames_in_flight(item)):
                self._accelerate(item, run)

        layout = (
            ("decode", 1, next_source, self._decode, decoded, self.accelerate_workers),
            ("accelerate", self.accelerate_workers, lambda: stages.get(decoded), accelerate,
             scored, self.finish_workers),
            ("finish", self.finish_workers, lambda: stages.get(scored), self._finish,
             stages.done, 1),
        )  # fmt: skip
        threads = []
        for stage, workers, take, work, outbox, downstream in layout:
            stages.live[stage] = workers
            threads += [
                threading.Thread(
                    target=stages.worker,
                    args=(stage, take, work, outbox, downstream),
                    name=f"fcnseg-{stage}{i}",
                    daemon=True,
                )
                for i in range(workers)
            ]
        return threads

    def _engine_timing(self) -> dict[str, float]:
        """The engine's own cumulative phase timing, if it keeps one (the pynq engine does)."""
        return dict(getattr(self.segmenter.engine, "timing", {}) or {})

    def _measured(
        self, results: _Tally, wall: float, run: _MeteredRun, timing0: dict[str, float]
    ) -> Report:
        return Report(
            images=results.images,
            failed=results.failed,
            wall_s=wall,
            tiles=run.tiles,
            accelerator_busy_s=run.busy_s,
            stage_busy_s=dict(results.busy),
            workers={
                "decode": 1,
                "accelerate": self.accelerate_workers,
                "finish": self.finish_workers,
            },
            fabric_fps=self.fabric_fps,
            engine_timing={k: v - timing0.get(k, 0.0) for k, v in self._engine_timing().items()},
        )

    def report(self) -> Report:
        """The measurements of the last (fully or partly consumed) :meth:`run`."""
        if self._report is None:
            raise UserError("the pipeline has not run yet")
        return self._report


def run_serial(segmenter: Segmenter, sources: Iterable[Any]) -> tuple[list[Any], float]:
    """The same work without overlap (decode, segment, in turn): the baseline the pipeline is
    measured against. Returns (segmentations, wall seconds)."""
    from fcnseg.host.images import as_rgb_array

    start = time.perf_counter()
    out = [segmenter.segment(as_rgb_array(s)) for s in sources]
    return out, time.perf_counter() - start


def measure(segmenter: Segmenter, sources: list[Any], **pipeline: Any) -> dict[str, Any]:
    """Serial, then pipelined, over the same ``sources``: the figures ``fcnseg bench`` reports
    (images/s both ways, per-stage ms per image, engine phases per tile, keeps up or not)."""
    _, serial = run_serial(segmenter, sources)
    pipe = Pipeline(segmenter, **pipeline)
    failed = [r.error for r in pipe.run(sources) if not r.ok]
    if failed:
        raise UserError(f"{len(failed)} image(s) failed while measuring: {failed[0]}")
    report = pipe.report().to_json()
    report["serial_images_per_s"] = round(len(sources) / serial, 3) if serial else 0.0
    return report
