"""The ``pynq`` backend: the package's accelerator on a PYNQ board, through its IODMAs.

A package with ``bitfile/*.bit`` (+ ``.hwh``) and ``driver/settings.json`` (finn-plus's driver
step) is loaded as an overlay and driven with finn-plus's zynq-iodma protocol: fold, pack,
copy + flush, program the output then the input IODMA (address 0x10/0x14, batch 0x1C, start
0x00), wait for ap_done (0x00 bit 1) on the output IODMA, invalidate, unpack. Engine interface
as the ``sim`` backend, ``run(x uint8 (N, H, W, 3)) -> int64 (N, h, w, C)``, but only for the
package's tile ``H x W`` (the accelerator has one size; :mod:`fcnseg.host.tiling` covers
images of any size with it).

Two transports, one protocol:

- ``"finn"``: finn-plus-driver's ``FINNDMAOverlay`` (overlay, clock, buffers,
  ``execute_on_buffers``) and its packing (``finn_plus_driver.packing``), except for output
  types outside its 8/16-bit fast path (e.g. INT9), where its general unpacking costs ~5 ms per
  256x256 tile on a PC (50x the port below, so on an ARM core it alone would cap the rate below
  the fabric's) and the port is used instead (byte-equal, tested). Needs finn-plus-driver +
  qonnx + onnx + bitstring + matplotlib: the install on aarch64 boards (ZCU104, KV260 ...).
- ``"builtin"``: ``pynq.Overlay`` + the same register sequence and a numpy port of
  finn-plus-driver 1.6.1's packing (:func:`finn_pack`, :func:`finn_unpack`; keep in sync with
  ``finn_plus_driver/packing.py`` 1.6.1, tested against it). Needs only pynq + numpy: the
  install on 32-bit ARM boards (Pynq-Z2, Pynq-Z1), where onnx, onnxruntime and bitarray have no
  wheels (docs/board.md).
- ``"auto"`` (default): ``"finn"`` when finn-plus-driver imports, else ``"builtin"``.

Both transports wait for completion themselves: finn-plus-driver's ``wait_until_finished``
polls ap_done with no timeout, so a hung transfer would hang the host. :meth:`PynqEngine._wait`
polls the same bit with a backoff sleep (freeing the CPU for the host pipeline's other threads)
and raises :class:`AcceleratorTimeout`, one line, after ``timeout_s``.

The PL clock comes from the package: a finn-plus 1.6.1 Zynq design feeds PS clock 0 at 100 MHz
into ``clk_wiz_0``, whose output (read from the ``.hwh``) is the accelerator clock; without a
clocking wizard, PS clock 0 *is* the accelerator clock and is set to ``fclk_mhz`` from
``settings.json``. :attr:`PynqEngine.clock` records what was set and read back.

Batches: as many tiles per accelerator call as fit ``buffer_limit`` bytes of contiguous memory
(input + output buffers), at most ``max_batch``.

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
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcnseg.errors import ParameterError, UserError
from fcnseg.host.package import dtype_bits

if TYPE_CHECKING:
    from fcnseg.host.package import Package

CTRL, ADDR_LO, ADDR_HI, BATCH = 0x00, 0x10, 0x14, 0x1C
AP_START, AP_DONE, AP_IDLE = 0x1, 0x2, 0x4
TRANSPORTS = ("auto", "finn", "builtin")
#: Default contiguous memory for one engine's DMA buffers (input + output).
DEFAULT_BUFFER_LIMIT = 32 << 20
DEFAULT_MAX_BATCH = 16
#: Phases of one accelerator call, timed in :attr:`PynqEngine.timing` (seconds, summed), like
#: finn-plus-driver's ``throughput_test``: pack, copy + flush, DMA run + wait, invalidate + copy,
#: unpack.
TIMING = ("pack_input", "copy_input_to_device", "run_and_wait", "copy_output_from_device",
          "unpack_output")  # fmt: skip


class AcceleratorTimeout(UserError):
    """A transfer did not complete in time (one line, no traceback in the CLI)."""


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


class PynqEngine:
    """The accelerator of a package on the board (see the module docstring)."""

    def __init__(
        self,
        package: Package,
        *,
        transport: str = "auto",
        max_batch: int = DEFAULT_MAX_BATCH,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        timeout_s: float | None = None,
        device: Any = None,
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
        per_tile = int(np.prod(self.ipacked)) + int(np.prod(self.opacked))
        self.batch = min(int(max_batch), int(buffer_limit) // per_tile)
        if self.batch < 1:
            raise ParameterError(
                f"{{buffer_limit}} is below the {per_tile} bytes of DMA buffers one tile needs: "
                "raise the buffer limit",
                buffer_limit=buffer_limit,
            )
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
        self._open(transport, info, device)
        self.clock = self._set_clock()

    # --- opening ------------------------------------------------------------------------------

    def _open(self, transport: str, info: dict[str, Any], device: Any) -> None:
        """Open the overlay through ``transport`` (``auto``: finn-plus-driver if importable)."""
        self.transport = transport
        if transport == "auto":
            self.transport = "finn" if _finn_driver_importable() else "builtin"
        if self.transport == "finn":
            self._open_finn(info, device)
        elif info.get("runtime_weights") or info.get("external_weights"):
            raise ParameterError(
                "the accelerator has runtime-writable or external weights: only finn-plus-driver "
                "loads them ({transport}, see docs/board.md)",
                transport="finn",
            )
        else:
            self._open_builtin(device)

    def _open_finn(self, info: dict[str, Any], device: Any) -> None:
        from finn_plus_driver import get_driver_class

        cls = get_driver_class("FINNDMAOverlay")
        weights = self.package.file("driver/runtime_weights")
        self.overlay = cls(
            bitfile_name=str(self.bitfile),
            platform="zynq-iodma",
            io_shape_dict=self.io,
            batch_size=self.batch,
            fclk_mhz=self.requested_mhz,
            device=device,
            download=True,
            runtime_weight_dir=str(weights),
            runtime_weights=bool(info.get("runtime_weights", False)),
        )
        self.idma, self.odma = self.overlay.idma[0], self.overlay.odma[0]
        self.ibuf = self.overlay.ibuf_packed_device[0]
        self.obuf = self.overlay.obuf_packed_device[0]

    def _open_builtin(self, device: Any) -> None:
        from pynq import Overlay, allocate

        self.overlay = Overlay(str(self.bitfile), download=True, device=device)
        self.idma = getattr(self.overlay, self.io.get("idma_names", ["idma0"])[0])
        self.odma = getattr(self.overlay, self.io.get("odma_names", ["odma0"])[0])
        target = self.overlay.device
        self.ibuf = allocate((self.batch, *self.ipacked), dtype=np.uint8, target=target,
                             cacheable=True)  # fmt: skip
        self.obuf = allocate((self.batch, *self.opacked), dtype=np.uint8, target=target,
                             cacheable=True)  # fmt: skip

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

    def _start(self, n: int) -> None:
        """Program the IODMAs for ``n`` tiles: outputs first, then inputs (finn's order)."""
        if self.transport == "finn":
            self.overlay.execute_on_buffers(asynch=True, batch_size=n)
            return
        if not self.odma.read(CTRL) & AP_IDLE:
            raise AcceleratorTimeout("output DMA is not idle: reload the overlay")
        for ip, buf in ((self.odma, self.obuf), (self.idma, self.ibuf)):
            ip.write(ADDR_LO, buf.device_address & 0xFFFFFFFF)
            ip.write(ADDR_HI, (buf.device_address >> 32) & 0xFFFFFFFF)
            ip.write(BATCH, n)
            ip.write(CTRL, AP_START)

    def _wait(self, n: int) -> None:
        """Poll ap_done on the output DMA with a backoff sleep; bounded by ``timeout_s``."""
        deadline = time.monotonic() + self.timeout_s
        pause = 0.0
        while True:
            status = self.odma.read(CTRL)
            if status & AP_DONE:
                return
            if time.monotonic() > deadline:
                self.broken = (
                    f"accelerator did not finish {n} tile(s) within {self.timeout_s:g} s "
                    f"(output DMA status 0x{status:X}); the bitstream may not match "
                    "driver/settings.json or the fabric hung: reload the overlay"
                )
                raise AcceleratorTimeout(self.broken)
            time.sleep(pause)
            pause = min(1e-3, pause * 2 if pause else 2e-5)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Integer scores of uint8 NHWC tiles ``(N, tile_h, tile_w, 3)``."""
        x = np.asarray(x)
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (*self.tile, 3):
            raise UserError(
                f"pynq backend runs {self.tile[0]}x{self.tile[1]} uint8 RGB tiles "
                f"(N, {self.tile[0]}, {self.tile[1]}, 3), got {x.dtype} {x.shape}"
            )
        if self.broken:
            raise AcceleratorTimeout(f"accelerator unusable: {self.broken}")
        outs = []
        t = self.timing
        for i in range(0, len(x), self.batch):
            chunk = x[i : i + self.batch]
            n = len(chunk)
            t0 = time.perf_counter()
            packed = self.pack(chunk)
            t1 = time.perf_counter()
            self.ibuf[:n] = packed
            self.ibuf[:n].flush()  # only the bytes the DMA reads
            t2 = time.perf_counter()
            self._start(n)
            self._wait(n)
            t3 = time.perf_counter()
            out = self.obuf[:n]
            out.invalidate()
            raw = np.array(out)
            t4 = time.perf_counter()
            outs.append(self.unpack(raw))
            t5 = time.perf_counter()
            for key, dt in zip(TIMING, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
                t[key] += dt
            t["calls"] += 1
            t["tiles"] += n
        if not outs:
            return np.zeros((0, *self.oshape), dtype=np.int64)
        return np.concatenate(outs) if len(outs) > 1 else outs[0]


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
) -> PynqEngine:
    """A :class:`PynqEngine` for ``package`` (``batch`` is an alias of ``max_batch``)."""
    return PynqEngine(
        package,
        transport=transport,
        max_batch=batch if batch is not None else max_batch,
        buffer_limit=buffer_limit,
        timeout_s=timeout_s,
        device=device,
    )
