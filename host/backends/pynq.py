"""The ``pynq`` backend: the package's accelerator on a PYNQ board, through its IODMAs.

A package with ``bitfile/*.bit`` (+ ``.hwh``) and ``driver/settings.json`` (finn-plus's driver
step) is loaded as an overlay and driven with finn-plus's zynq-iodma protocol: fold, pack,
copy + flush, program the output then the input IODMA (address 0x10/0x14, batch 0x1C, start
0x00), wait for ap_done (0x00 bit 1) on the output IODMA, invalidate, unpack, with several
calls in flight (below). Engine interface
as the ``sim`` backend, ``run(x uint8 (N, H, W, 3)) -> int64 (N, h, w, C)``, but only for the
package's tile ``H x W`` (the accelerator has one size; :mod:`fcnseg.host.tiling` covers
images of any size with it).

Two transports, one protocol:

- ``"finn"``: finn-plus-driver's ``FINNDMAOverlay`` (overlay, clock, its buffers as the first
  buffer set, ``execute_on_buffers`` when one call is in flight) and its packing
  (``finn_plus_driver.packing``), except for output
  types outside its 8/16-bit fast path (e.g. INT9), where its general unpacking costs ~5 ms per
  256x256 tile on a PC (50x the port below, so on an ARM core it alone would cap the rate below
  the fabric's) and the port is used instead (byte-equal, tested). Needs finn-plus-driver +
  qonnx + onnx + bitstring + matplotlib: the install on aarch64 boards (ZCU104, KV260 ...).
  ``execute_on_buffers`` starts both IODMAs on its one buffer set and asserts the output DMA
  idle, so it cannot overlap calls: with more than one call in flight this transport writes the
  same registers itself (as ``"builtin"`` does), on buffer sets it allocates beside finn's.
- ``"builtin"``: ``pynq.Overlay`` + the same register sequence and a numpy port of
  finn-plus-driver 1.6.1's packing (:func:`finn_pack`, :func:`finn_unpack`; keep in sync with
  ``finn_plus_driver/packing.py`` 1.6.1, tested against it). Needs only pynq + numpy: the
  install on 32-bit ARM boards (Pynq-Z2, Pynq-Z1), where onnx, onnxruntime and bitarray have no
  wheels (docs/board.md).
- ``"auto"`` (default): ``"finn"`` when finn-plus-driver imports, else ``"builtin"``.

Calls in flight
---------------
A finn-plus accelerator is a pipeline: a tile enters every ``II`` and leaves ``L`` after it
entered (:mod:`fcnseg.hw.throughput`; for the shipped Pynq-Z2 package II = 15.7 ms, L = 215 ms).
One call at a time leaves the fabric idle for the host's packing and unpacking and for each
call's drain (``L``), half the time at 16 tiles a call. So the engine keeps up to ``calls``
calls in flight (:data:`DEFAULT_CALLS`), each in its own buffer set (packed input + output
for ``batch`` tiles), and :meth:`PynqEngine.submit` / :meth:`PynqEngine.collect` split
:meth:`PynqEngine.run` for callers that keep several submissions going (the pipeline's
accelerate workers, one frame each). The input and output IODMAs are separate ``ap_ctrl_hs``
IPs (finn-plus 1.6.1 ``iodma_hls.py``); a dispatcher thread, alive while calls are
outstanding, drives them:

- submit (the caller's thread): wait for a free buffer set, pack, copy, flush, queue the call;
  one submission at a time, so one submission's calls run back to back;
- the next queued call's input DMA starts as soon as the input DMA is done with the previous
  call (its input fully read), while the output DMA may still drain the previous call;
- the output DMA takes the started calls in order: programmed for the next one as soon as it
  is done with the previous one (for the first call into an idle fabric, output then input,
  finn's order); the next call's first tile reaches the output at least ``II`` after the
  previous call's last, time enough to program it (if not, the tiles wait in the pipeline's
  streams: back-pressure, no loss);
- a call is done when its output DMA is: the dispatcher invalidates and copies its output out
  and frees its buffer set; collect (the caller's thread) unpacks it.

ap_done is read once per DMA job, so the clear-on-read ap_done of the hardware's ``ap_ctrl_hs``
control register and the emulator's sticky one behave alike. Completion is polled with a
backoff sleep (20 us to 1 ms, freeing the CPU for the host pipeline's other threads; finn-plus-
driver's ``wait_until_finished`` polls with no timeout, so a hung transfer would hang the host).
A started call not done within ``timeout_s`` raises :class:`AcceleratorTimeout`, one line, and
breaks the engine: every call in flight fails (as unusable, with the same reason), waiting
submitters are woken, and later calls are refused.

The PL clock comes from the package: a finn-plus 1.6.1 Zynq design feeds PS clock 0 at 100 MHz
into ``clk_wiz_0``, whose output (read from the ``.hwh``) is the accelerator clock; without a
clocking wizard, PS clock 0 *is* the accelerator clock and is set to ``fclk_mhz`` from
``settings.json``. :attr:`PynqEngine.clock` records what was set and read back.

Runtime-writable weights
------------------------
A package built with ``fcnseg compile --runtime-weights`` (or made by ``fcnseg swap-weights``,
which keeps the old bitfile and carries new ``runtime_weights/*.dat`` files) records where each
writable layer's memory sits (``runtime_weights`` of accelerator.json, docs/runtime_weights.md).
The bitfile's memories hold the weights it was compiled with, so at start the engine writes
every layer's words itself, whatever the transport (finn-plus-driver 1.6.1 is told there are
none: it writes every ``.dat`` at offset 0 of its ``StreamingDataflowPartition_<n>``, wrong for
a partition holding two writable layers, and reads ``driver/runtime_weights``, which a swapped
package lacks):

1. each layer's words go to its partition's AXI-lite window (``phys_addr`` of
   ``StreamingDataflowPartition_<n>`` in the ``.hwh``) at the layer's own offset in it
   (:func:`partition_offsets`: 0 for the first writable layer of a partition, the block
   design's spacing for the next), whole lines in ``.dat`` order (a memstream stores a line
   when its last word arrives);
2. then every layer is read back and compared word for word: a mismatch is one line naming the
   layer, its partition and offset, the first differing word, written and read values;
3. then one call of one (all-zero) tile: finn's ``load_runtime_weights(flush_accel=True)``. The
   weight streamers prefetch words into their FIFOs before the host writes, so the first tile
   after a write can compute with stale weights; one tile streams every layer's whole memory
   at least once, so after it the memories alone decide the output.

:attr:`PynqEngine.weight_load` records the words written and the milliseconds of each phase;
:meth:`PynqEngine.load_runtime_weights` and :meth:`PynqEngine.verify_runtime_weights` do it
again on demand.

Batches: as many tiles per accelerator call as fit ``buffer_limit`` bytes of contiguous memory
in each of the ``calls`` buffer sets (input + output buffers), at most ``max_batch``;
:attr:`PynqEngine.in_flight` = ``calls * batch`` tiles.

pynq and finn_plus_driver are imported only inside functions: importing this module needs numpy.

pynq API used, and where it was checked
---------------------------------------
``pynq.Overlay(bitfile, download=, device=)``, IP attributes with ``read(offset)`` /
``write(offset, value)``, ``pynq.allocate(shape, dtype, target=, cacheable=)``,
``PynqBuffer.flush() / .invalidate() / .device_address``, ``pynq.ps.Clocks.fclk0_mhz``
(get/set). Checked in the sources of pynq 3.0.1 (the PYNQ 3.0.1 image of the Pynq-Z2; sdist
from PyPI via ``pip download --no-deps --no-binary=:all: pynq==3.0.1``: ``overlay.py``
``Overlay.__init__``/``DefaultIP.read``/``write``, ``buffer.py`` ``allocate``/``PynqBuffer``,
``ps.py`` ``Clocks``) and of pynq 4.0.0 (installed in ``.venv-board``, where the tests run this
code against :mod:`fcnseg.testing.emulated_zynq`). Nothing newer than 3.0.1 is used.
"""

