"""HLS nodes in C++ simulation (finn's cppsim form), generated with finn, built and run without it.

:func:`generate_hls_node` (needs finn-plus) runs finn's own ``code_generation_cppsim`` for one
``*_hls`` node into a folder and makes that folder self-contained: finn-plus's npy I/O templates
(``finn/templates/npy2stream``: ``npy2apintstream.hpp``, ``npy2vectorstream.hpp``, ``cnpy.h``,
``cnpy.cpp`` and cnpy's licence) are copied in, and the absolute ``.npy`` paths finn writes into
``execute_<op>.cpp`` become bare file names (:func:`relocate_npy_paths`, one textual edit of the
string literals naming the files; the compute is untouched), so the executable reads and writes
its streams in its working directory. A second edit touches only the test-bench glue that fills
a repeated weight stream (:func:`pack_repeated_feeds_once`): finn-plus's packing runs once and
its words are written ``numReps`` times, the same stream, where finn repacks every repetition
(about half the run time of a wide MVAU). Weight streams of ``MVAU_hls`` in ``internal_decoupled``
mode are written by finn's own ``make_weight_file`` into ``input_1.npy`` and recorded as a static
input. ``node.json`` (:class:`~.node.GeneratedNode`) describes the streams.

:class:`HlsRunner` (finn-free: g++ and numpy) compiles the folder against finn-hlslib, the
``ap_int.h`` headers (:mod:`.libraries`) and our small stand-ins for the Vitis headers
(``hls_include/``), and runs it once per call in a fresh directory. Differences from finn's
``compile_singlenode_code``, and why:

- ``-O3`` without finn's ``-fno-builtin -fno-inline``: without inlining every ap_int range and
  shift stays a call, and one 256x256 tile took 47 s in a single node. Measured on the shipped
  FCN-8s' first MVAU (a 216-bit weight stream; the time goes to ``ap_private<216>`` shifts and
  range assignments): 12.0 s at ``-O2``, 5.9 s at ``-O3`` (``-march=native`` would give 4.9 s
  but makes cached executables unportable). C++ semantics do not depend on the optimisation
  level, so the result is the same.
- no Vitis libraries (``hlsmc++``, the floating-point model, gmp/mpfr) and no zlib: the integer
  layers call none of them, and finn-plus 1.6.1's cnpy has no zlib dependency.
- ``-DFCNSEG_UNFLATTEN_GLUE`` when the finn-hlslib in use lacks ``unflatten()``
  (``hls_include/flatten.hpp``).

finn-plus's ``cnpy.cpp`` is the same in every folder and takes longer to compile than the
node's own code; it is compiled once per cache (:func:`shared_object`) and linked in.

Builds are cached by the SHA-256 of everything that decides the executable (compiler version,
flags, every file of the node folder by relative name and bytes, our stand-in headers, and each
library's version and header digest) under ``$FCNSEG_CPPSIM_CACHE`` or
``~/.cache/fcnseg/cppsim``, published by one rename: the folder can be moved or copied and still
hits the same build. A build that fails against a finn-hlslib other than the pinned one raises
:class:`LibraryMismatch`: such a node is *not verified: library version*, never passed
(``Pool_hls`` against the vendored copy is the known case). Such compiler errors are recorded
by key (``<cache>/failed/``), so the next build of the same key raises at once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fcnseg.atomic import atomic_write_text
from fcnseg.errors import UserError
from fcnseg.hw.verify.libraries import Library, ap_int_headers, finn_hlslib
from fcnseg.hw.verify.node import (
    BuildInfo,
    GeneratedNode,
    LibraryMismatch,
    RunResult,
    StreamSpec,
    check_inputs,
)

__all__ = ["HlsRunner", "LibraryMismatch", "generate_hls_node"]

HLS_INCLUDE = Path(__file__).parent / "hls_include"
#: finn-plus's npy I/O glue every cppsim executable includes (finn/templates/npy2stream)
TEMPLATE_FILES = (
    "npy2apintstream.hpp",
    "npy2vectorstream.hpp",
    "cnpy.h",
    "cnpy.cpp",
    "CNPY_LICENSE",
)
CXX_FLAGS = ("-O3", "-std=c++17", "-pipe", "-w")
#: translation units that are the same in every node folder, compiled once per cache
SHARED_UNITS = ("cnpy.cpp",)
EXECUTABLE = "node_model"
BUILD_FILE = "build.json"
#: bump when the layout of a cached build changes
BUILD_FORMAT = 1
#: attributes that decide how a node's streams are laid out or folded (recorded in node.json)
LAYOUT_ATTRS = (
    "depthwise",
    "ConvKernelDim",
    "IFMChannels",
    "NumChannels",
    "Channels",
    "SIMD",
    "PE",
    "MW",
    "MH",
    "KernelSize",
    "numInputVectors",
    "mem_mode",
    "cpp_interface",
    "hls_style",
)
#: float32 (the container of finn's npy files) holds integers exactly up to this magnitude
FLOAT32_EXACT = 2**24
CXX_HINT = "install a C++17 compiler (`apt-get install g++`) or set CXX"


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def relocate_npy_paths(source: str, folder: Path) -> str:
    """``"<folder>/input_0.npy"`` -> ``"input_0.npy"`` in finn's generated C++ (every string
    literal naming a file of the folder), so the executable works in its current directory."""
    prefix = '"' + str(folder).rstrip("/") + "/"
    out = source.replace(prefix, '"')
    if str(folder) in out:
        raise UserError(f"{folder}: generated code names its folder outside an npy path")
    return out


_REPEATED_FEED = re.compile(
    r'^npy2apintstream<(?P<types>.+)>\("(?P<file>input_\d+\.npy)", (?P<rest>in\d+_V, '
    r"(?:true|false), numReps)\);$",
    re.MULTILINE,
)
_FEED_INCLUDE = '#include "npy2apintstream.hpp"\n'


def pack_repeated_feeds_once(source: str) -> str:
    """finn's repeated weight feed ``npy2apintstream<...>("input_1.npy", in1_V, false, numReps)``
    -> ``fcnseg_npy2apintstream_repeated<...>(same arguments)``: finn-plus's own packing run
    once and its words written ``numReps`` times (``hls_include/fcnseg_repeat_stream.hpp``), the
    same stream, in about half the run time of a wide MVAU (shipped FCN-8s ``MVAU_hls_1``,
    108-bit weight words, 1.5 M of them a tile: 6.4 -> 3.5 s CPU; what remains is the MVAU
    itself). Test-bench glue only: on the FPGA the weights come from finn-rtllib's memstream.
    Nothing else changes."""
    out, count = _REPEATED_FEED.subn(
        r'fcnseg_npy2apintstream_repeated<\g<types>>("\g<file>", \g<rest>);', source
    )
    if count and _FEED_INCLUDE in out:
        out = out.replace(_FEED_INCLUDE, _FEED_INCLUDE + '#include "fcnseg_repeat_stream.hpp"\n', 1)
    elif count:
        raise UserError("generated code repeats a weight feed without including npy2apintstream")
    return out


def _streams(inst, node, direction: str) -> list[tuple[int, StreamSpec]]:
    """The non-zero-width streams of one direction with their port indices (``in<i>``)."""
    tensors = node.input if direction == "in" else node.output
    found = []
    for i, tensor in enumerate(tensors):
        width = inst.get_instream_width(i) if direction == "in" else inst.get_outstream_width(i)
        if width == 0:  # not exposed: finn writes no npy and declares no stream for it
            continue
        if direction == "in":
            dtype = inst.get_input_datatype(i)
            shapes = (inst.get_normal_input_shape, inst.get_folded_input_shape)
        else:
            dtype = inst.get_output_datatype(i)
            shapes = (inst.get_normal_output_shape, inst.get_folded_output_shape)
        normal, folded = (tuple(int(v) for v in shape(i)) for shape in shapes)
        spec = StreamSpec(tensor, dtype.get_canonical_name(), normal, folded, int(width))
        found.append((i, spec))
    return found


def _write_static_inputs(model, inst, node, folder: Path, ports: list[int]) -> dict[str, str]:
    """Weight streams (initializers read through a stream) as ``in<i> -> input_<i>.npy``,
    written as finn's ``MVAU_hls.execute_node`` writes them for cppsim."""
    static: dict[str, str] = {}
    for i in ports:
        weights = model.get_initializer(node.input[i])
        if weights is None:
            continue
        if not (node.op_type.startswith("MVAU") and i == 1):
            raise UserError(f"{node.name}: a constant stream on input {i} is not supported")
        name = f"input_{i}.npy"
        rows = weights.reshape(-1, weights.shape[-1])
        inst.make_weight_file(rows, "decoupled_npy", str(folder / name))
        static[f"in{i}"] = name
    return static


