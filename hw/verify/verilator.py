"""finn-plus's RTL simulation on Verilator: the five ``finn.xsi`` functions, one adaptation.

finn-plus 1.6.1 simulates RTL through Vivado's XSI (``finn_xsi``), which this machine lacks.
Its custom ops look the simulator functions up in ``finn.xsi`` *at call time*
(``finnxsi.compile_sim_obj`` in ``RTLBackend.prepare_rtlsim``; ``load_sim_obj``,
``reset_rtlsim``, ``rtlsim_multi_io``, ``close_rtlsim`` in ``HWCustomOp``), so binding those five
names on ``finn.xsi`` lets finn's own ``execute_node(exec_mode="rtlsim")`` run unchanged on
Verilator (:mod:`.verilator_build`). Measured against finn-plus 1.6.1; keep in sync with
``finn_xsi/adapter.py`` when the version changes. What each function keeps of finn's contract:

- ``compile_sim_obj(top, sources, sim_out_dir, debug, behav)`` returns
  ``(sim_out_dir, xsim.dir/<top>/verilator.json)``: ``HWCustomOp.get_rtlsim`` insists on a path
  containing ``xsim.dir``. That file points at the cached build. ``debug`` (waveform tracing)
  is not supported and ignored; ``fifosim`` (finn's stitched-FIFO simulation) is refused.
- ``load_sim_obj`` returns a :class:`VerilatorSim`; ``reset_rtlsim`` arms a reset;
  ``rtlsim_multi_io`` runs one pass (reset, stream in, collect ``num_out_values`` words per
  output) and returns its clock cycles, filling ``io_dict["outputs"]`` with the words as Python
  integers, as XSI does; ``close_rtlsim`` closes.
- A pass always starts from reset (one process per pass keeps no state). finn resets before
  every pass; a second pass without a reset in between is refused instead of silently
  restarting the design.
- A stall (no output word for ``liveness_threshold`` cycles) raises finn's own timeout error.

:func:`install` binds the five names (idempotent; :func:`uninstall` restores what was there),
:func:`installed` does both around a block. ``finn.xsi`` is imported only there.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from fcnseg.atomic import atomic_write_text
from fcnseg.errors import UserError
from fcnseg.hw.verify.verilator_build import Design, Stream, build_design, run_pass

FINN_XSI_NAMES = (
    "compile_sim_obj",
    "load_sim_obj",
    "reset_rtlsim",
    "close_rtlsim",
    "rtlsim_multi_io",
)
DESCRIPTOR = "verilator.json"

#: where builds go while installed (None: ``default_cache()``); set by :func:`install`.
_cache: Path | None = None
#: names finn.xsi held before :func:`install` (restored by :func:`uninstall`); None: not installed
_saved: dict[str, Any] | None = None


class VerilatorSim:
    """One loaded design, as finn's ``SimEngine`` handle: reset, pass, close.

    ``run_dir`` is the working folder of its passes: relative file names in the design
    (``$readmemh("./<node>_threshs_0_0.dat")`` of Thresholding_rtl) resolve there.
    """

    def __init__(self, design: Design, run_dir: Path):
        self.design = design
        self.run_dir = run_dir
        self.reset_armed = False
        self.passes = 0
        self.last_cycles: int | None = None
        self.closed = False

    def reset(self) -> None:
        self.reset_armed = True

    def close(self) -> None:
        self.closed = True


def compile_sim_obj(
    top_module_name: str,
    source_list: list[str],
    sim_out_dir: Path,
    debug: bool = False,
    behav: bool = False,
    fifosim: bool = False,
) -> tuple[Path, Path]:
    """Build (or find cached) ``top_module_name``; return finn's ``(base, xsim.dir/...)`` pair."""
    del debug  # waveform tracing is not wired to Verilator (yet): the pass runs untraced
    if fifosim:
        raise UserError("finn's stitched-FIFO simulation (fifosim) is not supported on Verilator")
    design = build_design(top_module_name, list(source_list), behav=behav, cache=_cache)
    rel = Path("xsim.dir") / top_module_name / DESCRIPTOR
    record = {
        "design": str(design.executable.parent),
        "key": design.key,
        "top": design.top,
        "run_dir": str(top_folder(top_module_name, [Path(s) for s in source_list])),
    }
    atomic_write_text(Path(sim_out_dir) / rel, json.dumps(record, indent=1))
    return Path(sim_out_dir), rel


def top_folder(top: str, sources: list[Path]) -> Path:
    """The folder of the source defining ``module <top>``: finn's code generation writes the
    node's generated wrapper and its memory files (``.dat``) there, and the wrapper names those
    files relative to it. The last source's folder if none matches."""
    pattern = re.compile(rf"^\s*module\s+{re.escape(top)}\b", re.MULTILINE)
    for src in sources:
        if src.suffix in (".v", ".sv") and pattern.search(src.read_text(errors="replace")):
            return src.resolve().parent
    return sources[-1].resolve().parent


def load_sim_obj(
    sim_out_dir: Path,
    out_so_relative_path: Path,
    tracefile: str | None = None,
    simkernel_so: str | None = None,
) -> VerilatorSim:
    """The design a :func:`compile_sim_obj` descriptor points at (tracing is not supported)."""
    del tracefile, simkernel_so
    path = Path(sim_out_dir) / out_so_relative_path
    if path.name != DESCRIPTOR or not path.is_file():
        raise UserError(f"{path} is no Verilator design descriptor (was it built by XSI?)")
    record = json.loads(path.read_text())
    return VerilatorSim(Design.load(Path(record["design"])), Path(record["run_dir"]))


