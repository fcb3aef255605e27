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
:mod:`fcnseg.host.backends.pynq`; a simulator is numpy). The accelerator is one resource:
``accelerate_workers`` threads (default 2) take turns on it under a lock, so one cuts tiles
and stitches while the other's tiles are in the fabric; ``finish_workers`` threads share the
finishing, and a reorder buffer yields results in input order.

Failures are per item: an image that cannot be decoded or segmented becomes a :class:`Result`
with ``error`` set and the batch goes on (an accelerator timeout makes the engine refuse further
work with the same one-line message, so later items fail fast instead of hanging).

Timing: each result has its per-stage seconds (``tiling`` is the host's share of the
accelerate stage: cutting tiles and stitching). :meth:`Pipeline.report` sums them, measures
the time inside ``engine.run``, and compares the fabric's own busy time (tiles / the package's
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

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fcnseg.errors import UserError

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


class _TimedEngine:
    """Forwards ``run`` to an engine, summing its busy time and tiles (one caller thread)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.busy_s = 0.0
        self.tiles = 0
        self.lock = threading.Lock()
        self._local = threading.local()

    def thread_tiles(self) -> int:
        """Tiles run so far by the calling thread."""
        return getattr(self._local, "tiles", 0)

    def thread_wall(self) -> float:
        """Seconds the calling thread spent in ``run`` so far, waiting for its turn included."""
        return getattr(self._local, "wall", 0.0)

    def run(self, x: np.ndarray) -> np.ndarray:
        called = time.perf_counter()
        try:
            with self.lock:  # one accelerator: calls from several threads take turns
                start = time.perf_counter()
                try:
                    return self.engine.run(x)
                finally:
                    self.busy_s += time.perf_counter() - start
                    self.tiles += len(x)
                    self._local.tiles = self.thread_tiles() + len(x)
        finally:
            self._local.wall = self.thread_wall() + time.perf_counter() - called

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def _message(error: BaseException) -> str:
    if isinstance(error, (UserError, ValueError, OSError)):
        return str(error) or type(error).__name__
    return f"{type(error).__name__}: {error}"


class Pipeline:
    """Segment many images with the stages overlapped (see the module docstring).

    ``decode(source) -> (H, W, 3) uint8`` (default: :func:`fcnseg.host.images.as_rgb_array`:
    paths, Pillow images, arrays); ``write(result) -> Any`` runs in a finish worker after the
    segmentation (its return value lands in ``result.output``; an exception fails that item).
    """

    def __init__(
        self,
        segmenter: Segmenter,
        *,
        decode: Callable[[Any], np.ndarray] | None = None,
        write: Callable[[Result], Any] | None = None,
        depth: int = 2,
        finish_workers: int = 1,
        accelerate_workers: int = 2,
        fabric_fps: float | None = None,
    ) -> None:
        if depth < 1 or finish_workers < 1 or accelerate_workers < 1:
            raise UserError("pipeline depth and worker counts must be >= 1")
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

    # --- stages ----------------------------------------------------------------------------------

    def _decode(self, item: Result) -> np.ndarray | None:
        try:
            return np.ascontiguousarray(self.decode(item.source), dtype=np.uint8)
        except Exception as e:  # per-item isolation
            item.error, item.exception = _message(e), e
            return None

    def _accelerate(self, item: Result, rgb: np.ndarray, engine: _TimedEngine) -> Any:
        tiles, wall, start = engine.thread_tiles(), engine.thread_wall(), time.perf_counter()
        try:
            return self.segmenter.scores(rgb)
        except Exception as e:
            item.error, item.exception = _message(e), e
            return None
        finally:
            item.tiles = engine.thread_tiles() - tiles
            # the host's own share of the stage: cutting tiles and stitching
            item.times["tiling"] = time.perf_counter() - start - (engine.thread_wall() - wall)

    def _finish(self, item: Result, rgb: np.ndarray, scores: np.ndarray) -> None:
        from fcnseg.host.segmenter import Segmentation
        from fcnseg.host.upsample import upsample_argmax

        seg = self.segmenter
        try:
            labels = upsample_argmax(
                scores,
                seg.output_scale,
                seg.output_bias,
                rgb.shape[:2],
                seg.shifts.stride,
                seg.shifts.field,
            )
            item.segmentation = Segmentation(labels, scores, seg.shifts.stride, seg.shifts.field)
            if self.write is not None:
                item.output = self.write(item)
        except Exception as e:
            item.error, item.exception = _message(e), e

    # --- running ---------------------------------------------------------------------------------

    def run(self, sources: Iterable[Any]) -> Iterator[Result]:
        """Yield one :class:`Result` per source, in input order, as they complete."""
        stop = threading.Event()
        q_decoded: queue.Queue = queue.Queue(self.depth)
        q_scored: queue.Queue = queue.Queue(self.depth)
        q_done: queue.Queue = queue.Queue()
        engine = _TimedEngine(self.segmenter.engine)
        original = self.segmenter.engine
        timing0 = dict(getattr(original, "timing", {}) or {})

        def put(q: queue.Queue, obj: Any) -> bool:
            while not stop.is_set():
                try:
                    q.put(obj, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def get(q: queue.Queue) -> Any:
            while not stop.is_set():
                try:
                    return q.get(timeout=0.05)
                except queue.Empty:
                    continue
            return _DONE

        def timed(item: Result, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                item.times[stage] = time.perf_counter() - start

        def decoder() -> None:
            index = 0
            try:
                for index, source in enumerate(sources):  # noqa: B007
                    if stop.is_set():
                        return
                    item = Result(index, source)
                    rgb = timed(item, "decode", self._decode, item)
                    if not put(q_decoded, (item, rgb)):
                        return
                    index += 1
            except Exception as e:  # the sources failed: raise it after the items before it
                marker = Result(index, None, error=_message(e), _raise=e)
                put(q_decoded, (marker, None))
            finally:
                for _ in range(self.accelerate_workers):
                    put(q_decoded, _DONE)

        def accelerator() -> None:
            while True:
                got = get(q_decoded)
                if got is _DONE:
                    break
                item, rgb = got
                scores = None
                if item.ok:
                    scores = timed(item, "accelerate", self._accelerate, item, rgb, engine)
                if not put(q_scored, (item, rgb, scores)):
                    return
            with live_lock:
                live[0] -= 1
                last = live[0] == 0
            if last:
                for _ in range(self.finish_workers):
                    put(q_scored, _DONE)

        def finisher() -> None:
            while True:
                got = get(q_scored)
                if got is _DONE:
                    break
                item, rgb, scores = got
                if item.ok:
                    timed(item, "finish", self._finish, item, rgb, scores)
                q_done.put(item)
            q_done.put(_DONE)

        live, live_lock = [self.accelerate_workers], threading.Lock()
        threads = [
            threading.Thread(target=decoder, name="fcnseg-decode", daemon=True),
            *(
                threading.Thread(target=accelerator, name=f"fcnseg-accelerate{i}", daemon=True)
                for i in range(self.accelerate_workers)
            ),
            *(
                threading.Thread(target=finisher, name=f"fcnseg-finish{i}", daemon=True)
                for i in range(self.finish_workers)
            ),
        ]
        self.segmenter.engine = engine
        results: list[Result] = []
        start = time.perf_counter()
        try:
            for t in threads:
                t.start()
            pending: dict[int, Result] = {}
            next_index, finished = 0, 0
            while finished < self.finish_workers:
                got = q_done.get()
                if got is _DONE:
                    finished += 1
                    continue
                pending[got.index] = got
                while next_index in pending:
                    result = pending.pop(next_index)
                    if result._raise is not None:
                        raise result._raise
                    results.append(result)
                    next_index += 1
                    yield result
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=5)
            self.segmenter.engine = original
            wall = time.perf_counter() - start
            busy = {s: sum(r.times.get(s, 0.0) for r in results) for s in (*STAGES, "tiling")}
            self._report = Report(
                images=len(results),
                failed=sum(not r.ok for r in results),
                wall_s=wall,
                tiles=engine.tiles,
                accelerator_busy_s=engine.busy_s,
                stage_busy_s=busy,
                workers={
                    "decode": 1,
                    "accelerate": self.accelerate_workers,
                    "finish": self.finish_workers,
                },
                fabric_fps=self.fabric_fps,
                engine_timing={
                    k: v - timing0.get(k, 0.0)
                    for k, v in (getattr(original, "timing", {}) or {}).items()
                },
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