def generate_hls_node(model, node, folder: Path, fpgapart: str, clk_ns: float) -> GeneratedNode:
    """finn's cppsim code of one ``*_hls`` node in ``folder``, relocatable, with ``node.json``.

    ``fpgapart``/``clk_ns`` are recorded only (cppsim has no clock); needs finn-plus.
    """
    import importlib.metadata

    from finn.templates import get_templates_folder
    from qonnx.custom_op.registry import getCustomOp

    if not node.op_type.endswith("_hls"):
        raise UserError(f"{node.name} is a {node.op_type}, not an HLS node")
    inst = getCustomOp(node)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    folder = folder.resolve()
    inst.set_nodeattr("code_gen_dir_cppsim", str(folder))
    inst.code_generation_cppsim(model)
    cpp = folder / f"execute_{node.op_type}.cpp"
    atomic_write_text(cpp, pack_repeated_feeds_once(relocate_npy_paths(cpp.read_text(), folder)))
    templates = Path(get_templates_folder()) / "npy2stream"
    for name in TEMPLATE_FILES:
        shutil.copyfile(templates / name, folder / name)

    ins = _streams(inst, node, "in")
    outs = _streams(inst, node, "out")
    static = _write_static_inputs(model, inst, node, folder, [i for i, _ in ins])
    ins = [(i, spec) for i, spec in ins if f"in{i}" not in static]
    attrs = {
        a: _jsonable(inst.get_nodeattr(a)) for a in LAYOUT_ATTRS if a in inst.get_nodeattr_types()
    }
    attrs.update(
        input_ports=[i for i, _ in ins],
        output_ports=[o for o, _ in outs],
        fpgapart=fpgapart,
        clk_ns=clk_ns,
    )
    hlslib, ap_int = _version_or_missing(finn_hlslib), _version_or_missing(ap_int_headers)
    generated = GeneratedNode(
        name=node.name,
        kind=node.op_type,
        backend="hls",
        top=node.name,
        inputs=tuple(spec for _, spec in ins),
        outputs=tuple(spec for _, spec in outs),
        sources=_sources(folder),
        attrs=attrs,
        static_inputs=static,
        expected_cycles=int(inst.get_exp_cycles()),
        library={
            "finn-plus": importlib.metadata.version("finn-plus"),
            "finn-hlslib": hlslib,
            "ap_int": ap_int,
        },
    )
    generated.save(folder)
    return generated