from __future__ import annotations

import json
import threading
import time
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

import numpy as np

from fcnseg.errors import ParameterError, UserError
from fcnseg.host.package import RUNTIME_WEIGHTS_KEY, dtype_bits

if TYPE_CHECKING:
    from fcnseg.host.package import Package

CTRL, ADDR_LO, ADDR_HI, BATCH = 0x00, 0x10, 0x14, 0x1C
AP_START, AP_DONE, AP_IDLE = 0x1, 0x2, 0x4
TRANSPORTS = ("auto", "finn", "builtin")
#: Default contiguous memory for one engine's DMA buffers (input + output).
DEFAULT_BUFFER_LIMIT = 32 << 20
DEFAULT_MAX_BATCH = 16
#: DMA calls the engine keeps in flight by default (buffer sets of ``batch`` tiles each): the
#: shipped packages' max-plus model (:mod:`fcnseg.hw.throughput`) needs 2 (Pynq-Z2) and 3
#: (ZCU104) calls of 16 to reach the fabric's rate; one more hides the host's packing.
DEFAULT_CALLS = 4


def tiles_per_call(
    tile_bytes: int,
    max_batch: int = DEFAULT_MAX_BATCH,
    buffer_limit: int = DEFAULT_BUFFER_LIMIT,
    calls: int = DEFAULT_CALLS,
) -> int:
    """Tiles one DMA call carries: at most ``max_batch``, and what one of ``calls`` buffer sets
    holds of ``buffer_limit`` bytes at ``tile_bytes`` (packed input + output) a tile; 0 when
    not even one tile fits (:class:`PynqEngine` refuses that; :func:`fcnseg.hw.info.pynq_host`
    models the engine with this)."""
    return min(int(max_batch), int(buffer_limit) // (int(tile_bytes) * int(calls)))


#: Phases of one accelerator call, timed in :attr:`PynqEngine.timing` (seconds, summed over
#: calls), like finn-plus-driver's ``throughput_test``: pack, copy + flush (submitting thread),
#: DMA run + wait (input DMA start to output DMA done: calls in flight overlap, so these sum to
#: more than the wall time), invalidate + copy (dispatcher), unpack (collecting thread).
TIMING = ("pack_input", "copy_input_to_device", "run_and_wait", "copy_output_from_device",
          "unpack_output")  # fmt: skip


class AcceleratorTimeout(UserError):
    """A transfer did not complete in time (one line, no traceback in the CLI)."""


@dataclass(frozen=True)
class WeightLoad:
    """What loading a runtime-weights package's parameters over AXI-lite took, at start."""

    layers: int  #: writable layers written
    words: int  #: 32-bit words written (and read back)
    write_ms: float  #: the AXI-lite writes
    verify_ms: float  #: reading every word back and comparing
    flush_ms: float  #: the one flush call (a tile through the fabric)


def partition_offsets(record: Mapping[str, Any]) -> dict[str, int]:
    """Byte offset of each writable layer's memory inside its partition's AXI-lite window.

    finn's block design gives every AXI-lite interface its own range, assigned partition by
    partition and aligned to the range (``assign_axi_addr_proc``), which the package records as
    ``predicted_offset``; the ``.hwh`` gives one window per ``StreamingDataflowPartition_<n>``,
    starting at its first interface. So a layer sits at its predicted offset minus the
    partition's first one: 0 for the only writable layer of a partition (what finn's Floorplan
    makes, and what finn-plus-driver assumes for every file), more for a second one."""
    first: dict[int, int] = {}
    for entry in record["layers"]:
        n = int(entry["partition"])
        first[n] = min(first.get(n, entry["predicted_offset"]), entry["predicted_offset"])
    return {
        e["layer"]: int(e["predicted_offset"]) - first[int(e["partition"])]
        for e in record["layers"]
    }


def read_words(path: Path) -> np.ndarray:
    """A ``.dat`` file's 32-bit words (one hex word a line; checked when the package loaded)."""
    return np.array([int(t, 16) for t in path.read_text().split()], dtype=np.uint32)


# --------------------------------------------------------------------------------------------
# Packing: numpy port of finn_plus_driver.packing 1.6.1 with reverse_inner=reverse_endian=True
# (what FINNDMAOverlay.pack_input/unpack_output use). Keep in sync with finn_plus_driver 1.6.1.
# --------------------------------------------------------------------------------------------


def finn_pack(values: np.ndarray, dtype: str) -> np.ndarray:
    """``finnpy_to_packed_bytearray(values, dtype, reverse_inner=True, reverse_endian=True)``
    for integer dtypes: ``(..., E)`` -> ``uint8 (..., ceil(E * bits / 8))``."""
    bits, _ = dtype_bits(dtype)
    values = np.asarray(values)
    if bits % 8 == 0 and values.dtype.kind in "iu" and values.dtype.itemsize == bits // 8:
        # finn's whole-byte fast path: both reverses cancel to the native little-endian bytes
        packed = np.ascontiguousarray(values).astype(values.dtype.newbyteorder("<"), copy=False)
        return packed.view(np.uint8).reshape(*values.shape[:-1], -1)
    ints = values.astype(np.int64)
    if dtype == "BIPOLAR":
        ints = (ints + 1) // 2
    ints = np.flip(ints & ((1 << bits) - 1), axis=-1)  # reverse_inner: value 0 -> LSBs
    msb_first = (ints[..., None] >> np.arange(bits - 1, -1, -1)) & 1
    word = msb_first.reshape(*ints.shape[:-1], -1).astype(np.uint8)
    pad = -word.shape[-1] % 8
    if pad:  # left-pad the word to whole bytes
        word = np.concatenate([np.zeros((*word.shape[:-1], pad), np.uint8), word], axis=-1)
    return np.flip(np.packbits(word, axis=-1), axis=-1)  # reverse_endian


def finn_unpack(packed: np.ndarray, dtype: str, count: int) -> np.ndarray:
    """Inverse of :func:`finn_pack` (``packed_bytearray_to_finnpy`` with both reverses), to
    int64 (finn-plus-driver returns float32, exact only below 2**24)."""
    bits, signed = dtype_bits(dtype)
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    if bits in (8, 16, 32, 64) and packed.shape[-1] * 8 == bits * count:
        kind = "i" if signed else "u"
        return packed.view(f"<{kind}{bits // 8}").astype(np.int64)
    if count == 1 and packed.shape[-1] in (1, 2, 4, 8) and dtype != "BIPOLAR":
        # one value per word (PE = 1, e.g. INT9 in 2 bytes): the word is the value, LE
        ints = packed.view(f"<u{packed.shape[-1]}").astype(np.int64) & ((1 << bits) - 1)
        if signed:
            ints = np.where(ints >= (1 << (bits - 1)), ints - (1 << bits), ints)
        return ints
    word = np.unpackbits(np.flip(packed, axis=-1), axis=-1)[..., -bits * count :]
    msb_first = word.reshape(*packed.shape[:-1], count, bits).astype(np.int64)
    ints = np.flip(msb_first @ (np.int64(1) << np.arange(bits - 1, -1, -1)), axis=-1)
    if signed:
        ints = np.where(ints >= (1 << (bits - 1)), ints - (1 << bits), ints)
    if dtype == "BIPOLAR":
        ints = 2 * ints - 1
    return ints


# --------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clock:
    """The accelerator clock: PS clock 0 as set/read back, and the fabric clock (MHz)."""

    requested_mhz: float  #: settings.json fclk_mhz
    ps_fclk0_mhz: float  #: pynq.ps.Clocks.fclk0_mhz read back after loading
    fabric_mhz: float  #: clk_wiz_0 output if present, else ps_fclk0_mhz
    source: str  #: "clk_wiz_0" or "fclk0"


def clk_wiz_params(bitfile: Path) -> dict[str, str]:
    """Parameters of ``clk_wiz_0`` in the ``.hwh`` next to ``bitfile`` ({} if none): what
    finn_plus_driver.hwh.get_clk_wiz_params_from_hwh reads."""
    hwh = bitfile.with_suffix(".hwh")
    if not hwh.is_file():
        return {}
    try:
        root = ET.parse(hwh).getroot()
    except ET.ParseError:
        return {}
    for module in root.iter("MODULE"):
        if module.get("INSTANCE") == "clk_wiz_0":
            return {p.get("NAME", ""): p.get("VALUE", "") for p in module.iter("PARAMETER")}
    return {}


def _driver_files(package: Package) -> tuple[Path, dict[str, Any]]:
    settings_path = package.file("driver/settings.json")
    bits = sorted(package.file("bitfile").glob("*.bit")) if package.file("bitfile").is_dir() else []
    if not settings_path.is_file() or not bits:
        raise ParameterError(
            f"package {package.path} has no bitfile/*.bit and driver/settings.json: it was built "
            "without Vivado; build it on a machine with XILINX_VIVADO, or run it on the "
            "simulator ({backend})",
            backend="sim",
        )
    if len(bits) > 1:
        raise UserError(f"package {package.path} has {len(bits)} bitfiles; expected one")
    try:
        settings = json.loads(settings_path.read_text())
        info = settings["driver_information"]
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{settings_path}: unreadable driver settings ({e})") from None
    return bits[0], info


def _check_io(package: Package, io: dict[str, Any]) -> None:
    """settings.json must describe the package's accelerator: one input, one output, same
    shapes and datatypes."""
    where = f"{package.path}/driver/settings.json"
    if int(io.get("num_inputs", 1)) != 1 or int(io.get("num_outputs", 1)) != 1:
        raise UserError(f"{where}: the pynq backend drives one input and one output DMA")
    if int(io.get("number_of_external_weights", 0)):
        raise UserError(f"{where}: external (DRAM) weights are not supported")
    pairs = (
        ("ishape_normal", package.input["shape"], "idt", package.input["dtype"]),
        ("oshape_normal", package.output["shape"], "odt", package.output["dtype"]),
    )
    for key, shape, dkey, dtype in pairs:
        got = [int(v) for v in io[key][0]][1:]
        if got != [int(v) for v in shape][1:]:
            raise UserError(f"{where}: {key} {got} does not match the package's {shape[1:]}")
        name = str(io[dkey][0])
        name = name[name.find("[") + 1 : name.rfind("]")].strip("'\"") if "[" in name else name
        if name != dtype:
            raise UserError(f"{where}: {dkey} {name} does not match the package's {dtype}")


@dataclass
class _BufferSet:
    """One call's DMA buffers: packed input and output for up to ``batch`` tiles."""

    ibuf: Any
    obuf: Any


@dataclass(eq=False)
class _Call:
    """One DMA call of ``n`` tiles in buffer set ``slot``, on its way through the dispatcher."""

    n: int
    slot: int
    started: float | None = None  #: its input DMA was started (perf_counter)
    odma_started: bool = False
    output_done: bool = False  #: its output DMA was seen done
    raw: np.ndarray | None = None  #: its packed output, copied out of the DMA buffer
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Ticket:
    """What :meth:`PynqEngine.submit` returns: its calls, for :meth:`PynqEngine.collect`."""

    calls: tuple[_Call, ...]
    tiles: int


class PynqEngine:
    """The accelerator of a package on the board (see the module docstring)."""

    #: submit / collect / run may be called from several threads at once (the pipeline
    #: then runs its accelerate workers without a lock, so their calls overlap)
    concurrent = True

    def __init__(
        self,
        package: Package,
        *,
        transport: str = "auto",
        max_batch: int = DEFAULT_MAX_BATCH,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        timeout_s: float | None = None,
        device: Any = None,
        calls: int = DEFAULT_CALLS,
    ) -> None:
        from fcnseg.host.sim.engine import SimEngine

        if transport not in TRANSPORTS:
            raise ParameterError(
                f"{{transport}} is not one of {', '.join(TRANSPORTS)}", transport=transport
            )
        self.package = package
        self.bitfile, info = _driver_files(package)
        if info.get("platform") != "zynq-iodma":
            raise UserError(f"platform {info.get('platform')!r} is not supported (zynq-iodma)")
        if info.get("driver_type", "FINNDMAOverlay") != "FINNDMAOverlay":
            raise UserError(
                f"driver type {info['driver_type']!r} is not supported (FINNDMAOverlay)"
            )
        self.io = json.loads(json.dumps(info["io_shape_dict"]))  # a copy the driver may mutate
        _check_io(package, self.io)
        self.idt, self.odt = package.input["dtype"], package.output["dtype"]
        self.ifolded = tuple(int(v) for v in self.io["ishape_folded"][0][1:])
        self.ofolded = tuple(int(v) for v in self.io["oshape_folded"][0][1:])
        self.ipacked = tuple(int(v) for v in self.io["ishape_packed"][0][1:])
        self.opacked = tuple(int(v) for v in self.io["oshape_packed"][0][1:])
        self.tile = package.tile
        self.oshape = tuple(int(v) for v in package.output["shape"][1:])
        if int(calls) < 1:
            raise ParameterError("{calls} must be >= 1 (DMA calls in flight)", calls=calls)
        #: DMA calls in flight at most (buffer sets)
        self.calls = int(calls)
        per_tile = int(np.prod(self.ipacked)) + int(np.prod(self.opacked))
        self.batch = tiles_per_call(per_tile, max_batch, buffer_limit, self.calls)
        if self.batch < 1:
            raise ParameterError(
                f"{{buffer_limit}} is below the {per_tile * self.calls} bytes of DMA buffers one "
                f"tile in each of {self.calls} calls in flight needs: raise the buffer limit or "
                "lower calls",
                buffer_limit=buffer_limit,
            )
        #: tiles in flight at most: ``calls`` calls of ``batch``
        self.in_flight = self.batch * self.calls
        fps = float(package.estimates.get("estimated_fps") or 0)
        #: the fabric's own rate, tiles/s (the package's finn-plus estimate; None if unknown)
        self.fabric_fps = fps or None
        self.timeout_s = (
            float(timeout_s) if timeout_s else max(5.0, 20 * self.batch / fps) if fps else 30.0
        )
        self.net_stride = SimEngine(package).net_stride
        self.requested_mhz = float(info.get("fclk_mhz", 100.0))
        self.broken: str | None = None
        self.timing: dict[str, float] = dict.fromkeys((*TIMING, "calls", "tiles"), 0.0)
        self._sets: list[_BufferSet] = []
        self._cv = threading.Condition()
        self._free: list[int] = []  # buffer sets not in use
        self._pending: deque[_Call] = deque()  # packed + flushed, input DMA not started
        self._reading: _Call | None = None  # the call whose input DMA runs
        self._draining: deque[_Call] = deque()  # input DMA started, output not done, in order
        self._dispatcher: threading.Thread | None = None
        self._submitting = threading.Lock()  # one submission at a time, its calls in order
        self._plan: list[tuple[dict[str, Any], np.ndarray, int, Any]] | None = None
        self._open(transport, info, device)
        self._free = list(range(len(self._sets)))
        self.clock = self._set_clock()
        #: the runtime weights' load at start (module docstring), None without them
        self.weight_load = self.load_runtime_weights() if self._runtime else None

    # --- opening ------------------------------------------------------------------------------

    def _open(self, transport: str, info: dict[str, Any], device: Any) -> None:
        """Open the overlay through ``transport`` (``auto``: finn-plus-driver if importable)."""
        self.transport = transport
        self._runtime = RUNTIME_WEIGHTS_KEY in self.package.meta
        if bool(info.get("runtime_weights", False)) != self._runtime:
            has = "has" if self._runtime else "has no"
            raise UserError(
                f"{self.package.path}: driver/settings.json says runtime_weights "
                f"{bool(info.get('runtime_weights', False))}, but accelerator.json {has} "
                "runtime_weights record: the bitfile and the package do not belong together"
            )
        if transport == "auto":
            self.transport = "finn" if _finn_driver_importable() else "builtin"
        if self.transport == "finn":
            self._open_finn(info, device)
        elif info.get("external_weights"):
            raise ParameterError(
                "the accelerator has external weights: only finn-plus-driver loads them "
                "({transport}, see docs/board.md)",
                transport="finn",
            )
        else:
            self._open_builtin(device)

    def _open_finn(self, info: dict[str, Any], device: Any) -> None:
        from finn_plus_driver import get_driver_class

        cls = get_driver_class("FINNDMAOverlay")
        weights = self.package.file("driver/runtime_weights")
        if self._runtime:
            # the engine writes them itself (module docstring); told runtime_weights=False and
            # given a folder that does not exist, finn-plus-driver 1.6.1 loads nothing
            # (``load_runtime_weights`` returns when the folder is missing and none is expected)
            weights = self.package.path / ".no-driver-runtime-weights"
        self.overlay = cls(
            bitfile_name=str(self.bitfile),
            platform="zynq-iodma",
            io_shape_dict=self.io,
            batch_size=self.batch,
            fclk_mhz=self.requested_mhz,
            device=device,
            download=True,
            runtime_weight_dir=str(weights),
            runtime_weights=bool(info.get("runtime_weights", False)) and not self._runtime,
        )
        self.idma, self.odma = self.overlay.idma[0], self.overlay.odma[0]
        # finn-plus-driver's own buffers are the first set; more calls in flight need more
        first = _BufferSet(self.overlay.ibuf_packed_device[0], self.overlay.obuf_packed_device[0])
        self._sets = [first, *self._allocate_sets(self.calls - 1, self.overlay.device)]

    def _allocate_sets(self, count: int, target: Any) -> list[_BufferSet]:
        """``count`` buffer sets in contiguous memory, cacheable (flush / invalidate)."""
        from pynq import allocate

        return [
            _BufferSet(
                allocate(
                    (self.batch, *self.ipacked), dtype=np.uint8, target=target, cacheable=True
                ),
                allocate(
                    (self.batch, *self.opacked), dtype=np.uint8, target=target, cacheable=True
                ),
            )  # fmt: skip
            for _ in range(count)
        ]

    def _open_builtin(self, device: Any) -> None:
        from pynq import Overlay

        self.overlay = Overlay(str(self.bitfile), download=True, device=device)
        self.idma = getattr(self.overlay, self.io.get("idma_names", ["idma0"])[0])
        self.odma = getattr(self.overlay, self.io.get("odma_names", ["odma0"])[0])
        self._sets = self._allocate_sets(self.calls, self.overlay.device)

    def _weight_plan(self) -> list[tuple[dict[str, Any], np.ndarray, int, Any]]:
        """Per writable layer: its record entry, its words (the package's ``.dat``), its byte
        offset in its partition's window and that window's MMIO; a missing or too small window
        is one line."""
        from pynq import MMIO

        if self._plan is not None:
            return self._plan
        record = self.package.meta[RUNTIME_WEIGHTS_KEY]
        offsets = partition_offsets(record)
        windows: dict[str, Any] = {}
        plan = []
        for entry in record["layers"]:
            name, instance = entry["layer"], entry["instance"]
            ip = self.overlay.ip_dict.get(instance)
            if ip is None:
                raise UserError(
                    f"{self.bitfile.with_suffix('.hwh')}: no {instance}: the bitfile has no "
                    f"AXI-lite memory for writable layer {name}"
                )
            words = read_words(self.package.file(entry["file"]))
            offset = offsets[name]
            if offset + 4 * len(words) > int(ip["addr_range"]):
                raise UserError(
                    f"{self.bitfile.with_suffix('.hwh')}: {instance} spans "
                    f"0x{int(ip['addr_range']):X} bytes, layer {name} needs "
                    f"0x{offset + 4 * len(words):X}"
                )
            if instance not in windows:
                windows[instance] = MMIO(
                    int(ip["phys_addr"]), int(ip["addr_range"]), device=self.overlay.device
                )
            plan.append((entry, words, offset, windows[instance]))
        self._plan = plan
        return plan

    def load_runtime_weights(self, flush: bool = True) -> WeightLoad:
        """Write every writable layer's words at its own offset, read them all back
        (:meth:`verify_runtime_weights`), then, if ``flush``, run one all-zero tile so no
        prefetched stale weight is left (module docstring). Done by the constructor for a
        runtime-weights package; call again after the memories were written by someone else."""
        if not self._runtime:
            raise UserError(f"{self.package.path}: the accelerator has no runtime weights")
        plan = self._weight_plan()
        t0 = time.perf_counter()
        for _, words, offset, mmio in plan:
            mmio.write_mm(offset, words.tobytes())
        t1 = time.perf_counter()
        self.verify_runtime_weights()
        t2 = time.perf_counter()
        if flush:
            self.run(np.zeros((1, *self.tile, 3), dtype=np.uint8))
        t3 = time.perf_counter()
        return WeightLoad(
            layers=len(plan),
            words=sum(len(words) for _, words, _, _ in plan),
            write_ms=1e3 * (t1 - t0),
            verify_ms=1e3 * (t2 - t1),
            flush_ms=1e3 * (t3 - t2),
        )

    def verify_runtime_weights(self) -> None:
        """Read every writable layer's memory back and compare it with the package's words;
        the first difference is one line (layer, window, offset, word, written and read)."""
        for entry, words, offset, mmio in self._weight_plan():
            start = offset // 4
            got = np.array(mmio.array[start : start + len(words)], dtype=np.uint32)
            if not np.array_equal(got, words):
                k = int(np.flatnonzero(got != words)[0])
                raise UserError(
                    f"{self.package.path}: writable layer {entry['layer']} does not read back "
                    f"from {entry['instance']} +0x{offset + 4 * k:X}: word {k} written "
                    f"0x{int(words[k]):08X}, read 0x{int(got[k]):08X} (the bitfile's memories "
                    "are not where the package says)"
                )

    def _set_clock(self) -> Clock:
        from pynq.ps import Clocks

        wiz = clk_wiz_params(self.bitfile)
        if wiz:
            Clocks.fclk0_mhz = 100.0  # finn-plus's clk_wiz_0 expects 100 MHz in
            fabric = float(wiz.get("CLKOUT1_OUT_FREQ") or wiz.get("CLKOUT1_REQUESTED_OUT_FREQ"))
            source = "clk_wiz_0"
        else:
            Clocks.fclk0_mhz = self.requested_mhz
            fabric, source = float(Clocks.fclk0_mhz), "fclk0"
        return Clock(self.requested_mhz, float(Clocks.fclk0_mhz), fabric, source)

    # --- running --------------------------------------------------------------------------------

    def pack(self, x: np.ndarray) -> np.ndarray:
        """uint8 NHWC tiles -> the packed input bytes ``(n, *ishape_packed)``."""
        folded = x.reshape(len(x), *self.ifolded)
        if self.transport == "finn":
            from finn_plus_driver.packing import finnpy_to_packed_bytearray
            from qonnx.core.datatype import DataType

            return finnpy_to_packed_bytearray(
                folded, DataType[self.idt], reverse_inner=True, reverse_endian=True
            )
        return finn_pack(folded, self.idt)

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """Packed output bytes ``(n, *oshape_packed)`` -> int64 scores ``(n, h, w, C)``."""
        n = len(packed)
        if self.transport == "finn" and dtype_bits(self.odt)[0] in (8, 16):
            from finn_plus_driver.packing import packed_bytearray_to_finnpy
            from qonnx.core.datatype import DataType

            folded = packed_bytearray_to_finnpy(
                packed, DataType[self.odt], (n, *self.ofolded), reverse_inner=True,
                reverse_endian=True,
            )  # fmt: skip
            scores = np.asarray(folded).astype(np.int64)
        else:
            scores = finn_unpack(packed, self.odt, self.ofolded[-1])
        return scores.reshape(n, *self.oshape)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Integer scores of uint8 NHWC tiles ``(N, tile_h, tile_w, 3)``: :meth:`submit` then
        :meth:`collect` (its calls overlap in the fabric, up to :attr:`calls` at once)."""
        return self.collect(self.submit(x))

    def submit(self, x: np.ndarray) -> Ticket:
        """Hand tiles to the fabric and return at once (blocking only while every buffer set is
        in use): each call of up to :attr:`batch` tiles is packed into a free buffer set,
        flushed and queued for the DMA dispatcher. Thread-safe: one submission at a time, so
        a submission's calls run back to back (a frame is not interleaved with another thread's
        and finishes first, while the other's calls keep the fabric busy). :meth:`collect` the
        ticket."""
        x = np.asarray(x)
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (*self.tile, 3):
            raise UserError(
                f"pynq backend runs {self.tile[0]}x{self.tile[1]} uint8 RGB tiles "
                f"(N, {self.tile[0]}, {self.tile[1]}, 3), got {x.dtype} {x.shape}"
            )
        self._refuse_if_broken()
        with self._submitting:
            return Ticket(tuple(self._submit_calls(x)), len(x))

    def _submit_calls(self, x: np.ndarray) -> list[_Call]:
        calls = []
        for i in range(0, len(x), self.batch):
            chunk = x[i : i + self.batch]
            n = len(chunk)
            slot = self._take_slot()
            try:
                t0 = time.perf_counter()
                packed = self.pack(chunk)
                t1 = time.perf_counter()
                ibuf = self._sets[slot].ibuf
                ibuf[:n] = packed
                ibuf[:n].flush()  # only the bytes the DMA reads
                t2 = time.perf_counter()
            except BaseException:
                with self._cv:  # the set goes back: nothing of it was queued
                    self._free.append(slot)
                    self._cv.notify_all()
                raise
            call = _Call(n=n, slot=slot)
            with self._cv:
                self._add(pack_input=t1 - t0, copy_input_to_device=t2 - t1)
                self._pending.append(call)
                if self._dispatcher is None:
                    self._dispatcher = threading.Thread(
                        target=self._dispatch, name="pynq-iodma-dispatch", daemon=True
                    )
                    self._dispatcher.start()
                self._cv.notify_all()
            calls.append(call)
        return calls

    def collect(self, ticket: Ticket) -> np.ndarray:
        """The scores of a :meth:`submit`'s tiles, ``(N, h, w, C)`` int64, once its calls are
        done (unpacked here, on the caller's thread). Raises :class:`AcceleratorTimeout`, one
        line, if a call timed out or the engine broke meanwhile."""
        outs = []
        for call in ticket.calls:
            call.done.wait()
            if call.error is not None:
                raise AcceleratorTimeout(call.error)
            assert call.raw is not None
            t0 = time.perf_counter()
            outs.append(self.unpack(call.raw))
            call.raw = None
            with self._cv:
                self._add(unpack_output=time.perf_counter() - t0)
        if not outs:
            return np.zeros((0, *self.oshape), dtype=np.int64)
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

    # --- the DMA dispatcher ---------------------------------------------------------------------

    def _refuse_if_broken(self) -> None:
        if self.broken:
            raise AcceleratorTimeout(f"accelerator unusable: {self.broken}")

    def _take_slot(self) -> int:
        """A free buffer set (waiting for the dispatcher to free one)."""
        with self._cv:
            while not self._free and not self.broken:
                self._cv.wait()
            self._refuse_if_broken()
            return self._free.pop(0)

    def _add(self, **phases: float) -> None:
        """Add seconds to :attr:`timing` (under ``_cv``)."""
        for key, dt in phases.items():
            self.timing[key] += dt

    def _dispatch(self) -> None:
        """The dispatcher thread: starts calls and sees them done, until none is left.

        Input DMA: the next queued call starts as soon as the input DMA is done with the
        previous one (its input fully read). Output DMA: started for the oldest started call
        once it is idle, in order (for the first call of an idle fabric, output then input:
        finn's order). A call is done when its output DMA is: its output is invalidated and
        copied out, its buffer set freed. Polls with a backoff sleep (20 us .. 1 ms), reset by
        every event; a started call that is not done within ``timeout_s`` breaks the engine.
        """
        pause = 0.0
        try:
            while True:
                with self._cv:
                    if not (self._pending or self._reading or self._draining):
                        self._dispatcher = None
                        return
                    start = self._pending.popleft() if self._pending and not self._reading else None
                progressed = start is not None
                if start is not None:
                    self._start_call(start)
                if self._reading is not None and self.idma.read(CTRL) & AP_DONE:
                    self._reading = None
                    progressed = True
                progressed |= self._advance_output()
                if self.broken:
                    return
                pause = 0.0 if progressed else min(1e-3, pause * 2 if pause else 2e-5)
                if pause:
                    time.sleep(pause)
        except Exception as e:  # noqa: BLE001 - a dispatcher failure must not hang the waiters
            self._break(f"DMA dispatcher failed ({type(e).__name__}: {e}): reload the overlay")

    def _start_call(self, call: _Call) -> None:
        """Start ``call``'s input DMA (and its output DMA if the output is free)."""
        sets = self._sets[call.slot]
        call.started = time.perf_counter()
        first = not self._draining
        self._draining.append(call)
        self._reading = call
        if first and self.calls == 1 and self.transport == "finn":
            self.overlay.execute_on_buffers(asynch=True, batch_size=call.n)  # output, input
            call.odma_started = True
            return
        if first:
            self._start_dma(self.odma, sets.obuf, call.n)
            call.odma_started = True
        self._start_dma(self.idma, sets.ibuf, call.n)

    def _start_dma(self, ip: Any, buf: Any, n: int) -> None:
        """Program one IODMA: address, batch, ap_start (finn-plus's register sequence)."""
        if ip is self.odma and not self.odma.read(CTRL) & AP_IDLE:
            raise AcceleratorTimeout("output DMA is not idle: reload the overlay")
        ip.write(ADDR_LO, buf.device_address & 0xFFFFFFFF)
        ip.write(ADDR_HI, (buf.device_address >> 32) & 0xFFFFFFFF)
        ip.write(BATCH, n)
        ip.write(CTRL, AP_START)

    def _advance_output(self) -> bool:
        """Start the output DMA for the oldest call, see it done, enforce its timeout."""
        if not self._draining:
            return False
        call = self._draining[0]
        if not call.odma_started:
            self._start_dma(self.odma, self._sets[call.slot].obuf, call.n)
            call.odma_started = True
            return True
        status = AP_DONE if call.output_done else self.odma.read(CTRL)
        if status & AP_DONE:
            call.output_done = True  # ap_done is clear-on-read: this read is the only one
            if call is not self._reading:  # its input buffer may be reused once both are done
                self._complete(call)
                return True
        assert call.started is not None
        if time.perf_counter() - call.started > self.timeout_s:
            self._break(
                f"accelerator did not finish {call.n} tile(s) within {self.timeout_s:g} s "
                f"(output DMA status 0x{status:X}); the bitstream may not match "
                "driver/settings.json or the fabric hung: reload the overlay",
                timed_out=call,
            )
        return False

    def _complete(self, call: _Call) -> None:
        """``call``'s output is in DDR: invalidate, copy out, free its buffer set."""
        assert call.started is not None
        t0 = time.perf_counter()
        out = self._sets[call.slot].obuf[: call.n]
        out.invalidate()
        call.raw = np.array(out)
        t1 = time.perf_counter()
        self._draining.popleft()
        with self._cv:
            self._add(run_and_wait=t0 - call.started, copy_output_from_device=t1 - t0,
                      calls=1, tiles=call.n)  # fmt: skip
            self._free.append(call.slot)
            self._cv.notify_all()
        call.done.set()

    def _break(self, reason: str, timed_out: _Call | None = None) -> None:
        """The engine is unusable: every call not done fails (``timed_out`` with ``reason``,
        the others as unusable), waiting submitters are woken, the dispatcher ends."""
        with self._cv:
            self.broken = reason
            calls = [*self._draining, *self._pending]
            self._draining.clear()
            self._pending.clear()
            self._reading = None
            self._dispatcher = None
            self._cv.notify_all()
        for call in calls:
            call.error = reason if call is timed_out else f"accelerator unusable: {reason}"
            call.done.set()


def _finn_driver_importable() -> bool:
    try:
        import finn_plus_driver.overlays.dma  # noqa: F401
    except ImportError:
        return False
    return True


def open_engine(
    package: Package,
    *,
    transport: str = "auto",
    max_batch: int = DEFAULT_MAX_BATCH,
    buffer_limit: int = DEFAULT_BUFFER_LIMIT,
    timeout_s: float | None = None,
    device: Any = None,
    batch: int | None = None,
    calls: int = DEFAULT_CALLS,
) -> PynqEngine:
    """A :class:`PynqEngine` for ``package`` (``batch`` is an alias of ``max_batch``)."""
    return PynqEngine(
        package,
        transport=transport,
        max_batch=batch if batch is not None else max_batch,
        buffer_limit=buffer_limit,
        timeout_s=timeout_s,
        device=device,
        calls=calls,
    )
