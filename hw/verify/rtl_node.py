"""An RTL node of a folded build as a self-contained folder, and its finn-free Verilator runner.

:func:`generate_rtl_node` (needs finn-plus) runs finn's own code generation for one ``*_rtl``
node (``code_generation_ipgen``, which needs no Vivado for RTL nodes) into a folder, and copies
into that folder every finn-rtllib file of the node's source list (``get_rtl_file_list``, the
list finn's ``prepare_rtlsim`` compiles) under ``finn-rtllib/<its path there>``. The folder then
holds the whole design: the generated wrapper, the library sources, the memory images the
wrapper reads with relative names (``./<node>_threshs_<pe>_<stage>.dat`` of Thresholding_rtl,
resolved against the run's working folder), and ``node.json`` (:class:`~.node.GeneratedNode`).
No absolute path is left in it (checked), so it can be copied anywhere, packaged, and run by
the emulated board, which has no finn.

:class:`RtlRunner` builds the folder's design with :mod:`.verilator_build` (cached by the
content of the sources, not their location: a copied folder hits the same build) and runs one
data pass per :meth:`~RtlRunner.run`: inputs packed into stream words with :mod:`.words`
(vectorised numpy; finn's Python packing and hex strings were most of its 91 s for one sliding
window of the shipped net), one harness process, outputs unpacked. What finn simulates is what
runs here: for ``MVAU_rtl`` in ``internal_decoupled`` mode finn simulates the compute core alone
with the weights fed on its ``in1`` stream from ``input_1.npy`` (``generate_params`` writes it),
once per input vector; the runner does the same from the folder's copy of that file.

Behavioural form: finn-rtllib's ``mvu.sv`` and ``mvu_vvu_8sx9_dsp58.sv`` select their
behavioural datapath under ``ifdef VERILATOR`` (and ``FINN_SIMULATION`` forces it in the wrapper),
leaving out the ``DSP48E1``/``DSP48E2``/``DSP58`` and ``LUT6_2`` primitive instances; the lane
packing of several products into one wide multiplication stays in and is what runs.

Measured on the shipped FCN-8s (pynq-z2, one 256x256 photo tile, 2 shared cores): all 22 RTL
nodes exact; cold builds 2.8-5 s per node plus ~7 s once for Verilator's runtime (72 s for the
22 at load ~3); every node run (packing included) 1.2-1.4 s in all, the largest sliding window
(1.18 M cycles) 0.13-0.19 s, where finn's rtlsim path took 91 s for it alone.
"""

from __future__ import annotations

import functools
import importlib.metadata
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from fcnseg.errors import UserError
from fcnseg.hw.verify import verilator_build
from fcnseg.hw.verify.node import BuildInfo, GeneratedNode, RunResult, StreamSpec, check_inputs
from fcnseg.hw.verify.words import pack, unpack, word_bytes

#: where the finn-rtllib sources a node needs are copied, inside its folder
RTLLIB = "finn-rtllib"
#: node attributes that decide a stream's layout or the design's folding (recorded in node.json)
LAYOUT_ATTRS = (
    "depthwise",
    "ConvKernelDim",
    "IFMChannels",
    "IFMDim",
    "OFMDim",
    "Stride",
    "Dilation",
    "ImgDim",
    "Padding",
    "NumChannels",
    "SIMD",
    "PE",
    "MW",
    "MH",
    "TH",
    "numInputVectors",
    "mem_mode",
    "parallel_window",
)
#: op types whose finn-rtllib core has a behavioural form selected by FINN_SIMULATION
BEHAVIOURAL = ("MVAU_rtl", "VVAU_rtl")
#: stall threshold: idle cycles without an output word (at least, or twice finn's estimate)
MIN_LIVENESS = 10_000


def _json_value(value: Any) -> Any:
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_value(v) for v in value]
    if isinstance(value, (np.integer, bool)):
        return int(value)
    if isinstance(value, bytes):
        return value.decode()
    return value


def _stream(tensor: str, dtype: Any, normal: Any, folded: Any, width: Any) -> StreamSpec:
    return StreamSpec(
        tensor=tensor,
        dtype=dtype.get_canonical_name(),
        normal_shape=tuple(int(v) for v in normal),
        folded_shape=tuple(int(v) for v in folded),
        width=int(width),
    )


