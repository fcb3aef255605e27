"""Frames/s that count latency and batching: the fabric as a pipeline, the host as its feeder.

finn's estimates give two numbers per accelerator (``fcnseg_summary.json`` / the package's
``estimates``): ``max_cycles``, the bottleneck layer's cycles per tile, which is the pipeline's
initiation interval ``II`` once it is full; and ``critical_path_cycles``, finn's latency ``L`` of
one tile from input to output. finn computes ``L`` as the longest path of summed per-layer cycles
(``finn/analysis/fpgadataflow/dataflow_performance.py``: "pessimistic expected latency"), as if
no layer started before the one upstream finished; a streaming pipeline overlaps its layers, so
the true latency is lower and every latency-bound figure below is a lower bound on the rate.

The model (all times in seconds, ``f`` the accelerator clock):

- ``II = max(max_cycles, dma_cycles) / f``: ``dma_cycles`` is what the IODMA needs to move one
  tile's input or output through its port (bytes / (port width / 8)), outside finn's estimate
  (the IODMAs are inserted after it); 0 if unknown.
- ``L = critical_path_cycles / f``.
- One DMA call of ``B`` tiles, alone: ``O + L + (B - 1) * II``; ``O`` is the host's time per call
  (register writes, cache flush / invalidate, completion poll), serial on the host's thread.
- The host keeps ``C`` calls of ``B`` tiles in flight (``D = C * B`` tiles): call ``c`` is
  submitted ``O`` after both the previous submission and the completion of call ``c - C``; its
  tiles enter the fabric ``II`` apart, after the previous call's last tile; each leaves ``L``
  after it entered. This is a max-plus system whose cycle means are ``O`` (the host), ``B * II``
  (the fabric) and ``(O + L + (B - 1) * II) / C`` (a call's round trip, shared by ``C``), so the
  steady state is one call per ``max(O, B * II, (O + L + (B - 1) * II) / C)`` seconds
  (:func:`call_period`). With ``B = 1``, ``O = 0``: ``tiles/s = min(1 / II, D / L)`` (Little's
  law, with the pipeline's rate as the cap).
- Frames of ``T`` tiles: with tiles of successive frames in flight together,
  ``frames/s = tiles/s / T``; one frame at a time (the next frame's tiles wait for the last of
  this one), ``frames/s = 1 / frame_seconds`` (:func:`frame_seconds`, the same system run from
  empty for ``T`` tiles).
- The host's per-frame work ``H`` (decode, upsample + argmax, encode): with frames overlapped
  it runs beside the fabric on other threads, so ``frames/s = min(that, 1 / H)``; one frame at a
  time it is serial: ``1 / (frame_seconds + H)``. ``H`` is 0 unless given (not counted).

The DMA batch limit: finn-plus 1.6.1's IODMA (``custom_op/fpgadataflow/hls/iodma_hls.py``) takes
the batch as ``unsigned int numReps`` on its AXI-lite control port (register 0x1C, as
finn-plus-driver's ``execute_on_buffers`` and :mod:`fcnseg.testing.emulated_zynq` write it):
2**32 - 1 tiles per call (:data:`IODMA_MAX_BATCH`). Nothing else in the hardware or in
finn-plus-driver limits a batch; what does is the contiguous memory the host allocates for it
(``fcnseg.host.backends.pynq``: ``DEFAULT_BUFFER_LIMIT``, ``DEFAULT_MAX_BATCH``), a parameter here.

stdlib only: ``fcnseg info`` runs on a board.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fcnseg.errors import UserError

#: tiles per call the IODMA's 32-bit ``numReps`` register allows (see the module docstring).
IODMA_MAX_BATCH = 2**32 - 1


@dataclass(frozen=True)
class Fabric:
    """The accelerator as a pipeline: clock, initiation interval and latency in cycles."""

    clock_hz: float
    #: finn's ``max_cycles``: the bottleneck layer's cycles per tile
    interval_cycles: int
    #: finn's ``critical_path_cycles``: one tile from input to output (pessimistic)
    latency_cycles: int
    #: cycles the IODMA port needs per tile (the larger of input and output); 0: not counted
    dma_cycles: int = 0

    @classmethod
    def from_estimates(cls, estimates: dict[str, Any], dma_cycles: int = 0) -> Fabric:
        """From finn's figures as the summary / package ``estimates`` record them."""
        return cls(
            clock_hz=1e9 / float(estimates["clock_ns"]),
            interval_cycles=int(estimates["max_cycles"]),
            latency_cycles=int(estimates["critical_path_cycles"]),
            dma_cycles=int(dma_cycles),
        )

    @property
    def interval_s(self) -> float:
        """``II``: seconds between tiles once the pipeline is full."""
        return max(self.interval_cycles, self.dma_cycles) / self.clock_hz

    @property
    def latency_s(self) -> float:
        """``L``: seconds for one tile through the empty pipeline."""
        return self.latency_cycles / self.clock_hz


