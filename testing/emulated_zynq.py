"""An emulated Zynq UltraScale+ board for running the *real* pynq + finn-plus-driver code on a PC.

A testing aid (:mod:`fcnseg.testing`), not part of the runtime: used by the board tests
(``.venv-board``) and for off-board throughput experiments (``docs/board.md``). It needs pynq
(pinned to 4.0.0 with pynqmetadata 0.2.0: the device API below is pynq's undocumented
internals), so it is imported only where pynq is installed.

What is emulated, and how
-------------------------
- **Device discovery**: :class:`EmulatedZynq` subclasses ``pynq.pl_server.device.Device`` (no
  ``_probe_``, so pynq never auto-registers it) and, as a context manager, installs itself as
  ``pynq.Device.active_device`` and as the device of ``pynq.ps.Clocks`` (dropping the cached
  ``Clocks._real_instance``), restoring both on exit. ``arch == "aarch64"``: pynq's clock code
  takes the ZynqMP path (CRL/CRF registers, seeded so IOPLL = 1500 MHz and PL0 = 100 MHz).
- **Registers**: the ``MEMORY_MAPPED`` capability; ``mmap`` returns an ndarray view of each IP's
  register file, whose writes reach the emulated IP (an ndarray subclass with a write hook).
- **Bitstream / metadata**: :func:`write_board_files` writes a ``.bit`` stand-in (a JSON header
  that describes the accelerator's ports, read by :meth:`EmulatedZynq.download` the way the
  real fabric is "described" by the bitstream) and a hand-made ``.hwh`` that pynqmetadata parses
  (SYSTEMINFO, one MODULE + MEMRANGE per IODMA, a ``zynq_ultra_ps_e`` with the PL clock
  parameters, and finn's ``clk_wiz_0`` with the accelerator clock).
- **DDR**: one ndarray separate from host memory. ``allocate(cacheable=True)`` gives a host
  buffer whose ``flush`` copies host -> DDR and ``invalidate`` DDR -> host, so a missing
  flush/invalidate shows up as stale data (coherent buffers are views of DDR itself). The DDR
  size is the board's contiguous-memory (CMA) budget: an allocation that does not fit fails.
- **IODMA protocol** (finn-plus ``IODMA_hls``, what ``FINNDMAOverlay`` drives on zynq-iodma):
  control word at 0x00 (bit 0 ap_start, bit 1 ap_done, bit 2 ap_idle), buffer address at
  0x10/0x14 (low/high), batch size at 0x1C. The input and the output DMA are separate IPs, each
  ``ap_ctrl_hs`` with its own control word (finn-plus 1.6.1 ``iodma_hls.py``: ``#pragma HLS
  INTERFACE s_axilite port=return``): writing 1 to 0x00 of an idle one starts it, and it runs
  on its own; a start while it runs is lost (recorded in :attr:`EmulatedZynq.faults`). So a host
  may start the next call's input DMA as soon as the previous input DMA is done (its input fully
  read) while the output DMA still drains the pipeline.
- **The fabric's timing** (:class:`FabricTiming`, ``II`` and ``L``; from the package's
  estimates with :meth:`FabricTiming.of_package`): the fabric is a pipeline of at most
  ``capacity = ceil(L / II)`` tiles. A running input DMA hands it its next tile at
  ``max(its start, previous entry + II, exit of the tile capacity places ahead)`` (it reads
  that tile's packed input from DDR at that moment), and is done one ``II`` after its last
  tile entered. The oldest tile inside leaves at ``max(entry + L, previous exit + II, start of
  the output DMA)`` into the running output DMA (its scores written to DDR then), which is done
  when its last tile has left; without a running output DMA the pipeline backs up (no tile
  leaves, and once it is full none enters). A fabric thread runs this model in real time
  (``time.perf_counter()``), a compute thread the accelerator callback per tile in entry order
  (a tile leaves no earlier than its scores are computed). Every tile's entry and exit are
  recorded: :meth:`EmulatedZynq.fabric_timeline`, and :meth:`EmulatedZynq.busy_fraction`, the
  share of a run's wall time during which the input accepted tiles (one ``II`` per tile).
  ``fabric_fps=F`` is ``II = L = 1 / F`` (a call of N tiles takes ``N / F``); neither: no
  fabric time. ``stall = True`` makes started transfers never complete (a hung accelerator).
  ap_done is clear-on-read, as in the ``ap_ctrl_hs`` control register of Vitis HLS ("bit 1 -
  ap_done (Read/COR)"): a host must act on the one read that sees it.

- **Writable memories** (a package built with ``--runtime-weights``, or swapped onto such a
  bitfile; docs/runtime_weights.md): the ``.hwh`` gets one AXI-lite MEMRANGE per
  ``StreamingDataflowPartition_<n>`` that holds writable layers (slave interface
  ``s_axilite_0``, base name ``C_S_AXILITE_0_BASEADDR``), the instance name finn-plus-driver
  and the ``pynq`` backend look up. *Inferred, not copied from a real .hwh* (none exists
  here, no Vivado): the instance and interface names are finn's (``create_stitched_ip.py``,
  ``make_zynq_proj.py``), but the addresses are the emulator's (after the IODMAs, each window
  aligned to its power-of-two range, :data:`MEM_BASE`), and a partition's window spans all its
  layers, the k-th at the spacing finn's ``assign_axi_addr_proc`` gives its interfaces
  (:func:`fcnseg.host.backends.pynq.partition_offsets`; finn makes one writable layer per
  partition, so that is offset 0). Each window is a register file reached through ``mmap``
  like the IODMAs', whose words *are* the layers' memories: a write stores the bits the
  memory has (:func:`fcnseg.hw.runtime_weights.valid_bits`); a memstream line of several
  words is stored when its last used word arrives, the earlier words latched
  (``axilite.sv``); padding words are not stored and read 0. A write outside every layer's
  words, or with bits beyond the lane or line width, is a fault in :attr:`EmulatedZynq.faults`
  (the in-range bits are stored). :attr:`EmulatedZynq.drop_writes` names ``(instance, byte
  offset)`` writes a broken register file loses. The stand-in bitstream carries every memory's
  initial words (the package's ``.dat`` files when it was emulated): that is the "bitfile", so
  a swapped package, which shares it, computes with the OLD weights until the host writes.
- **A fabric made when the bitfile is downloaded**: ``EmulatedZynq(make_accelerator=f)``
  without an accelerator builds it at :meth:`EmulatedZynq.download`, ``f(package)``, from the
  package whose ``bitfile/`` holds the bitstream pynq downloads (:func:`bitfile_package`), so
  a command given only ``--package`` runs on a board "programmed" with that package's bitfile
  (``fcnseg emulate run``, :mod:`fcnseg.testing.emulate_cli`). For a swapped package that is
  its own (new) layers, but the memories still start with the bitstream's (old) words, and
  those decide what the fabric computes until the host writes. :attr:`EmulatedZynq.stats`
  counts the memory words written (``weight_writes``, lost ones included) and read
  (``weight_reads``), beside the IODMA jobs and tiles.
- **What the fabric computes with**: the memories' current words, decoded
  (:func:`fcnseg.hw.runtime_weights.decode_layer`) into the layers' tensors and handed to the
  accelerator (``load_parameters``, :class:`SimAccelerator`; accelerators without it, the
  stand-in and the generated hardware, keep the weights they were made with). **Stale
  prefetch**: finn's weight streamer reads ahead, up to 8 memory lines in flight
  (``FULL_CREDIT``, ``finn-rtllib/memstream/hdl/memstream.sv:146``), so right after a write an
  MVAU's stream still carries lines read before it. Modelled coarsely: the first tile that
  enters the fabric after a memory changed computes entirely with the parameters the fabric
  had loaded before, every layer's (more staleness than 8 lines, never less, so a missing
  flush shows in that tile's scores); every later tile computes with the memories as they were
  when the tile before it entered. One flush call (finn's ``load_runtime_weights(flush_accel=
  True)``) of one tile therefore makes the memories alone decide the output.

The accelerator callback maps uint8 NHWC ``(N, H, W, 3)`` to int64 ``(N, h, w, C)``:
:func:`sim_accelerator` (the bit-exact :class:`~fcnseg.host.sim.engine.SimEngine`, reloadable
with the writable memories' tensors) or
:func:`standin_accelerator` (sleeps ``N / fps``: throughput measurements without the simulator's
CPU cost) or :func:`generated_accelerator` (the package's generated hardware, ``hardware.tar.xz``:
every HLS node in C++ simulation and every RTL node in Verilator, chained by
``fcnseg.hw.verify.chain``; finn-free). :func:`make_settings` writes the
``driver/settings.json`` finn-plus's driver step (``MakePYNQDriver`` + ``get_driver_shapes``,
finn-plus 1.6.1) would write for a package, and :func:`emulated_package` adds both to a copy of
a package.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import queue
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pynq.pl_server.device import Device

from fcnseg.errors import UserError
from fcnseg.host.package import dtype_bits

if TYPE_CHECKING:
    from fcnseg.host.package import Package

#: ``accelerator(x uint8 (N, H, W, 3)) -> int64 (N, h, w, C)``
Accelerator = Callable[[np.ndarray], np.ndarray]

# IODMA register map (finn-plus IODMA_hls, ap_ctrl_hs + AXI-lite arguments).
CTRL, ADDR_LO, ADDR_HI, BATCH = 0x00, 0x10, 0x14, 0x1C
AP_START, AP_DONE, AP_IDLE = 0x1, 0x2, 0x4

#: Where the emulated IODMAs sit (ZynqMP M_AXI_HPM0_FPD window) and their register range.
IP_BASE, IP_RANGE = 0xA000_0000, 0x1_0000
#: Where the writable partitions' AXI-lite windows start (after the IODMAs; inferred, see the
#: module docstring).
MEM_BASE = IP_BASE + 0x10_0000
#: ZynqMP clock controllers pynq.ps reads (CRL_APB, CRF_APB).
CRL_APB, CRF_APB = 0xFF5E_0000, 0xFD1A_0000
#: Physical base address of the emulated DDR (CMA) window.
DDR_BASE = 0x3000_0000
BITSTREAM_MAGIC = b"FCNSEG-EMULATED-BITSTREAM\n"


# --------------------------------------------------------------------------------------------
# Packing, written from finn's convention: with reverse_inner and reverse_endian (what
# FINNDMAOverlay uses), the innermost (folded) dimension of E values of b bits becomes one
# little-endian word with value i at bits [i*b, (i+1)*b), padded to whole bytes.
# --------------------------------------------------------------------------------------------


def unpack_le(packed: np.ndarray, dtype: str, count: int) -> np.ndarray:
    """Bytes ``(..., nbytes)`` -> int64 values ``(..., count)`` (module docstring's convention)."""
    bits, signed = dtype_bits(dtype)
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    if bits in (8, 16, 32, 64) and packed.shape[-1] * 8 == bits * count:
        kind = "i" if signed else "u"
        flat = packed.view(f"<{kind}{bits // 8}")
        values = flat.astype(np.int64)
    elif count == 1 and packed.shape[-1] in (1, 2, 4, 8):  # one value per word: the word
        values = packed.view(f"<u{packed.shape[-1]}").astype(np.int64) & ((1 << bits) - 1)
        if signed:
            values = values - ((values >> (bits - 1)) & 1) * (np.int64(1) << bits)
    else:
        stream = np.unpackbits(packed, axis=-1, bitorder="little")[..., : bits * count]
        stream = stream.reshape(*packed.shape[:-1], count, bits).astype(np.int64)
        values = stream @ (np.int64(1) << np.arange(bits, dtype=np.int64))
        if signed:
            values = values - ((values >> (bits - 1)) & 1) * (np.int64(1) << bits)
    if dtype == "BIPOLAR":
        values = 2 * values - 1
    return values


def pack_le(values: np.ndarray, dtype: str) -> np.ndarray:
    """Integer values ``(..., E)`` -> bytes ``(..., ceil(E*b/8))``; wraps to ``b`` bits like
    the hardware does (the stream is ``b`` bits wide)."""
    bits, _ = dtype_bits(dtype)
    values = np.asarray(values, dtype=np.int64)
    if dtype == "BIPOLAR":
        values = (values + 1) // 2
    count = values.shape[-1]
    nbytes = -(-count * bits // 8)
    if bits in (8, 16, 32, 64) and nbytes * 8 == bits * count:
        return values.astype(f"<u{bits // 8}").view(np.uint8).reshape(*values.shape[:-1], nbytes)
    unsigned = values & ((np.int64(1) << bits) - 1)
    if count == 1 and nbytes in (1, 2, 4, 8):  # one value per word: the word
        return unsigned.astype(f"<u{nbytes}").view(np.uint8).reshape(*values.shape[:-1], nbytes)
    stream = (unsigned[..., None] >> np.arange(bits, dtype=np.int64)) & 1
    stream = stream.reshape(*values.shape[:-1], count * bits).astype(np.uint8)
    pad = nbytes * 8 - count * bits
    if pad:
        stream = np.concatenate([stream, np.zeros((*stream.shape[:-1], pad), np.uint8)], -1)
    return np.packbits(stream, axis=-1, bitorder="little")


# --------------------------------------------------------------------------------------------
# Accelerator description: shapes as finn's driver step derives them
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Port:
    """One IODMA port of the accelerator, per image (no batch dimension)."""

    dtype: str  #: canonical qonnx name, e.g. "UINT8"
    normal: tuple[int, ...]  #: (H, W, C)
    folded: tuple[int, ...]  #: (H, W, C / fold, fold)
    packed: tuple[int, ...]  #: (H, W, C / fold, bytes per fold)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.packed))

    def to_json(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype,
            "normal": list(self.normal),
            "folded": list(self.folded),
            "packed": list(self.packed),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Port:
        return cls(d["dtype"], tuple(d["normal"]), tuple(d["folded"]), tuple(d["packed"]))


def _port(dtype: str, normal: tuple[int, ...], fold: int) -> Port:
    channels = normal[-1]
    if fold < 1 or channels % fold:
        raise UserError(f"folding {fold} does not divide {channels} channels")
    bits, _ = dtype_bits(dtype)
    folded = (*normal[:-1], channels // fold, fold)
    packed = (*normal[:-1], channels // fold, -(-fold * bits // 8))
    return Port(dtype, tuple(normal), folded, packed)


def ports_of(package: Package) -> tuple[Port, Port]:
    """The (input, output) ports of a package's accelerator.

    Folded shapes follow finn's ``get_driver_shapes``: the input is folded like the first
    layer's input (its ``SIMD``, else ``PE``), the output like the last layer's output (its
    ``PE``, else ``SIMD``); layers without either stream one value per beat.
    """
    iname, oname = package.input["name"], package.output["name"]
    first = next((layer for layer in package.layers if iname in layer.inputs), None)
    last = next((layer for layer in package.layers if oname in layer.outputs), None)
    if first is None or last is None:
        raise UserError(f"{package.path}: no layer reads the input or writes the output")
    ifold = int(first.folding.get("SIMD", first.folding.get("PE", 1)))
    ofold = int(last.folding.get("PE", last.folding.get("SIMD", 1)))
    ishape = tuple(int(v) for v in package.input["shape"][1:])
    oshape = tuple(int(v) for v in package.output["shape"][1:])
    return (
        _port(package.input["dtype"], ishape, ifold),
        _port(package.output["dtype"], oshape, ofold),
    )


def fclk_of(package: Package) -> float:
    """The accelerator clock (MHz) the package was built for (100 MHz if it does not say)."""
    est = package.estimates or {}
    if "clock_mhz" in est:
        return float(est["clock_mhz"])
    if "clock_ns" in est:
        return 1e3 / float(est["clock_ns"])
    return 100.0


def make_settings(package: Package, *, fclk_mhz: float | None = None) -> dict[str, Any]:
    """``driver/settings.json`` as finn-plus 1.6.1's ``MakePYNQDriver`` writes it for a
    single-input, single-output zynq-iodma accelerator without external weights
    (``runtime_weights`` true for a package with a runtime-weights record)."""
    inp, out = ports_of(package)

    def shapes(port: Port) -> tuple[list[int], list[int], list[int]]:
        return [1, *port.normal], [1, *port.folded], [1, *port.packed]

    ishape = shapes(inp)
    oshape = shapes(out)
    io_shape_dict = {
        "idt": [f"DataType['{inp.dtype}']"],
        "idma_names": ["idma0"],
        "ishape_normal": [ishape[0]],
        "ishape_folded": [ishape[1]],
        "ishape_packed": [ishape[2]],
        "odt": [f"DataType['{out.dtype}']"],
        "odma_names": ["odma0"],
        "oshape_normal": [oshape[0]],
        "oshape_folded": [oshape[1]],
        "oshape_packed": [oshape[2]],
        "num_inputs": 1,
        "num_outputs": 1,
        "number_of_external_weights": 0,
        "external_weights_input_shapes": {},
    }
    return {
        "driver_information": {
            "driver_type": "FINNDMAOverlay",
            "io_shape_dict": io_shape_dict,
            "external_weights": False,
            "runtime_weights": "runtime_weights" in package.meta,
            "platform": "zynq-iodma",
            "fclk_mhz": float(fclk_mhz if fclk_mhz is not None else fclk_of(package)),
        },
        "experiment_information": {},
    }


# --------------------------------------------------------------------------------------------
# Bitstream and .hwh stand-ins
# --------------------------------------------------------------------------------------------


def _memory_hwh(memories: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """The MODULE and MEMRANGE entries of the writable partitions' AXI-lite windows."""
    modules = "".join(
        f'    <MODULE FULLNAME="/{m["instance"]}" HWVERSION="1.0" INSTANCE="{m["instance"]}" '
        f'IPTYPE="PERIPHERAL" IS_ENABLE="1" MODCLASS="PERIPHERAL" MODTYPE="{m["instance"]}" '
        f'VLNV="xilinx.com:ip:{m["instance"]}:1.0">\n'
        "      <PARAMETERS/>\n      <PORTS/>\n      <BUSINTERFACES>\n"
        f'        <BUSINTERFACE BUSNAME="ps_to_{m["instance"]}" DATAWIDTH="32" '
        'NAME="s_axilite_0" TYPE="SLAVE" VLNV="xilinx.com:interface:aximm:1.0"/>\n'
        "      </BUSINTERFACES>\n    </MODULE>\n"
        for m in memories
    )
    ranges = "".join(
        f'        <MEMRANGE ADDRESSBLOCK="Reg" BASENAME="C_S_AXILITE_0_BASEADDR" '
        f'BASEVALUE="0x{m["base"]:08X}" HIGHNAME="C_S_AXILITE_0_HIGHADDR" '
        f'HIGHVALUE="0x{m["base"] + m["range"] - 1:08X}" INSTANCE="{m["instance"]}" '
        'IS_DATA="TRUE" IS_INSTRUCTION="TRUE" MASTERBUSINTERFACE="M_AXI_HPM0_FPD" '
        'MEMTYPE="REGISTER" SLAVEBUSINTERFACE="s_axilite_0"/>\n'
        for m in memories
    )
    return modules, ranges


def _hwh(
    ips: Mapping[str, int], fclk_mhz: float, memories: Sequence[Mapping[str, Any]] = ()
) -> str:
    mem_modules, mem_ranges = _memory_hwh(memories)
    modules = mem_modules + "".join(
        f'    <MODULE FULLNAME="/{n}" HWVERSION="1.0" INSTANCE="{n}" IPTYPE="PERIPHERAL" '
        f'IS_ENABLE="1" MODCLASS="PERIPHERAL" MODTYPE="{n}" VLNV="xilinx.com:hls:{n}:1.0">\n'
        "      <PARAMETERS/>\n      <PORTS/>\n      <BUSINTERFACES>\n"
        f'        <BUSINTERFACE BUSNAME="ps_to_{n}" DATAWIDTH="32" NAME="s_axi_control" '
        'TYPE="SLAVE" VLNV="xilinx.com:interface:aximm:1.0"/>\n'
        "      </BUSINTERFACES>\n    </MODULE>\n"
        for n in ips
    )
    params = []
    for i in range(4):
        p = f"PSU__CRL_APB__PL{i}_REF_CTRL__"
        params += [
            (f"PSU__FPGA_PL{i}_ENABLE", "1" if i == 0 else "0"),
            (p + "SRCSEL", "IOPLL"),
            (p + "DIVISOR0", "15"),
            (p + "DIVISOR1", "1"),
            (p + "FREQMHZ", "100"),
            (p + "ACT_FREQMHZ", "99.999001" if i == 0 else "0"),
        ]
    ptxt = "".join(f'        <PARAMETER NAME="{k}" VALUE="{v}"/>\n' for k, v in params)
    mem = (
        "".join(
            f'        <MEMRANGE ADDRESSBLOCK="Reg" BASENAME="C_S_AXI_CONTROL_BASEADDR" '
            f'BASEVALUE="0x{b:08X}" HIGHNAME="C_S_AXI_CONTROL_HIGHADDR" '
            f'HIGHVALUE="0x{b + IP_RANGE - 1:08X}" INSTANCE="{n}" IS_DATA="TRUE" '
            'IS_INSTRUCTION="TRUE" MASTERBUSINTERFACE="M_AXI_HPM0_FPD" MEMTYPE="REGISTER" '
            'SLAVEBUSINTERFACE="s_axi_control"/>\n'
            for n, b in ips.items()
        )
        + mem_ranges
    )
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="no" ?>\n'
        '<EDKSYSTEM EDWVERSION="1.2" TIMESTAMP="emulated" VIVADOVERSION="2024.2">\n'
        '  <SYSTEMINFO ARCH="zynquplus" DEVICE="xczu7ev" NAME="finn_design" '
        'PACKAGE="ffvc1156" SPEEDGRADE="-2"/>\n'
        "  <EXTERNALPORTS/>\n  <EXTERNALINTERFACES/>\n  <MODULES>\n"
        f"{modules}"
        '    <MODULE FULLNAME="/clk_wiz_0" HWVERSION="6.0" INSTANCE="clk_wiz_0" '
        'IPTYPE="PERIPHERAL" IS_ENABLE="1" MODCLASS="PERIPHERAL" MODTYPE="clk_wiz" '
        'VLNV="xilinx.com:ip:clk_wiz:6.0">\n      <PARAMETERS>\n'
        f'        <PARAMETER NAME="CLKOUT1_REQUESTED_OUT_FREQ" VALUE="{fclk_mhz:g}"/>\n'
        f'        <PARAMETER NAME="CLKOUT1_OUT_FREQ" VALUE="{fclk_mhz:.3f}"/>\n'
        "      </PARAMETERS>\n      <PORTS/>\n      <BUSINTERFACES/>\n    </MODULE>\n"
        '    <MODULE FULLNAME="/zynq_ps" HWVERSION="3.5" INSTANCE="zynq_ps" IPTYPE="PERIPHERAL" '
        'IS_ENABLE="1" IS_PL="FALSE" MODTYPE="zynq_ultra_ps_e" '
        'VLNV="xilinx.com:ip:zynq_ultra_ps_e:3.5">\n'
        f"      <PARAMETERS>\n{ptxt}      </PARAMETERS>\n"
        f"      <MEMORYMAP>\n{mem}      </MEMORYMAP>\n"
        "      <PORTS/>\n      <BUSINTERFACES>\n"
        '        <BUSINTERFACE BUSNAME="ps_to_idma0" DATAWIDTH="32" NAME="M_AXI_HPM0_FPD" '
        'TYPE="MASTER" VLNV="xilinx.com:interface:aximm:1.0"/>\n'
        "      </BUSINTERFACES>\n    </MODULE>\n  </MODULES>\n</EDKSYSTEM>\n"
    )


def write_board_files(
    out_dir: str | os.PathLike, package: Package, *, name: str = "finn-accel"
) -> Path:
    """Write ``<name>.bit`` (stand-in) and ``<name>.hwh`` for ``package``; return the .bit."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    inp, outp = ports_of(package)
    ips = {"idma0": IP_BASE, "odma0": IP_BASE + IP_RANGE}
    fclk = fclk_of(package)
    spec = {
        "format": "fcnseg-emulated-bitstream",
        "ips": ips,
        "fclk_mhz": fclk,
        "input": inp.to_json(),
        "output": outp.to_json(),
    }
    memories = memory_map(package)
    if memories:
        spec["memories"] = memories
    bit = out / f"{name}.bit"
    bit.write_bytes(BITSTREAM_MAGIC + json.dumps(spec).encode() + b"\n")
    (out / f"{name}.hwh").write_text(_hwh(ips, fclk, memories))
    return bit


def memory_map(package: Package) -> list[dict[str, Any]]:
    """The writable partitions' AXI-lite windows of a runtime-weights package (module
    docstring; [] without runtime weights): per ``StreamingDataflowPartition_<n>`` its
    ``instance``, ``base`` and ``range`` (bytes, a power of two >= 4 KiB), and its ``layers``:
    each layer's record entry, ``offset`` in the window and ``words``, the initial memory
    contents (the package's ``.dat`` file, as stored: padding and out-of-width bits dropped)."""
    from fcnseg.host.backends.pynq import partition_offsets, read_words
    from fcnseg.hw.runtime_weights import valid_bits

    record = package.meta.get("runtime_weights")
    if not record:
        return []
    offsets = partition_offsets(record)
    parts: dict[int, list[dict[str, Any]]] = {}
    for entry in record["layers"]:
        words = read_words(package.file(entry["file"])) & valid_bits(entry)
        parts.setdefault(int(entry["partition"]), []).append(
            {"entry": dict(entry), "offset": offsets[entry["layer"]], "words": words.tolist()}
        )
    out, base = [], MEM_BASE
    for n in sorted(parts):
        end = max(layer["offset"] + int(layer["entry"]["range_bytes"]) for layer in parts[n])
        size = max(4096, 1 << (end - 1).bit_length())
        base = -(-base // size) * size
        out.append({"instance": f"StreamingDataflowPartition_{n}", "base": base, "range": size,
                    "layers": parts[n]})  # fmt: skip
        base += size
    return out


def emulated_package(package: Package, out_dir: str | os.PathLike) -> Path:
    """A copy of ``package`` with ``bitfile/`` (emulator stand-ins) and ``driver/settings.json``
    added, written with the package writer (so the copy verifies like a Vivado build's)."""
    from fcnseg.host.package import HW_GRAPH_NAME, write_package

    out = Path(out_dir)
    scratch = Path(tempfile.mkdtemp(prefix="fcnseg-emu-"))
    try:
        bit = write_board_files(scratch / "bitfile", package)
        settings = scratch / "settings.json"
        settings.write_text(json.dumps(make_settings(package), indent=2) + "\n")
        graph = package.file(HW_GRAPH_NAME)
        record = package.meta.get("runtime_weights")
        weights = {e["file"]: package.file(e["file"]) for e in (record or {}).get("layers", [])}
        return write_package(
            out,
            model_card=package.model_card,
            io=package.meta["io"],
            layers=list(package.layers),
            estimates=package.estimates,
            board=package.board,
            hw_graph=graph.read_bytes() if graph.is_file() else None,
            extra_files={
                f"bitfile/{bit.name}": bit,
                f"bitfile/{bit.with_suffix('.hwh').name}": bit.with_suffix(".hwh"),
                "driver/settings.json": settings,
                **weights,
            },
            runtime_weights=record,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def bitfile_package(bitfile: str | os.PathLike) -> Package:
    """The package whose ``bitfile/`` folder holds ``bitfile`` (loaded and verified): where an
    emulated board finds the fabric a downloaded bitstream describes. A one-line UserError for
    a bitstream outside a package's ``bitfile/``."""
    from fcnseg.host.package import JSON_NAME, load_package

    path = Path(bitfile).resolve()
    if path.parent.name != "bitfile" or not (path.parent.parent / JSON_NAME).is_file():
        raise UserError(
            f"{bitfile}: the emulated board builds its fabric from the package holding the "
            "bitfile (PACKAGE/bitfile/*.bit), and this one is not in a package's bitfile/"
        )
    return load_package(path.parent.parent)


# --------------------------------------------------------------------------------------------
# Accelerator callbacks
# --------------------------------------------------------------------------------------------


class SimAccelerator:
    """The bit-exact simulator as the fabric (an :data:`Accelerator`), on the package's layers
    or, after :meth:`load_parameters`, on the same layers with the tensors a board's writable
    memories hold (the emulated fabric calls it when they change)."""

    def __init__(self, package: Package) -> None:
        from fcnseg.host.sim.engine import SimEngine

        self.package = package
        self.engine = SimEngine(package)

    def load_parameters(self, params: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Compute from now on with ``params`` (layer name -> array role -> values) in place
        of the package's arrays of those layers (in the package's dtype where they fit it:
        a memory is as wide as its declared type, the package may store narrower values, as
        thresholds clipped to the proven input range; int64 otherwise)."""
        from fcnseg.host.sim.engine import SimEngine

        def stored(values: np.ndarray, like: np.ndarray) -> np.ndarray:
            values = np.asarray(values, dtype=np.int64)
            info = np.iinfo(like.dtype) if like.dtype.kind in "iu" else None
            if (
                info is not None
                and values.size
                and info.min <= values.min() <= values.max() <= info.max
            ):
                return values.astype(like.dtype)
            return values

        layers = tuple(
            dataclasses.replace(
                layer,
                arrays={
                    **layer.arrays,
                    **{
                        role: stored(v, layer.arrays[role])
                        for role, v in params[layer.name].items()
                    },
                },
            )
            if layer.name in params
            else layer
            for layer in self.package.layers
        )
        self.engine = SimEngine(dataclasses.replace(self.package, layers=layers))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.engine.run(x)


def sim_accelerator(package: Package) -> SimAccelerator:
    """The bit-exact simulator on the package's layers (:class:`SimAccelerator`)."""
    return SimAccelerator(package)


class GeneratedAccelerator:
    """The package's generated hardware as the emulated fabric (an :data:`Accelerator`).

    Built once at construction (every node compiled, cached by content under ``cache``), then
    each call runs its tiles one by one through the chain. ``bridge`` computes the nodes the
    available library cannot build: a ``fcnseg.hw.verify.chain.Bridge``, or ``"simulator"`` for
    the package's simulator layers (``fcnseg.hw.verify.bridge.simulator_bridge``); without one
    such a node is a one-line error here, before the board is used. ``stats`` counts tiles and
    seconds; ``bridged`` names the nodes that did not run as generated hardware.
    """

    def __init__(
        self, package: Package, cache: Path | None = None, *, bridge: Any = None, jobs: int = 1
    ) -> None:
        from fcnseg.host.hardware import package_hardware
        from fcnseg.hw.verify.chain import HardwareGraph

        self.graph = HardwareGraph.load(
            package_hardware(package, cache / "hardware" if cache else None)
        )
        self.builds = self.graph.build(cache=cache, jobs=jobs)
        unbuildable = self.graph.unbuildable
        if unbuildable and bridge is None:
            name, why = next(iter(unbuildable.items()))
            raise UserError(
                f"{package.path}: {len(unbuildable)} generated node(s) cannot be built here "
                f"({name}: {why}); pass bridge= to compute them with the simulator"
            )
        if bridge == "simulator":
            from fcnseg.hw.verify.bridge import simulator_bridge

            bridge = simulator_bridge(package, self.graph)
        self.bridge = bridge
        self.bridged = sorted(unbuildable)
        self._out_layout = self.graph.layouts()[self.graph.output]
        self.out_shape = tuple(int(v) for v in package.output["shape"][1:])
        self.stats = {"tiles": 0, "seconds": 0.0}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from fcnseg.hw.verify.tensors import from_finn_layout

        out = np.empty((len(x), *self.out_shape), dtype=np.int64)
        for i, tile in enumerate(np.asarray(x)):
            run = self.graph.run(tile, bridge=self.bridge)
            scores = from_finn_layout(*self._out_layout, run.output(self.graph))
            out[i] = np.asarray(scores, dtype=np.int64).reshape(self.out_shape)
            self.stats["tiles"] += 1
            self.stats["seconds"] += run.seconds
        return out


def generated_accelerator(
    package: Package, cache: Path | None = None, *, bridge: Any = None, jobs: int = 1
) -> GeneratedAccelerator:
    """The package's generated hardware (``hardware.tar.xz``) as the accelerator callback
    (:class:`GeneratedAccelerator`); a one-line UserError when the package has none."""
    return GeneratedAccelerator(package, cache, bridge=bridge, jobs=jobs)


def estimated_fps(package: Package) -> float:
    """The package's estimated accelerator FPS (finn-plus estimate); UserError if it has none."""
    rate = float(package.estimates.get("estimated_fps", 0) or 0)
    if rate <= 0:
        raise UserError(f"{package.path}: no estimated_fps in the package estimates")
    return rate


def standin_accelerator(package: Package, fps: float | None = None) -> Accelerator:
    """Zero scores after ``N / fps`` seconds per call of N tiles (default: the package's
    estimated FPS; ``fps=0``: no sleep, for a device that models the fabric time itself with
    ``EmulatedZynq(fabric_fps=...)``): the fabric's timing without the simulator's CPU cost."""
    rate = estimated_fps(package) if fps is None else float(fps)
    shape = tuple(int(v) for v in package.output["shape"][1:])

    def run(x: np.ndarray) -> np.ndarray:
        if rate > 0:
            time.sleep(len(x) / rate)
        return np.zeros((len(x), *shape), dtype=np.int64)

    return run


def standin_device(package: Package, fps: float | None = None, **kwargs: Any) -> EmulatedZynq:
    """An emulated board whose fabric returns zero scores at the package's estimated timing:
    its interval and latency (:meth:`FabricTiming.of_package`) when the estimates have them,
    else ``N / fps`` per call of N tiles from the DMA start (default: the package's estimated
    FPS); ``fps`` given: that. For measuring whether the host keeps up (``fcnseg bench``
    off-board)."""
    if fps is None and "timing" not in kwargs and "critical_path_cycles" in package.estimates:
        kwargs["timing"] = FabricTiming.of_package(package)
    elif "timing" not in kwargs:
        kwargs["fabric_fps"] = estimated_fps(package) if fps is None else float(fps)
    return EmulatedZynq(standin_accelerator(package, fps=0), **kwargs)


# --------------------------------------------------------------------------------------------
# The fabric's timing model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FabricTiming:
    """The accelerator as a pipeline (the module docstring's model): a tile enters every
    ``interval_s`` at most and leaves ``latency_s`` after it entered, at most ``capacity`` tiles
    inside at once. All zeros: no fabric time (each tile as soon as it is computed)."""

    interval_s: float = 0.0  #: ``II``: seconds between tiles once the pipeline is full
    latency_s: float = 0.0  #: ``L``: seconds from a tile's entry to its exit

    def __post_init__(self) -> None:
        if self.interval_s < 0 or self.latency_s < 0:
            raise UserError(f"fabric interval and latency must be >= 0, got {self}")

    @property
    def capacity(self) -> int:
        """Tiles the pipeline holds: ``ceil(L / II)`` (so a full pipeline streams at ``1 / II``
        without stalling), at least 1; unbounded without an interval."""
        if self.interval_s <= 0:
            return 1 << 62
        return max(1, math.ceil(self.latency_s / self.interval_s - 1e-9))

    @classmethod
    def of_fps(cls, fps: float) -> FabricTiming:
        """``fps`` tiles/s with a latency of one interval: a call of N tiles takes ``N / fps``
        from its start (the older ``fabric_fps`` model)."""
        return cls(1.0 / fps, 1.0 / fps) if fps > 0 else cls()

    @classmethod
    def of_package(cls, package: Package, time_scale: float = 1.0) -> FabricTiming:
        """The package's estimated ``II`` and ``L`` (:func:`fcnseg.hw.info.package_fabric`:
        finn's ``max_cycles``, or the IODMA port's cycles if more, and ``critical_path_cycles``
        at the package's clock), times ``time_scale`` (< 1: faster, for tests)."""
        from fcnseg.hw.info import package_fabric

        fabric = package_fabric(package)
        if fabric is None:
            raise UserError(
                f"{package.path}: the package estimates have no max_cycles, "
                "critical_path_cycles and clock_ns: no fabric timing to emulate"
            )
        return cls(fabric.interval_s * time_scale, fabric.latency_s * time_scale)


@dataclass
class FabricTile:
    """One tile's passage through the emulated fabric (``time.perf_counter()`` seconds)."""

    job: int  #: the input DMA job (0, 1, ... in start order) it came from
    index: int  #: its place in that job
    entered: float  #: the input DMA handed it to the pipeline
    left: float | None = None  #: it left the pipeline into the output DMA (None: inside)
    out_job: int | None = None  #: the output DMA job it went to
    ready: float | None = field(default=None, repr=False)  #: scores computed
    result: np.ndarray | None = field(default=None, repr=False)  #: packed scores to write


@dataclass
class _DmaJob:
    """A started IODMA: ``n`` tiles at ``addr``; ``k`` of them moved so far."""

    name: str
    addr: int
    n: int
    started: float
    number: int = 0
    k: int = 0
    done_at: float | None = None  #: input DMA: its last tile fully read


def busy_fraction(
    tiles: Sequence[FabricTile], interval_s: float, start: float | None = None,
    end: float | None = None,
) -> float:  # fmt: skip
    """The share of ``[start, end]`` covered by the tiles' input intervals ``[entered, entered
    + interval_s)`` (their union): how busy the fabric's input was. Defaults: the first entry
    and the last exit (or entry + interval)."""
    if not tiles:
        return 0.0
    entries = sorted(t.entered for t in tiles)
    if start is None:
        start = entries[0]
    if end is None:
        end = max(max(t.left or t.entered for t in tiles), entries[-1] + interval_s)
    if end <= start:
        return 0.0
    busy, reach = 0.0, start
    for e in entries:
        lo, hi = max(e, reach), min(e + interval_s, end)
        if hi > lo:
            busy += hi - lo
            reach = hi
    return busy / (end - start)


# --------------------------------------------------------------------------------------------
# The device
# --------------------------------------------------------------------------------------------


class _Registers(np.ndarray):
    """uint32 register words whose element writes call ``_hook(word_index)`` and whose element
    reads return ``_read(word_index)`` (index into the whole register file); ``_count_reads``,
    if set, is told how many words each read (element or slice) returns."""

    _hook: Callable[[int], None] | None = None
    _read: Callable[[int], np.uint32] | None = None
    _count_reads: Callable[[int], None] | None = None
    _word0 = 0

    def __array_finalize__(self, obj: Any) -> None:
        self._hook = getattr(obj, "_hook", None)
        self._read = getattr(obj, "_read", None)
        self._count_reads = getattr(obj, "_count_reads", None)
        self._word0 = getattr(obj, "_word0", 0)

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        if self._hook is not None and isinstance(key, (int, np.integer)):
            self._hook(self._word0 + int(key))

    def __getitem__(self, key: Any) -> Any:
        if self._read is not None and isinstance(key, (int, np.integer)):
            return self._read(self._word0 + int(key))
        out = super().__getitem__(key)
        if self._count_reads is not None:
            self._count_reads(int(np.size(out)))
        return out


@dataclass
class _Region:
    """One writable layer's words inside a partition's window."""

    start: int  #: its first word in the window
    entry: dict[str, Any]  #: its record entry (layout, dtype, layer name)
    mask: np.ndarray  #: per word, the bits the memory stores (0: a padding word)
    latch: dict[int, int] = field(default_factory=dict)  #: memstream: words of a line so far

    @property
    def words(self) -> int:
        return len(self.mask)


class _Memory:
    """A writable partition's AXI-lite window (module docstring): the layers' memories behind
    the register file ``regs``, whose raw words always read what the memories hold."""

    def __init__(self, spec: Mapping[str, Any], regs: _Registers) -> None:
        from fcnseg.hw.runtime_weights import valid_bits

        self.instance = str(spec["instance"])
        self.regs = regs
        self.generation = 0  #: counts stored changes (the fabric compares it)
        raw = regs.view(np.ndarray)
        raw[:] = 0
        self.regions: list[_Region] = []
        for layer in sorted(spec["layers"], key=lambda item: item["offset"]):
            entry = dict(layer["entry"])
            region = _Region(int(layer["offset"]) // 4, entry, valid_bits(entry))
            words = np.asarray(layer["words"], dtype=np.uint32)
            raw[region.start : region.start + region.words] = words & region.mask
            self.regions.append(region)
        self.shadow = raw.copy()  #: what the memories hold (raw is restored to it on write)

    def region_of(self, word: int) -> _Region | None:
        for region in self.regions:
            if region.start <= word < region.start + region.words:
                return region
        return None

    def write(self, word: int, value: int, faults: list[str]) -> None:
        """Store one 32-bit write at word ``word`` of the window as the memory does."""
        region = self.region_of(word)
        where = f"{self.instance} +0x{4 * word:X}"
        if region is None:
            faults.append(f"{where}: write 0x{value:08X} outside every writable layer's memory")
            return
        local, entry = word - region.start, region.entry
        mask = int(region.mask[local])
        if value & ~mask:
            faults.append(
                f"{where}: layer {entry['layer']} word {local}: 0x{value:08X} has bits outside "
                f"its memory's 0x{mask:08X}"
            )
            value &= mask
        if not mask:
            return  # a padding word: no memory behind it
        per_line = int(entry["words_per_line"])
        if per_line > 1:
            used = -(-int(entry["line_bits"]) // 32)
            j = local % per_line
            if j < used - 1:
                region.latch[j] = value  # latched until the line's last word arrives
                return
            line = word - j
            new = [region.latch.get(i, 0) for i in range(used - 1)] + [value]
            if any(int(self.shadow[line + i]) != v for i, v in enumerate(new)):
                self.shadow[line : line + used] = new
                self.generation += 1
            return
        if int(self.shadow[word]) != value:
            self.shadow[word] = value
            self.generation += 1

    def tensors(self) -> dict[str, dict[str, np.ndarray]]:
        """The layers' parameters as the memories hold them (layer name -> role -> values)."""
        from fcnseg.hw.runtime_weights import decode_layer

        out = {}
        for region in self.regions:
            role = "weights" if region.entry["kind"] == "MVAU" else "thresholds"
            words = self.shadow[region.start : region.start + region.words]
            out[region.entry["layer"]] = {role: decode_layer(words, region.entry)}
        return out


class EmulatedZynq(Device):
    """A Zynq UltraScale+ with IODMA accelerators, emulated (see the module docstring).

    >>> with EmulatedZynq(sim_accelerator(pkg)) as dev:      # doctest: +SKIP
    ...     engine = open_engine(pkg)                          # the real pynq/finn code runs
    """

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        *,
        ddr_bytes: int = 64 << 20,
        fabric_fps: float | None = None,
        timing: FabricTiming | None = None,
        tag: str = "emulated_zynqmp0",
        make_accelerator: Callable[[Package], Accelerator] | None = None,
    ) -> None:
        super().__init__(tag)
        self.name = "emulated-zynqmp"
        self.arch = "aarch64"
        self.capabilities = {"MEMORY_MAPPED": True}
        self.accelerator = accelerator
        #: builds the accelerator at download from the bitfile's package if none was given
        self.make_accelerator = make_accelerator
        self.stall = False  #: started transfers never complete (a hung accelerator)
        if fabric_fps and timing is not None:
            raise UserError("give the emulated fabric fabric_fps or timing, not both")
        #: the fabric's pipeline (module docstring): ``timing``, or ``fabric_fps`` tiles/s with
        #: one interval of latency (a call of N tiles takes N / fabric_fps), or no fabric time
        self.timing = timing or (FabricTiming.of_fps(fabric_fps) if fabric_fps else FabricTiming())
        self.fabric_fps = 1.0 / self.timing.interval_s if self.timing.interval_s else None
        self.timestamp = ""
        self.bitfile_name = None
        self.ddr = np.zeros(ddr_bytes, dtype=np.uint8)
        self._free = [(0, ddr_bytes)]  # sorted (offset, size) holes
        self._bos: dict[int, tuple[int, int, np.ndarray]] = {}  # bo -> (offset, size, host)
        self._next_bo = 1
        self._lock = threading.RLock()  # DDR and the allocator
        self.stats = {
            "flush": 0, "invalidate": 0, "jobs": 0, "tiles": 0, "weight_writes": 0,
            "weight_reads": 0,
        }  # fmt: skip
        self.faults: list[str] = []
        self._regs: dict[int, _Registers] = {}  # base -> register file
        self._names: dict[int, str] = {}
        self._memories: dict[int, _Memory] = {}  # base -> writable partition window
        #: ``(instance, byte offset)`` of memory writes a broken register file loses
        self.drop_writes: set[tuple[str, int]] = set()
        #: the parameters the fabric computes with now (None: no writable memories)
        self._params: dict[str, dict[str, np.ndarray]] | None = None
        self._params_generation = 0
        self._loaded_params: Any = None  # what the compute thread last gave the accelerator
        self._ports: tuple[Port, Port] | None = None
        # the fabric: DMA jobs, the tiles in entry order, the threads (all under _cv)
        self._cv = threading.Condition()
        self._in: _DmaJob | None = None
        self._out: _DmaJob | None = None
        self._job_count = {"_in": 0, "_out": 0}
        self._tiles: list[FabricTile] = []
        self._head = 0  # the oldest tile still inside
        self._last_entry = self._last_leave = -math.inf
        self._hung = False
        self._closing = False
        self._compute: queue.Queue = queue.Queue()
        self._fabric_thread: threading.Thread | None = None
        self._compute_thread: threading.Thread | None = None
        self._clock_regs = {CRL_APB: np.zeros(0x40, np.uint32), CRF_APB: np.zeros(0x40, np.uint32)}
        self._seed_clocks()
        self._saved: tuple[Any, ...] | None = None

    # --- installation -------------------------------------------------------------------------

    def __enter__(self) -> EmulatedZynq:
        from pynq.ps import Clocks

        had = "_active_device" in Device.__dict__
        self._saved = (had, Device.__dict__.get("_active_device"), Clocks.device)
        Device.active_device = self
        Clocks.set_device(self)
        if "_real_instance" in Clocks.__dict__:  # cached for whatever device came first
            delattr(Clocks, "_real_instance")
        return self

    def __exit__(self, *exc: Any) -> None:
        from pynq.ps import Clocks

        self.close_worker()
        if self._saved is not None:
            had, old, clocks_device = self._saved
            if had:
                Device.active_device = old
            elif "_active_device" in Device.__dict__:
                delattr(Device, "_active_device")
            Clocks.device = clocks_device
            if "_real_instance" in Clocks.__dict__:
                delattr(Clocks, "_real_instance")
            self._saved = None

    def close_worker(self) -> None:
        """Stop the fabric and compute threads (started again by the next DMA start)."""
        with self._cv:
            threads = (self._fabric_thread, self._compute_thread)
            self._fabric_thread = self._compute_thread = None
            self._closing = True
            self._cv.notify_all()
        if threads[0] is not None:
            self._compute.put(None)
            for t in threads:
                t.join(timeout=5)

    # --- clocks --------------------------------------------------------------------------------

    def _seed_clocks(self) -> None:
        """IOPLL = 33.333 MHz * 45, PL0..3 = IOPLL / 15 / 1 (CLKACT set): what a ZU+ boots with."""
        crl = self._clock_regs[CRL_APB]
        crl[0x20 // 4] = 45 << 8  # IOPLL_CTRL: FBDIV 45, DIV2 0, PRE_SRC 0
        crl[0x30 // 4] = 45 << 8  # RPLL_CTRL
        for i in range(4):  # PLi_REF_CTRL: CLKACT | DIVISOR1 1 | DIVISOR0 15 | SRCSEL IOPLL
            crl[(0xC0 + 4 * i) // 4] = (1 << 24) | (1 << 16) | (15 << 8)
        crf = self._clock_regs[CRF_APB]
        crf[0x20 // 4] = crf[0x2C // 4] = crf[0x38 // 4] = 72 << 8  # APLL/DPLL/VPLL 2400 MHz
        crf[0x60 // 4] = 2 << 8  # ACPU_CTRL: APLL / 2

    # --- pynq Device API -------------------------------------------------------------------------

    def get_bitfile_metadata(self, bitfile_name: str) -> Any:
        from pynqmetadata.frontends import Metadata
        from pynqmetadata.views.runtime import RuntimeMetadataParser

        hwh = Path(bitfile_name).with_suffix(".hwh")
        if not hwh.is_file():
            raise RuntimeError(f"emulated device: no metadata {hwh} next to the bitstream")
        parser = RuntimeMetadataParser(Metadata(input=hwh))
        parser.refresh_hierarchy_dict()
        return parser

    def download(self, bitstream: Any, parser: Any = None) -> None:
        """'Program' the fabric: read the stand-in's port description, reset the IODMAs."""
        data = Path(bitstream.bitfile_name).read_bytes()
        if not data.startswith(BITSTREAM_MAGIC):
            raise RuntimeError(f"{bitstream.bitfile_name}: not an emulated-board bitstream")
        spec = json.loads(data[len(BITSTREAM_MAGIC) :])
        if self.accelerator is None and self.make_accelerator is not None:
            self.accelerator = self.make_accelerator(bitfile_package(bitstream.bitfile_name))
        with self._cv:
            self._ports = (Port.from_json(spec["input"]), Port.from_json(spec["output"]))
            self._in = self._out = None  # reprogramming resets the IODMAs and the pipeline
            self._tiles.clear()
            self._head = 0
            self._hung = False
            # one register file per address, kept across downloads: overlays loaded earlier
            # map the same (physical) registers, as on the board
            old, old_names = self._regs, self._names
            self._regs, self._names = {}, {}
            for name, base in spec["ips"].items():
                regs = old.get(int(base))
                if regs is None or old_names.get(int(base)) != name:
                    regs = np.zeros(IP_RANGE // 4, dtype=np.uint32).view(_Registers)
                    regs._hook = self._register_hook(name, regs)
                    regs._read = self._register_read(regs)
                raw = regs.view(np.ndarray)
                raw[:] = 0
                raw[CTRL // 4] = AP_IDLE
                self._regs[int(base)] = regs
                self._names[int(base)] = name
            # programming loads the memories with the bitstream's words
            self._memories = {}
            for spec_mem in spec.get("memories", []):
                regs = np.zeros(int(spec_mem["range"]) // 4, dtype=np.uint32).view(_Registers)
                memory = _Memory(spec_mem, regs)
                regs._hook = self._memory_hook(memory)
                regs._count_reads = self._count_weight_reads
                self._regs[int(spec_mem["base"])] = regs
                self._names[int(spec_mem["base"])] = memory.instance
                self._memories[int(spec_mem["base"])] = memory
            self._params = self._memory_tensors() if self._memories else None
            self._params_generation = self._memory_generation()
            self._loaded_params = None
        self.post_download(bitstream, parser)

    def mmap(self, base_addr: int, length: int) -> np.ndarray:
        for base, regs in self._clock_regs.items():
            if base <= base_addr and base_addr + length <= base + regs.nbytes:
                off = (base_addr - base) // 4
                return regs[off : off + length // 4]
        for base, regs in self._regs.items():
            if base <= base_addr and base_addr + length <= base + regs.nbytes:
                off = (base_addr - base) // 4
                view = np.ndarray.__getitem__(regs, slice(off, off + length // 4))  # not a read
                view._word0 = off
                return view
        raise MemoryError(f"emulated device: nothing mapped at 0x{base_addr:X} (+{length})")

    def allocate(self, shape: Any, dtype: Any, cacheable: bool = True, **kwargs: Any) -> Any:
        """A ``PynqBuffer`` in the emulated CMA (``cacheable``: host copy + flush/invalidate)."""
        from pynq.buffer import PynqBuffer

        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        with self._lock:
            offset = self._take(max(nbytes, 1))
            bo = self._next_bo
            self._next_bo += 1
            if cacheable:
                host = np.zeros(nbytes, dtype=np.uint8)
            else:
                host = self.ddr[offset : offset + nbytes]
            self._bos[bo] = (offset, nbytes, host)
        buf = PynqBuffer(
            shape,
            dtype,
            buffer=host,
            device=self,
            device_address=DDR_BASE + offset,
            bo=bo,
            coherent=not cacheable,
        )
        weakref.finalize(buf, self._release, bo)
        return buf

    def flush(self, bo: int, offset: int, ptr: int, size: int) -> None:
        start, _, host = self._bos[bo]
        self.ddr[start + offset : start + offset + size] = host[offset : offset + size]
        self.stats["flush"] += 1

    def invalidate(self, bo: int, offset: int, ptr: int, size: int) -> None:
        start, _, host = self._bos[bo]
        host[offset : offset + size] = self.ddr[start + offset : start + offset + size]
        self.stats["invalidate"] += 1

    # --- contiguous-memory allocator -------------------------------------------------------------

    def _take(self, nbytes: int) -> int:
        size = -(-nbytes // 4096) * 4096
        for i, (off, hole) in enumerate(self._free):
            if hole >= size:
                self._free[i] = (off + size, hole - size)
                return off
        free = sum(h for _, h in self._free)
        raise RuntimeError(
            f"emulated CMA: cannot allocate {nbytes} contiguous bytes "
            f"({free} free of {self.ddr.nbytes})"
        )

    def _release(self, bo: int) -> None:
        with self._lock:
            off, nbytes, _ = self._bos.pop(bo)
            self._free.append((off, -(-max(nbytes, 1) // 4096) * 4096))
            self._free.sort()
            merged: list[tuple[int, int]] = []
            for o, s in self._free:
                if merged and merged[-1][0] + merged[-1][1] == o:
                    merged[-1] = (merged[-1][0], merged[-1][1] + s)
                elif s:
                    merged.append((o, s))
            self._free = merged

    @property
    def free_bytes(self) -> int:
        return sum(h for _, h in self._free)

    # --- the IODMAs and the fabric pipeline ------------------------------------------------------

    def _register_hook(self, name: str, regs: _Registers) -> Callable[[int], None]:
        def hook(word: int) -> None:
            raw = regs.view(np.ndarray)
            if word != CTRL // 4 or not int(raw[word]) & AP_START:
                return
            job = _DmaJob(
                name=name,
                addr=int(raw[ADDR_LO // 4]) | (int(raw[ADDR_HI // 4]) << 32),
                n=int(raw[BATCH // 4]),
                started=time.perf_counter(),
            )
            with self._cv:
                slot = "_in" if name.startswith("idma") else "_out"
                if getattr(self, slot) is not None:
                    # ap_ctrl_hs samples ap_start only when idle: a start while running is lost
                    self.faults.append(f"{name} started while running (start ignored)")
                    return
                raw[CTRL // 4] = AP_START  # running: not idle, not done
                job.number = self._job_count[slot]
                self._job_count[slot] += 1
                setattr(self, slot, job)
                self._ensure_threads()
                self._cv.notify_all()

        return hook

    def _register_read(self, regs: _Registers) -> Callable[[int], np.uint32]:
        def read(word: int) -> np.uint32:
            raw = regs.view(np.ndarray)
            with self._cv:  # atomic with the fabric raising ap_done
                value = np.uint32(raw[word])
                if word == CTRL // 4:
                    raw[word] = value & ~np.uint32(AP_DONE)  # ap_done is clear-on-read
            return value

        return read

    def _memory_hook(self, memory: _Memory) -> Callable[[int], None]:
        def hook(word: int) -> None:
            raw = memory.regs.view(np.ndarray)
            with self._cv:
                self.stats["weight_writes"] += 1
                value = int(raw[word])
                raw[word] = memory.shadow[word]  # reads return what the memory holds
                if (memory.instance, 4 * word) in self.drop_writes:
                    return
                memory.write(word, value, self.faults)
                raw[word] = memory.shadow[word]
                region = memory.region_of(word)
                if region is not None and int(region.entry["words_per_line"]) > 1:
                    line = word - (word - region.start) % int(region.entry["words_per_line"])
                    end = line + int(region.entry["words_per_line"])
                    raw[line:end] = memory.shadow[line:end]

        return hook

    def _count_weight_reads(self, words: int) -> None:
        with self._cv:
            self.stats["weight_reads"] += words

    def _memory_generation(self) -> int:
        return sum(memory.generation for memory in self._memories.values())

    def _memory_tensors(self) -> dict[str, dict[str, np.ndarray]]:
        out: dict[str, dict[str, np.ndarray]] = {}
        for memory in self._memories.values():
            out.update(memory.tensors())
        return out

    def _tile_parameters(self) -> dict[str, dict[str, np.ndarray]] | None:
        """The parameters a tile entering now computes with (under ``_cv``): the ones loaded
        before the memories last changed (the stale prefetch: module docstring), after which
        the fabric holds the memories' current contents for the next tile."""
        params = self._params
        generation = self._memory_generation()
        if self._memories and generation != self._params_generation:
            self._params = self._memory_tensors()
            self._params_generation = generation
        return params

    def _ensure_threads(self) -> None:
        """Start the fabric and compute threads on the first DMA start (called under ``_cv``)."""
        if self._fabric_thread is None:
            self._closing = False
            self._fabric_thread = threading.Thread(
                target=self._fabric_loop, name="emulated-fabric", daemon=True
            )
            self._compute_thread = threading.Thread(
                target=self._compute_loop, name="emulated-compute", daemon=True
            )
            self._fabric_thread.start()
            self._compute_thread.start()

    def _span(self, addr: int, nbytes: int) -> slice:
        off = addr - DDR_BASE
        for start, size, _ in self._bos.values():
            if start <= off and off + nbytes <= start + size:
                return slice(off, off + nbytes)
        raise MemoryError(f"DMA to 0x{addr:X} (+{nbytes}) outside any allocated buffer")

    def _fabric_loop(self) -> None:
        """Advance the pipeline model in real time: process every event that is due, then sleep
        until the next one (or until a register write or a computed tile wakes the loop)."""
        with self._cv:
            while not self._closing:
                now = time.perf_counter()
                try:
                    wake = self._advance(now)
                except Exception as e:  # a fault hangs the DMAs, like a bus error on the board
                    self.faults.append(f"{type(e).__name__}: {e}")
                    self._hung = True
                    wake = None
                if wake is None:
                    self._cv.wait()
                elif wake > now:
                    self._cv.wait(wake - now)

    def _advance(self, now: float) -> float | None:
        """Process the events due by ``now`` (module docstring's timing model); return the time
        of the next event, None if the next one waits for the host or the compute thread."""
        timing = self.timing
        while True:
            if self.stall or self._hung:
                return None
            upcoming: list[float] = []
            progressed = self._advance_input(now, timing, upcoming)
            progressed |= self._advance_output(now, timing, upcoming)
            if not progressed:
                return min(upcoming) if upcoming else None

    def _advance_input(self, now: float, timing: FabricTiming, upcoming: list[float]) -> bool:
        job = self._in
        if job is None:
            return False
        if job.k < job.n:
            g = len(self._tiles)
            entry = max(job.started, self._last_entry + timing.interval_s)
            if g >= timing.capacity:
                blocker = self._tiles[g - timing.capacity]
                if blocker.left is None:
                    return False  # the pipeline is full: the next tile waits for one to leave
                entry = max(entry, blocker.left)
            if entry > now:
                upcoming.append(entry)
                return False
            self._enter(job, entry)
            if job.k == job.n:
                job.done_at = entry + timing.interval_s
            return True
        if job.done_at is None:  # a job of no tiles
            job.done_at = job.started
        if job.done_at > now:
            upcoming.append(job.done_at)
            return False
        self._raise_done("idma")
        self._in = None
        return True

    def _enter(self, job: _DmaJob, entry: float) -> None:
        """Tile ``job.k`` of the input DMA enters the pipeline: its input is read from DDR now
        (so it must have been flushed before the DMA started) and handed to the compute thread."""
        assert self._ports is not None
        inp = self._ports[0]
        with self._lock:
            packed = self.ddr[self._span(job.addr + job.k * inp.nbytes, inp.nbytes)].copy()
        tile = FabricTile(job=job.number, index=job.k, entered=entry)
        self._tiles.append(tile)
        self._compute.put((tile, packed, self._tile_parameters()))
        self._last_entry = entry
        job.k += 1

    def _advance_output(self, now: float, timing: FabricTiming, upcoming: list[float]) -> bool:
        job = self._out
        if job is None:
            return False
        if job.k == job.n:  # a job of no tiles
            self._finish_output()
            return True
        if self._head >= len(self._tiles):
            return False  # no tile in the pipeline: waits for the input DMA
        tile = self._tiles[self._head]
        leave = max(tile.entered + timing.latency_s, self._last_leave + timing.interval_s,
                    job.started)  # fmt: skip
        if leave > now:
            upcoming.append(leave)
            return False
        if tile.ready is None:
            return False  # still computing: the compute thread wakes the loop
        assert self._ports is not None
        out = self._ports[1]
        with self._lock:
            self.ddr[self._span(job.addr + job.k * out.nbytes, out.nbytes)] = tile.result
            self.stats["tiles"] += 1
        tile.result = None
        tile.left = max(leave, tile.ready)
        tile.out_job = job.number
        self._last_leave = tile.left
        self._head += 1
        job.k += 1
        if job.k == job.n:
            self._finish_output()
        return True

    def _finish_output(self) -> None:
        self.stats["jobs"] += 1
        self._raise_done("odma")
        self._out = None

    def _raise_done(self, kind: str) -> None:
        for base, name in self._names.items():
            if name.startswith(kind):
                self._regs[base].view(np.ndarray)[CTRL // 4] = AP_DONE | AP_IDLE

    def _compute_loop(self) -> None:
        """The accelerator's arithmetic, one tile at a time in entry order, beside the timing
        model: a tile cannot leave before its scores are computed (a slow accelerator callback
        stretches the timeline, it never reorders it)."""
        while (work := self._compute.get()) is not None:
            tile, packed, params = work
            try:
                load = getattr(self.accelerator, "load_parameters", None)
                if params is not None and params is not self._loaded_params and load:
                    load(params)
                    self._loaded_params = params
                tile.result = self._compute_tile(packed)
            except Exception as e:  # a fault hangs the DMA, like a bus error on the board
                with self._cv:
                    self.faults.append(f"{type(e).__name__}: {e}")
                    self._hung = True
                continue
            with self._cv:
                tile.ready = time.perf_counter()
                self._cv.notify_all()

    def _compute_tile(self, packed: np.ndarray) -> np.ndarray:
        assert self._ports is not None and self.accelerator is not None
        inp, out = self._ports
        x = unpack_le(packed.reshape(1, *inp.packed), inp.dtype, inp.folded[-1])
        scores = np.asarray(self.accelerator(x.reshape(1, *inp.normal).astype(np.uint8)))
        if scores.shape != (1, *out.normal):
            raise RuntimeError(f"accelerator gave {scores.shape}, expected {(1, *out.normal)}")
        return pack_le(scores.reshape(1, *out.folded), out.dtype).reshape(-1)

    # --- the recorded timeline -------------------------------------------------------------------

    def fabric_timeline(self) -> list[FabricTile]:
        """Every tile through the fabric so far, in entry order (copies: entered / left are
        ``time.perf_counter()`` seconds, ``left`` None while inside)."""
        with self._cv:
            return [dataclasses.replace(t, result=None) for t in self._tiles]

    def busy_fraction(self, start: float | None = None, end: float | None = None) -> float:
        """The share of ``[start, end]`` during which the pipeline's input accepted tiles: each
        tile occupies it for one interval from its entry (:func:`busy_fraction`). Defaults:
        the first tile's entry and the last tile's exit."""
        return busy_fraction(self.fabric_timeline(), self.timing.interval_s, start, end)

    def clear_timeline(self) -> None:
        """Forget the tiles that have left (the pipeline must be empty: between runs)."""
        with self._cv:
            if self._head != len(self._tiles):
                raise RuntimeError("tiles still in the fabric: clear the timeline between runs")
            self._tiles.clear()
            self._head = 0


@contextlib.contextmanager
def standin_segmenter(
    package: Package, fps: float | None = None, **segmenter: Any
) -> Iterator[Any]:
    """A ``Segmenter`` on the ``pynq`` backend over an emulated board whose fabric takes the
    package's estimated FPS (:func:`standin_device`): the host's own throughput off-board, with
    the fabric's estimated rate standing in for the fabric. Scores are zeros; the timing is the
    point."""
    from fcnseg.host.backends.pynq import open_engine
    from fcnseg.host.segmenter import Segmenter

    scratch = Path(tempfile.mkdtemp(prefix="fcnseg-standin-"))
    try:
        from fcnseg.host.package import load_package

        board = load_package(emulated_package(package, scratch / "package"))
        with standin_device(package, fps, ddr_bytes=256 << 20):
            engine = open_engine(board)
            seg = Segmenter(
                engine, board.geometry, board.output_scale, board.output_bias,
                classes=list(board.card.classes), **segmenter,
            )  # fmt: skip
            seg.package = board
            yield seg
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