def _localise(source: Path, folder: Path, rtllib: Path) -> str:
    """A source of finn's list as a path relative to ``folder``; library files are copied in."""
    source = source.resolve()
    if source.is_relative_to(folder):
        return source.relative_to(folder).as_posix()
    if source.is_relative_to(rtllib):
        rel = Path(RTLLIB) / source.relative_to(rtllib)
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / rel)
        return rel.as_posix()
    raise UserError(f"RTL source {source} is neither generated nor in finn-rtllib ({rtllib})")


def _check_relocatable(folder: Path, sources: list[str], roots: list[Path]) -> None:
    """One-line error if a source names one of ``roots`` (an absolute path would pin the
    folder to this machine)."""
    for rel in sources:
        text = (folder / rel).read_text(errors="replace")
        for root in roots:
            if str(root) in text:
                raise UserError(f"{folder / rel} names {root}: the folder is not relocatable")


def _static_streams(inst: Any, node: Any, model: Any, folder: Path) -> dict[str, dict[str, Any]]:
    """Streams the design reads that are no graph tensor: an MVAU's weights in
    ``internal_decoupled`` mode, as finn's rtlsim feeds them (``input_1.npy``, once per input
    vector: ``numInputVectors / TH`` times over)."""
    if not node.op_type.startswith("MVAU") or len(node.input) < 2:
        return {}
    if model.get_initializer(node.input[1]) is None:
        return {}  # external weights: a graph tensor, streamed like any input
    mode = inst.get_nodeattr("mem_mode")
    if mode != "internal_decoupled":
        raise UserError(f"{node.name}: mem_mode {mode} is not supported (internal_decoupled is)")
    weights = folder / "input_1.npy"
    if not weights.is_file():
        raise UserError(f"{node.name}: finn wrote no {weights.name} for its weight stream")
    repeats = int(np.prod(inst.get_nodeattr("numInputVectors"))) // int(inst.get_nodeattr("TH"))
    return {
        "in1": {
            "file": weights.name,
            "dtype": inst.get_input_datatype(1).get_canonical_name(),
            "width": int(inst.get_instream_width(1)),
            "folded_shape": [int(v) for v in np.load(weights, allow_pickle=False).shape],
            "repeats": repeats,
        }
    }


def _graph_streams(
    inst: Any, node: Any, model: Any
) -> tuple[list[int], tuple[StreamSpec, ...], tuple[StreamSpec, ...]]:
    """The node inputs that are graph tensors (initializers live in the design or come as
    static streams), and the input and output streams as finn's methods describe them."""
    streamed = [i for i, t in enumerate(node.input) if model.get_initializer(t) is None]
    inputs = tuple(
        _stream(
            node.input[i],
            inst.get_input_datatype(i),
            inst.get_normal_input_shape(i),
            inst.get_folded_input_shape(i),
            inst.get_instream_width(i),
        )
        for i in streamed
    )
    outputs = tuple(
        _stream(
            t,
            inst.get_output_datatype(i),
            inst.get_normal_output_shape(i),
            inst.get_folded_output_shape(i),
            inst.get_outstream_width(i),
        )
        for i, t in enumerate(node.output)
    )
    return streamed, inputs, outputs