def reset_rtlsim(sim: VerilatorSim, *args: object, **kwargs: object) -> None:
    """Arm a reset: the next pass starts from reset (16 cycles, as finn's XSI adapter)."""
    del args, kwargs
    sim.reset()


def close_rtlsim(sim: VerilatorSim) -> None:
    sim.close()


def pack_words(values: list[int], stream: Stream) -> bytes:
    """Python integers (finn's packed stream words) -> ``nbytes`` little-endian bytes each."""
    nb = stream.nbytes
    if not values:
        return b""
    if nb <= 8:
        try:
            words = np.asarray(values, dtype=np.uint64)
        except OverflowError as exc:
            raise ValueError(f"{stream.name}: a word is negative or wider than 64 bits") from exc
        if nb < 8 and int(words.max()) >> (8 * nb):
            raise ValueError(f"{stream.name}: a word is wider than its {stream.bits} bits")
        return words.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :nb].tobytes()
    return b"".join(int(v).to_bytes(nb, "little") for v in values)


def unpack_words(data: bytes, stream: Stream) -> list[int]:
    """Inverse of :func:`pack_words`."""
    nb = stream.nbytes
    if nb <= 8:
        raw = np.zeros((len(data) // nb, 8), dtype=np.uint8)
        raw[:, :nb] = np.frombuffer(data, dtype=np.uint8).reshape(-1, nb)
        return raw.view("<u8").ravel().tolist()
    return [int.from_bytes(data[i : i + nb], "little") for i in range(0, len(data), nb)]


def _out_counts(io_dict: dict, num_out_values: Any) -> dict[str, int]:
    names = list(io_dict["outputs"])
    if isinstance(num_out_values, dict):
        return {name: int(num_out_values[name]) for name in names}
    if len(names) != 1:
        raise ValueError("num_out_values must be a dict for several output streams")
    return {names[0]: int(num_out_values)}


def rtlsim_multi_io(
    sim: VerilatorSim,
    io_dict: dict[str, dict[str, list[int]]],
    num_out_values: int | dict[str, int],
    sname: str = "_V_V",
    liveness_threshold: int = 10000,
    liveness_estimate: float | None = None,
) -> int:
    """One pass of finn's ``io_dict`` (``in0`` + ``sname`` names the stream ``in0_V``); returns
    the cycles from reset release to the last output word."""
    from finn.util.basic import get_rtlsim_timeout_error_message
    from finn.util.exception import FINNUserError

    if sim.closed:
        raise RuntimeError(f"{sim.design.top}: the simulation was closed")
    if sim.passes and not sim.reset_armed:
        raise RuntimeError(
            f"{sim.design.top}: a second pass without reset_rtlsim; the Verilator harness "
            "starts every pass from reset and cannot continue a previous one"
        )
    streams = {s.name: s for s in sim.design.inputs + sim.design.outputs}
    words = {}
    for name, values in io_dict["inputs"].items():
        stream = streams.get(name + sname)
        if stream is None:
            raise ValueError(f"{sim.design.top} has no input stream {name + sname}")
        words[stream.name] = pack_words(list(values), stream)
    counts = {o + sname: n for o, n in _out_counts(io_dict, num_out_values).items()}
    result = run_pass(sim.design, words, counts, liveness_threshold, cwd=sim.run_dir)
    sim.passes += 1
    sim.reset_armed = False
    sim.last_cycles = result.cycles
    if result.stalled:
        raise FINNUserError(
            get_rtlsim_timeout_error_message(liveness_threshold, liveness_estimate)
            + f" ({sim.design.top} on Verilator)"
        )
    for out in io_dict["outputs"]:
        stream = streams[out + sname]
        io_dict["outputs"][out] = unpack_words(result.outputs[stream.name], stream)
    return result.cycles


def _finn_xsi() -> ModuleType:
    import finn.xsi

    return finn.xsi


def install(cache: Path | None = None) -> None:
    """Bind the five functions on ``finn.xsi`` (idempotent); builds go to ``cache``."""
    global _cache, _saved
    _cache = cache
    xsi = _finn_xsi()
    if _saved is None:
        _saved = {name: vars(xsi)[name] for name in FINN_XSI_NAMES if name in vars(xsi)}
    here = globals()
    for name in FINN_XSI_NAMES:
        setattr(xsi, name, here[name])


def uninstall() -> None:
    """Restore ``finn.xsi`` as it was before :func:`install` (no-op when not installed)."""
    global _saved
    if _saved is None:
        return
    xsi = _finn_xsi()
    for name in FINN_XSI_NAMES:
        if name in _saved:
            setattr(xsi, name, _saved[name])
        elif name in vars(xsi):
            delattr(xsi, name)
    _saved = None


def is_installed() -> bool:
    return _saved is not None


@contextlib.contextmanager
def installed(cache: Path | None = None) -> Iterator[None]:
    """Verilator in ``finn.xsi`` for the block; what was there before afterwards."""
    was = is_installed()
    previous = _cache
    install(cache)
    try:
        yield
    finally:
        if was:
            install(previous)
        else:
            uninstall()