def _version_or_missing(find: Callable[[], Library]) -> str:
    """A library's version for the record; generating code does not need the library itself."""
    try:
        return find().version
    except UserError:
        return "not found"


def _sources(folder: Path) -> tuple[str, ...]:
    """The design's files: translation units (finn's ``execute_*.cpp`` first), then headers."""
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    units = sorted(
        (f for f in files if f.endswith(".cpp")), key=lambda f: not f.startswith("execute_")
    )
    headers = [f for f in files if f.endswith((".h", ".hpp"))]
    return (*units, *headers)


@functools.cache
def compiler() -> str:
    """The C++ compiler every HLS build uses: ``$CXX``, else ``g++``."""
    return os.environ.get("CXX") or "g++"


def compiler_version(cxx: str) -> str:
    """The first line of ``<cxx> --version`` (part of every cache key)."""
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False)
    except OSError:
        out = None
    if out is None or out.returncode != 0:
        raise UserError(f"the C++ compiler {cxx!r} does not run: {CXX_HINT}")
    return out.stdout.splitlines()[0].strip()


def default_cache() -> Path:
    """``$FCNSEG_CPPSIM_CACHE`` or ``~/.cache/fcnseg/cppsim``."""
    env = os.environ.get("FCNSEG_CPPSIM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fcnseg" / "cppsim"


def _needs_unflatten_glue(hlslib: Library) -> bool:
    flatten = hlslib.path / "flatten.hpp"
    return not (flatten.is_file() and "unflatten" in flatten.read_text(errors="replace"))


def _compile_flags(folder: Path, libs: list[Library]) -> list[str]:
    hlslib, ap_int = libs
    flags = [*CXX_FLAGS, f"-I{folder}", f"-I{HLS_INCLUDE}", f"-I{hlslib.path}", f"-I{ap_int.path}"]
    return flags + (["-DFCNSEG_UNFLATTEN_GLUE"] if _needs_unflatten_glue(hlslib) else [])


def shared_object(cxx: str, cxx_version: str, unit: Path, flags: list[str], cache: Path) -> Path:
    """``unit`` (finn-plus's ``cnpy.cpp``: the same in every node folder, and more than half of
    a node's compile time) compiled once per cache, keyed by the compiler, the flags without the
    include folders, and the bytes of every file the unit includes (``g++ -MM``)."""
    where = unit.parent
    deps = subprocess.run(
        [cxx, *flags, "-MM", str(unit)], capture_output=True, text=True, check=False, cwd=where
    )
    if deps.returncode != 0:
        raise UserError(f"{cxx} cannot read the includes of {unit}: {deps.stderr.strip()[:200]}")
    files = sorted({Path(f) for f in deps.stdout.replace("\\\n", " ").split()[1:]})
    digest = hashlib.sha256()
    for part in (cxx_version, *[f for f in flags if not f.startswith("-I")], unit.name):
        digest.update(part.encode() + b"\0")
    for f in files:
        digest.update(f.name.encode() + b"\0" + (where / f).read_bytes() + b"\0")
    final = cache / "objects" / digest.hexdigest()
    target = final / (unit.stem + ".o")
    if target.is_file():
        return target
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name[:12]}.", dir=final.parent))
    try:
        out = subprocess.run(
            [cxx, *flags, "-c", str(unit), "-o", str(work / target.name)],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise UserError(f"compiling {unit} failed: {_first_error_text(out.stderr)}")
        try:
            os.rename(work, final)
        except OSError:  # another process published it first: use theirs
            if not target.is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def build_key(cxx_version: str, folder: Path, libs: list[Library], glue: bool) -> str:
    """SHA-256 over everything that decides the executable (see the module docstring)."""
    digest = hashlib.sha256()
    for part in (cxx_version, " ".join(CXX_FLAGS), f"glue={glue}", f"format={BUILD_FORMAT}"):
        digest.update(part.encode() + b"\0")
    for root, tag in ((folder, "node"), (HLS_INCLUDE, "hls_include")):
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(f"{tag}/{f.relative_to(root)}".encode() + b"\0" + f.read_bytes() + b"\0")
    for lib in libs:
        digest.update(f"{lib.name} {lib.version} {lib.headers_digest()}".encode() + b"\0")
    return digest.hexdigest()


def _first_error(log: Path) -> str:
    return _first_error_text(log.read_text(errors="replace"))


def _first_error_text(text: str) -> str:
    lines = text.splitlines()
    errors = [ln.strip() for ln in lines if " error: " in ln or ln.startswith("error")]
    return errors[0] if errors else (lines[-1].strip() if lines else "no output")


class HlsRunner:
    """A generated HLS node folder, built with g++ (cached) and run in C++ simulation.

    ``folder``: written by :func:`generate_hls_node`; ``cache``: build cache (default
    :func:`default_cache`). Implements the :class:`~.node.Runner` protocol.
    """

    def __init__(self, folder: str | Path, cache: Path | None = None) -> None:
        self.folder = Path(folder).resolve()
        self.node = GeneratedNode.load(self.folder)
        if self.node.backend != "hls":
            raise UserError(f"{self.folder}: a {self.node.backend} node, not an HLS one")
        self.cache = Path(cache or default_cache()).expanduser()
        self.libraries: list[Library] = []
        self._executable: Path | None = None

    def build(self) -> BuildInfo:
        """Compile (or find in the cache) the node's executable."""
        started = time.perf_counter()
        cxx = compiler()
        if shutil.which(cxx) is None:
            raise UserError(f"no C++ compiler {cxx!r} on PATH: {CXX_HINT}")
        version = compiler_version(cxx)
        self.libraries = [finn_hlslib(), ap_int_headers()]
        key = build_key(
            version, self.folder, self.libraries, _needs_unflatten_glue(self.libraries[0])
        )
        final = self.cache / key
        cached = (final / BUILD_FILE).is_file() and (final / EXECUTABLE).is_file()
        if not cached:
            shutil.rmtree(final, ignore_errors=True)  # a damaged entry: build it again
            _raise_recorded_failure(self.cache, key)
            self._compile(cxx, version, key)
        self._executable = final / EXECUTABLE
        return BuildInfo(key=key, seconds=time.perf_counter() - started, cached=cached)

    def _compile(self, cxx: str, version: str, key: str) -> None:
        self.cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.", dir=self.cache))
        try:
            log = work / "build.log"
            started = time.perf_counter()
            flags = _compile_flags(self.folder, self.libraries)
            units = []
            for src in (s for s in self.node.sources if s.endswith(".cpp")):
                unit = self.folder / src
                shared = src in SHARED_UNITS
                units.append(
                    shared_object(cxx, version, unit, flags, self.cache) if shared else unit
                )
            cmd = [cxx, *flags, *(str(u) for u in units), "-o", str(work / EXECUTABLE)]
            with log.open("w") as handle:
                handle.write("$ " + " ".join(cmd) + "\n")
                handle.flush()
                done = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, check=False)
            if done.returncode != 0:
                self._compile_failed(log, key, done.returncode)
            info = {
                "format": BUILD_FORMAT,
                "node": self.node.name,
                "kind": self.node.kind,
                "compiler": version,
                "command": cmd,
                "seconds": round(time.perf_counter() - started, 3),
                "libraries": {lib.name: lib.version for lib in self.libraries},
            }
            atomic_write_text(work / BUILD_FILE, json.dumps(info, indent=1) + "\n")
            try:
                os.rename(work, self.cache / key)
            except OSError:  # another process published the same key first: use theirs
                if not (self.cache / key / BUILD_FILE).is_file():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _compile_failed(self, log: Path, key: str, returncode: int) -> None:
        """Raise the one-line error of a failed compile, keeping its log under ``failed/``.

        A compiler that ran and reported errors (exit 1) is recorded (``failed/<key>.json``):
        the same sources against the same libraries fail the same way, so the next build of
        this key raises at once instead of spending the compile again (5 ``Pool_hls`` nodes
        against the vendored finn-hlslib cost ~40 s a run otherwise). A crash or kill is not.
        """
        failed = self.cache / "failed"
        kept = failed / f"{self.node.name}-{key[:12]}.log"
        failed.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, kept)
        first = _first_error(log)
        hlslib = self.libraries[0]
        if not hlslib.pinned:
            kind, message = (
                "mismatch",
                (
                    f"{self.node.name} ({self.node.kind}): not verified: library version "
                    f"finn-hlslib {hlslib.version} ({hlslib.path}) does not compile it: {first}; "
                    f"log: {kept}"
                ),
            )
        else:
            kind = "error"
            message = f"{self.node.name}: compiling its cppsim code failed: {first}; log: {kept}"
        if returncode == 1:
            record = json.dumps({"format": BUILD_FORMAT, "kind": kind, "message": message})
            atomic_write_text(failed / f"{key}.json", record + "\n")
        _raise_failure(kind, message)

    def run(self, inputs: list[np.ndarray]) -> RunResult:
        """One pass: ``inputs`` (int64, normal shapes, finn layout, in :attr:`node` order) in, the
        outputs (same form) out. Builds first if :meth:`build` has not run."""
        arrays = check_inputs(self.node, inputs)
        if self._executable is None:
            self.build()
        assert self._executable is not None
        started = time.perf_counter()
        run_dir = Path(tempfile.mkdtemp(prefix=f"fcnseg-cppsim-{self.node.name}-"))
        ports = self.node.attrs.get("input_ports", list(range(len(self.node.inputs))))
        for port, spec, a in zip(ports, self.node.inputs, arrays, strict=True):
            if a.size and int(np.abs(a).max()) >= FLOAT32_EXACT:
                raise UserError(
                    f"{self.node.name}: input {spec.tensor} exceeds float32's exact range"
                )
            np.save(run_dir / f"input_{port}.npy", a.reshape(spec.folded_shape).astype(np.float32))
        for rel in self.node.static_inputs.values():
            os.symlink(self.folder / rel, run_dir / rel)
        log = run_dir / "run.log"
        with log.open("w") as handle:
            done = subprocess.run(
                [str(self._executable)],
                cwd=run_dir,
                stdout=handle,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode != 0:
            raise UserError(
                f"{self.node.name}: the cppsim executable failed (exit {done.returncode}): "
                f"{_first_line(log)}; log: {log}"
            )
        outputs = self._collect(run_dir, log)
        shutil.rmtree(run_dir, ignore_errors=True)
        return RunResult(outputs=outputs, seconds=time.perf_counter() - started, cycles=None)

    def _collect(self, run_dir: Path, log: Path) -> list[np.ndarray]:
        ports = self.node.attrs.get("output_ports", list(range(len(self.node.outputs))))
        outputs = []
        for port, spec in zip(ports, self.node.outputs, strict=True):
            path = run_dir / f"output_{port}.npy"
            if not path.is_file():
                raise UserError(
                    f"{self.node.name}: the executable wrote no {path.name}; log: {log}"
                )
            raw = np.load(path, allow_pickle=False)
            if raw.size != int(np.prod(spec.normal_shape)):
                raise UserError(
                    f"{self.node.name}: {path.name} has {raw.size} values, expected shape "
                    f"{spec.normal_shape}; log: {log}"
                )
            values = raw.astype(np.int64)
            if not np.array_equal(values, raw):
                raise UserError(f"{self.node.name}: {path.name} holds non-integers; log: {log}")
            outputs.append(values.reshape(spec.normal_shape))
        return outputs


def _raise_failure(kind: str, message: str) -> None:
    raise (LibraryMismatch if kind == "mismatch" else UserError)(message)


def _raise_recorded_failure(cache: Path, key: str) -> None:
    """Raise again what compiling ``key`` raised before, if it was recorded."""
    path = cache / "failed" / f"{key}.json"
    if not path.is_file():
        return
    try:
        record = json.loads(path.read_text())
        kind, message = str(record["kind"]), str(record["message"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # unreadable: compile again
    if record.get("format") == BUILD_FORMAT:
        _raise_failure(kind, f"{message} (as recorded in {path}: delete it to compile again)")


def _first_line(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"