def generate_rtl_node(
    model: Any, node: Any, folder: str | Path, fpgapart: str, clk_ns: float
) -> GeneratedNode:
    """finn's RTL code for ``node`` of the HW graph ``model`` in a self-contained ``folder``
    (module docstring); returns and saves its :class:`~.node.GeneratedNode`. Needs finn-plus."""
    from finn.custom_op.fpgadataflow.rtlbackend import RTLBackend
    from finn.util.settings import get_settings
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    if not isinstance(inst, RTLBackend):
        raise UserError(f"{node.name} ({node.op_type}) is not an RTL node")
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    rtllib = Path(get_settings().finn_rtllib).resolve()
    inst.set_nodeattr("code_gen_dir_ipgen", str(folder))
    inst.code_generation_ipgen(model, fpgapart, clk_ns)
    sources = [_localise(Path(p), folder, rtllib) for p in inst.get_rtl_file_list(abspath=True)]
    _check_relocatable(folder, sources, [folder, rtllib])
    static = _static_streams(inst, node, model, folder)
    streamed, inputs, outputs = _graph_streams(inst, node, model)
    types = inst.get_nodeattr_types()
    attrs: dict[str, Any] = {
        a: _json_value(inst.get_nodeattr(a)) for a in LAYOUT_ATTRS if a in types
    }
    attrs["behav"] = node.op_type.startswith(BEHAVIOURAL)
    attrs["input_ports"] = [f"in{i}" for i in streamed]
    attrs["output_ports"] = [f"out{i}" for i in range(len(node.output))]
    if static:
        attrs["static_streams"] = static
    version = importlib.metadata.version("finn-plus")
    generated = GeneratedNode(
        name=node.name,
        kind=node.op_type,
        backend="rtl",
        top=inst.get_verilog_top_module_name(),
        inputs=inputs,
        outputs=outputs,
        sources=tuple(sources),
        attrs=attrs,
        static_inputs={port: s["file"] for port, s in static.items()},
        expected_cycles=int(inst.get_exp_cycles()),
        library={"finn-plus": version, "finn-rtllib": f"finn-plus {version}"},
    )
    generated.save(folder)
    return generated