def dma_cycles(tile_bytes: int, port_width_bits: int) -> int:
    """Cycles the IODMA needs to move ``tile_bytes`` through a ``port_width_bits`` AXI port."""
    return -(-int(tile_bytes) * 8 // int(port_width_bits))


@dataclass(frozen=True)
class Host:
    """How the host feeds the fabric: tiles in flight, tiles per call, its own costs."""

    #: ``D``: tiles submitted and not yet returned (the pynq backend's default for a package:
    #: :func:`fcnseg.hw.info.pynq_host`)
    in_flight: int = 1
    #: ``B``: tiles per DMA call; None: ``in_flight`` up to ``max_batch``
    batch: int | None = None
    #: the most tiles one call may carry (the IODMA register, or the host's buffers)
    max_batch: int = IODMA_MAX_BATCH
    #: ``O``: host seconds per call (driver, cache maintenance); 0: not counted
    call_overhead_s: float = 0.0
    #: ``H``: host seconds per frame (decode, upsample + argmax, encode); 0: not counted
    frame_work_s: float = 0.0

    def __post_init__(self) -> None:
        if self.in_flight < 1 or self.max_batch < 1:
            raise UserError(f"in-flight tiles must be >= 1, got {self.in_flight}")
        if self.batch is not None and not 1 <= self.batch <= min(self.in_flight, self.max_batch):
            raise UserError(
                f"tiles per call {self.batch} must be between 1 and the in-flight depth "
                f"{self.in_flight} and the batch limit {self.max_batch}"
            )
        if self.call_overhead_s < 0 or self.frame_work_s < 0:
            raise UserError("host overheads must be >= 0")

    @property
    def tiles_per_call(self) -> int:
        """``B``."""
        return self.batch if self.batch is not None else min(self.in_flight, self.max_batch)

    @property
    def calls(self) -> int:
        """``C``: calls in flight, ``ceil(D / B)`` (so ``C * B >= D``)."""
        return -(-self.in_flight // self.tiles_per_call)


def call_seconds(fabric: Fabric, batch: int, overhead_s: float = 0.0) -> float:
    """One call of ``batch`` tiles into the empty pipeline: ``O + L + (B - 1) * II``."""
    return overhead_s + fabric.latency_s + (batch - 1) * fabric.interval_s


def call_period(fabric: Fabric, batch: int, calls: int, overhead_s: float = 0.0) -> float:
    """Steady-state seconds per call, ``C`` calls of ``B`` tiles in flight (module docstring)."""
    return max(
        overhead_s, batch * fabric.interval_s, call_seconds(fabric, batch, overhead_s) / calls
    )


def tiles_per_s(fabric: Fabric, host: Host) -> float:
    """Steady-state tiles/s the fabric delivers to ``host``."""
    batch = host.tiles_per_call
    return batch / call_period(fabric, batch, host.calls, host.call_overhead_s)


def frame_seconds(fabric: Fabric, tiles: int, host: Host) -> float:
    """Seconds for one frame of ``tiles`` tiles alone (empty pipeline before, none after): the
    max-plus system of the module docstring run for its ``ceil(T / B)`` calls, the last one
    carrying the remainder."""
    batch, depth, o = host.tiles_per_call, host.calls, host.call_overhead_s
    ii, lat = fabric.interval_s, fabric.latency_s
    submitted, last_entry = 0.0, -math.inf
    done: list[float] = []
    for start in range(0, tiles, batch):
        n = min(batch, tiles - start)
        free = done[-depth] if len(done) >= depth else 0.0
        submitted = max(submitted, free) + o
        entry = max(submitted, last_entry + ii)
        last_entry = entry + (n - 1) * ii
        done.append(last_entry + lat)
    return done[-1]


def calls_for_steady(fabric: Fabric, batch: int, overhead_s: float = 0.0) -> int | None:
    """The fewest calls of ``batch`` tiles in flight that reach the fabric's rate ``1 / II``
    (None: the host's ``O`` per call exceeds ``B * II``, no depth does)."""
    if overhead_s > batch * fabric.interval_s:
        return None
    return math.ceil(call_seconds(fabric, batch, overhead_s) / (batch * fabric.interval_s) - 1e-12)


def estimate(fabric: Fabric, tiles_per_frame: int, host: Host) -> dict[str, Any]:
    """Every figure of the model for frames of ``tiles_per_frame`` tiles, as data (seconds as
    ms, rates per s; ``frames_per_s`` keys count the host's per-frame work)."""
    t = int(tiles_per_frame)
    steady = 1.0 / fabric.interval_s
    rate = tiles_per_s(fabric, host)
    alone = frame_seconds(fabric, t, host)
    h = host.frame_work_s
    host_cap = 1.0 / h if h else math.inf
    calls = calls_for_steady(fabric, host.tiles_per_call, host.call_overhead_s)
    return {
        "model": "fcnseg.hw.throughput (estimates: finn-plus cycles, latency = finn's "
        "pessimistic critical path)",
        "clock_mhz": fabric.clock_hz / 1e6,
        "interval_ms": fabric.interval_s * 1e3,
        "latency_ms": fabric.latency_s * 1e3,
        "dma_cycles": fabric.dma_cycles,
        "in_flight": host.in_flight,
        "tiles_per_call": host.tiles_per_call,
        "calls_in_flight": host.calls,
        "max_batch": host.max_batch,
        "call_overhead_ms": host.call_overhead_s * 1e3,
        "host_frame_ms": h * 1e3,
        "call_ms": call_seconds(fabric, host.tiles_per_call, host.call_overhead_s) * 1e3,
        "steady_tiles_per_s": steady,
        "steady_frames_per_s": min(steady / t, host_cap),
        "tiles_per_s": rate,
        "frames_per_s": min(rate / t, host_cap),
        "frame_alone_ms": alone * 1e3,
        "one_frame_frames_per_s": 1.0 / (alone + h),
        "bound": "host"
        if host_cap < rate / t
        else "fabric"
        if rate >= steady * (1 - 1e-9)
        else "latency",
        "in_flight_for_steady": None if calls is None else calls * host.tiles_per_call,
    }
