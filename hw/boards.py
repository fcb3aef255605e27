"""Board presets as data: FPGA part, default clock, resource budgets, DMA port width.

A preset is everything the flow needs to know about a board; the rest of ``fcnseg.hw`` never
branches on a board's name. Budgets are the device totals from the Xilinx data sheets (DS190 for
Zynq-7000, DS891 for Zynq UltraScale+); BRAM is counted in 18 Kb halves because finn's estimates
report ``BRAM_18K``. ``finn_board`` is the name finn-plus's ``pynq_part_map`` and driver use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from fcnseg.errors import UserError

#: resources compared against a budget, in finn's report names.
RESOURCES = ("LUT", "BRAM_18K", "URAM", "DSP")


@dataclass(frozen=True)
class Board:
    """One board preset (all fields plain data; serialised into reports and packages)."""

    name: str
    finn_board: str
    part: str
    clock_ns: float
    lut: int
    ff: int
    bram18: int
    uram: int
    dsp: int
    dma_port_width: int
    platform: str = "zynq-iodma"
    #: tiles/s that ``fcnseg compile`` aims at when given neither --target-fps nor --folding.
    default_target_fps: int = 60
    #: folder under finn's ``FINN_DEPS/board_files`` that Vivado's board project needs (fetched
    #: by ``finn deps update``); None for boards whose files ship with Vivado (ZCU104).
    board_files: str | None = None

    def budget(self) -> dict[str, int]:
        """Resource budget keyed like finn's ``estimate_layer_resources.json``."""
        return {"LUT": self.lut, "BRAM_18K": self.bram18, "URAM": self.uram, "DSP": self.dsp}

    def to_json(self) -> dict:
        return asdict(self)


BOARDS: dict[str, Board] = {
    "pynq-z2": Board(
        name="pynq-z2",
        finn_board="Pynq-Z2",
        part="xc7z020clg400-1",
        clock_ns=10.0,
        lut=53_200,
        ff=106_400,
        bram18=280,
        uram=0,
        dsp=220,
        dma_port_width=64,
        default_target_fps=60,
        board_files="pynq-z2",
    ),
    "zcu104": Board(
        name="zcu104",
        finn_board="ZCU104",
        part="xczu7ev-ffvc1156-2-e",
        clock_ns=10.0,
        lut=230_400,
        ff=460_800,
        bram18=624,
        uram=96,
        dsp=1_728,
        dma_port_width=128,
        default_target_fps=300,
    ),
    "kv260": Board(
        name="kv260",
        finn_board="KV260_SOM",
        part="xck26-sfvc784-2LV-c",
        clock_ns=10.0,
        lut=117_120,
        ff=234_240,
        bram18=288,
        uram=64,
        dsp=1_248,
        dma_port_width=128,
        default_target_fps=150,
        board_files="kv260_som",
    ),
}


def board_list() -> str:
    """The presets as one line: ``pynq-z2 (xc7z020clg400-1), zcu104 (...), ...``."""
    return ", ".join(f"{b.name} ({b.part})" for b in BOARDS.values())


def get_board(name: str) -> Board:
    """The preset called ``name`` (case-insensitive; ``Pynq-Z2``/``pynq_z2`` too, finn's and
    PYNQ's spellings), or a one-line :class:`UserError` listing the boards."""
    key = name.strip().lower().replace("_", "-")
    by_finn_name = {b.finn_board.lower().replace("_", "-"): b for b in BOARDS.values()}
    board = BOARDS.get(key) or by_finn_name.get(key)
    if board is None:
        raise UserError(f"unknown board {name!r}; choose one of {board_list()}")
    return board