class RtlRunner:
    """A generated RTL node folder on Verilator (the :class:`~.node.Runner` protocol).

    ``cache``: the Verilator build cache (None: ``$FCNSEG_VERILATOR_CACHE`` or
    ``~/.cache/fcnseg/verilator``). Runs start in ``folder`` (its memory images resolve there).
    """

    def __init__(self, folder: str | Path, cache: Path | None = None):
        self.folder = Path(folder).resolve()
        self.node = GeneratedNode.load(self.folder)
        if self.node.backend != "rtl":
            raise UserError(f"{self.folder}: a {self.node.backend} node, not an RTL one")
        self.cache = cache
        self._design: verilator_build.Design | None = None

    @property
    def liveness(self) -> int:
        """Idle cycles (no output word) after which a run counts as stalled."""
        return max(MIN_LIVENESS, 2 * self.node.expected_cycles)

    def build(self) -> BuildInfo:
        """Verilate and compile the folder's design, or find it in the cache."""
        started = time.perf_counter()
        design, cached = verilator_build.find_or_build(
            self.node.top,
            [self.folder / s for s in self.node.sources],
            behav=bool(self.node.attrs.get("behav", False)),
            cache=self.cache,
        )
        self._ports(design)
        self._design = design
        return BuildInfo(design.key, time.perf_counter() - started, cached)

    def _ports(self, design: verilator_build.Design) -> dict[str, tuple[str, StreamSpec]]:
        """Stream port -> (``"in"``/``"out"``, its node.json spec), from the ports recorded at
        generation (finn's ``in<i>``/``out<i>`` for node input/output ``i``); one-line error
        when the design lacks one or its width differs. Ports of the design that are neither
        (Thresholding_rtl's set selection ``in1_V``, idle for one threshold set) get no words,
        as in finn's rtlsim."""
        wanted = [
            ("in", port, spec)
            for port, spec in zip(self._port_names("in"), self.node.inputs, strict=True)
        ]
        wanted += [
            ("out", port, spec)
            for port, spec in zip(self._port_names("out"), self.node.outputs, strict=True)
        ]
        streams = {s.name: s for s in design.inputs + design.outputs}
        directions = {s.name: "in" for s in design.inputs} | {s.name: "out" for s in design.outputs}
        ports: dict[str, tuple[str, StreamSpec]] = {}
        for direction, port, spec in wanted:
            stream = streams.get(f"{port}_V")
            if stream is None or directions[stream.name] != direction:
                raise UserError(
                    f"{self.node.name}: the design has no {direction}put stream {port}_V "
                    f"(it has {sorted(streams)})"
                )
            if stream.nbytes != word_bytes(spec.width):
                raise UserError(
                    f"{self.node.name}: {stream.name} is {stream.bits} bits wide, node.json "
                    f"says {spec.width} ({spec.tensor})"
                )
            ports[stream.name] = (direction, spec)
        for port in self.node.attrs.get("static_streams", {}):
            if f"{port}_V" not in streams or directions[f"{port}_V"] != "in":
                raise UserError(f"{self.node.name}: the design has no weight stream {port}_V")
        return ports

    def _port_names(self, direction: str) -> list[str]:
        specs = self.node.inputs if direction == "in" else self.node.outputs
        default = [f"{direction}{i}" for i in range(len(specs))]
        names = [str(p) for p in self.node.attrs.get(f"{direction}put_ports", default)]
        if len(names) != len(specs):
            raise UserError(f"{self.node.name}: node.json {direction}put_ports do not match")
        return names

    @functools.cached_property
    def _static_words(self) -> tuple[dict[str, bytes], dict[str, int]]:
        words, repeats = {}, {}
        for port, s in self.node.attrs.get("static_streams", {}).items():
            values = np.load(self.folder / s["file"], allow_pickle=False).reshape(s["folded_shape"])
            words[f"{port}_V"] = pack(values, s["dtype"], int(s["width"]))
            repeats[f"{port}_V"] = int(s["repeats"])
        return words, repeats

    @property
    def design(self) -> verilator_build.Design:
        """The built design (built first if needed): executable, streams, ``adapted`` files."""
        return self._built()

    def _built(self) -> verilator_build.Design:
        if self._design is None:
            self.build()
        assert self._design is not None
        return self._design

    def pack_inputs(self, inputs: list[np.ndarray]) -> dict[str, bytes]:
        """The stream words of ``inputs`` (int64, normal shapes, finn layout) per input port."""
        arrays = check_inputs(self.node, inputs)
        ins = [(n, spec) for n, (d, spec) in self._ports(self._built()).items() if d == "in"]
        return {
            name: pack(a.reshape(spec.folded_shape), spec.dtype, spec.width)
            for (name, spec), a in zip(ins, arrays, strict=True)
        }

    def run_words(self, words: dict[str, bytes]) -> tuple[dict[str, bytes], int]:
        """One pass on packed words per input port (``in0_V`` ...; the static weight streams
        are added here): the output words per port and the cycles. One-line
        :class:`UserError` on a stall, on input words left unread, or when the simulation
        fails."""
        design = self._built()
        ports = self._ports(design)
        static, repeats = self._static_words
        words = {**words, **static}
        expected = {
            name: int(np.prod(spec.folded_shape[:-1]))
            for name, (d, spec) in ports.items()
            if d == "out"
        }
        try:
            done = verilator_build.run_pass(
                design, words, expected, self.liveness, cwd=self.folder, repeats=repeats
            )
        except (RuntimeError, ValueError) as exc:
            raise UserError(f"{self.node.name}: {exc}") from None
        self._check_pass(design, done, words, repeats, expected)
        return done.outputs, done.cycles

    def run(self, inputs: list[np.ndarray]) -> RunResult:
        """One pass: ``inputs`` (int64, normal shapes, finn layout) in, outputs and cycles out."""
        started = time.perf_counter()
        outputs, cycles = self.run_words(self.pack_inputs(inputs))
        ports = self._ports(self._built())
        arrays = [
            unpack(outputs[name], spec.dtype, spec.width, spec.folded_shape).reshape(
                spec.normal_shape
            )
            for name, (d, spec) in ports.items()
            if d == "out"
        ]
        return RunResult(arrays, time.perf_counter() - started, cycles)

    def _check_pass(
        self,
        design: verilator_build.Design,
        done: verilator_build.Pass,
        words: dict[str, bytes],
        repeats: dict[str, int],
        expected: dict[str, int],
    ) -> None:
        """One-line errors for a stall and for input words the design left unread."""
        nbytes = {s.name: s.nbytes for s in design.inputs + design.outputs}
        sent = {n: len(w) // nbytes[n] * repeats.get(n, 1) for n, w in words.items()}
        read = ", ".join(f"{n} {done.consumed.get(n, 0)}/{sent[n]}" for n in sorted(sent))
        if done.stalled:
            got = ", ".join(
                f"{n} {len(done.outputs[n]) // nbytes[n]}/{expected[n]}" for n in sorted(expected)
            )
            raise UserError(
                f"{self.node.name}: stalled, no output word for {self.liveness} cycles "
                f"(output words: {got}; input words read: {read})"
            )
        unread = [n for n in sent if done.consumed.get(n, 0) != sent[n]]
        if unread:
            raise UserError(f"{self.node.name}: the design left input words unread ({read})")
