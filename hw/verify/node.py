"""A generated node on disk: finn's code for one HW layer, runnable without finn.

Code generation needs finn-plus (``code_generation_cppsim`` for HLS nodes, ``code_generation_ipgen``
for RTL nodes); building and running the result needs only a compiler (g++ or Verilator) and
numpy. The hand-off between the two is a folder per node holding the generated sources and a
``node.json`` (:class:`GeneratedNode`) that says everything a runner needs: which backend, the
top, and every stream's element type, folded shape and width. That split is what lets the
emulated board (``.venv-board``, no finn) run the generated layers a package carries, and what
lets a verification run the whole graph without finn in its inner loop.

Tensors handed to and returned by a runner are int64 arrays in the node's *normal* shape and in
finn's stream layout (``fcnseg.hw.verify.tensors.to_finn_layout``); runners fold and pack them.

The backends (one module each) implement :class:`Runner`:

- ``hls``: g++ against finn-hlslib and the ``ap_int`` headers (finn's cppsim form);
- ``rtl``: Verilator with the AXI-stream harness (``verilator_build``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fcnseg.atomic import atomic_write_text
from fcnseg.errors import UserError

NODE_FILE = "node.json"
#: bump when the fields of node.json change meaning
NODE_FORMAT = 1
BACKENDS = ("hls", "rtl")


@dataclass(frozen=True)
class StreamSpec:
    """One stream of a node.

    ``tensor``: its tensor name in the HW graph; ``dtype``: finn DataType name (``"UINT8"``);
    ``normal_shape``/``folded_shape``: finn's ``get_normal_*_shape``/``get_folded_*_shape``;
    ``width``: the stream width in bits (``get_instream_width``/``get_outstream_width``).
    """

    tensor: str
    dtype: str
    normal_shape: tuple[int, ...]
    folded_shape: tuple[int, ...]
    width: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StreamSpec:
        return cls(
            tensor=str(d["tensor"]),
            dtype=str(d["dtype"]),
            normal_shape=tuple(int(v) for v in d["normal_shape"]),
            folded_shape=tuple(int(v) for v in d["folded_shape"]),
            width=int(d["width"]),
        )


@dataclass(frozen=True)
class GeneratedNode:
    """What ``node.json`` records of one generated node (see the module docstring).

    ``inputs``/``outputs``: the streams a runner feeds and collects, in port order (``in0``,
    ``in1`` ...; ``out0`` ...). ``static_inputs``: streams the node reads that are not graph
    tensors (an MVAU's decoupled weight stream), as ``port -> file`` (a ``.npy`` in the folder,
    already in the layout the port reads). ``top``: the HLS function / RTL module name.
    ``sources``: the files of the folder that make up the design (relative paths), in build
    order where it matters. ``attrs``: the node's layout-relevant attributes (``depthwise``,
    ``ConvKernelDim``, ``IFMChannels``, ``SIMD``, ``PE`` ...) as JSON values.
    ``expected_cycles``: finn's estimate. ``library``: the versions of the libraries the code
    was generated against (``{"finn-plus": "1.6.1", "finn-rtllib": ..., ...}``).
    """

    name: str
    kind: str
    backend: str
    top: str
    inputs: tuple[StreamSpec, ...]
    outputs: tuple[StreamSpec, ...]
    sources: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    static_inputs: dict[str, str] = field(default_factory=dict)
    expected_cycles: int = 0
    library: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["format"] = NODE_FORMAT
        return data

    def save(self, folder: Path) -> None:
        atomic_write_text(Path(folder) / NODE_FILE, json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> GeneratedNode:
        """Read ``folder/node.json``; one-line :class:`UserError` when it is missing or wrong."""
        path = Path(folder) / NODE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"{folder}: no {NODE_FILE} (not a generated node folder)") from None
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: unreadable ({exc})") from None
        if not isinstance(data, dict) or data.pop("format", None) != NODE_FORMAT:
            raise UserError(f"{path}: not a node description of format {NODE_FORMAT}")
        try:
            node = cls(
                name=str(data["name"]),
                kind=str(data["kind"]),
                backend=str(data["backend"]),
                top=str(data["top"]),
                inputs=tuple(StreamSpec.from_json(s) for s in data["inputs"]),
                outputs=tuple(StreamSpec.from_json(s) for s in data["outputs"]),
                sources=tuple(str(s) for s in data["sources"]),
                attrs=dict(data.get("attrs", {})),
                static_inputs={str(k): str(v) for k, v in data.get("static_inputs", {}).items()},
                expected_cycles=int(data.get("expected_cycles", 0)),
                library={str(k): str(v) for k, v in data.get("library", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path}: malformed node description ({exc})") from None
        if node.backend not in BACKENDS:
            raise UserError(f"{path}: unknown backend {node.backend!r}")
        for rel in (*node.sources, *node.static_inputs.values()):
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise UserError(f"{path}: source {rel!r} is not inside the node folder")
        return node


@dataclass(frozen=True)
class BuildInfo:
    """How a runner's executable came to be: cache key, seconds spent now, whether cached."""

    key: str
    seconds: float
    cached: bool


@dataclass(frozen=True)
class RunResult:
    """One run: outputs (int64, normal shapes, finn layout), wall seconds, clock cycles (RTL;
    None for C++ simulation, which has no clock)."""

    outputs: list[np.ndarray]
    seconds: float
    cycles: int | None


class Runner(Protocol):
    """A built generated node: :func:`build` once (cached by content), then :func:`run`."""

    node: GeneratedNode

    def build(self) -> BuildInfo: ...

    def run(self, inputs: list[np.ndarray]) -> RunResult: ...


def check_inputs(node: GeneratedNode, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The inputs as int64 in their normal shapes; one-line error on a count or size mismatch."""
    if len(inputs) != len(node.inputs):
        raise UserError(f"{node.name}: {len(inputs)} inputs given, the node has {len(node.inputs)}")
    out = []
    for spec, x in zip(node.inputs, inputs, strict=True):
        a = np.asarray(x)
        if a.size != int(np.prod(spec.normal_shape)):
            raise UserError(
                f"{node.name}: input {spec.tensor} has {a.size} values, expected shape "
                f"{spec.normal_shape}"
            )
        out.append(a.astype(np.int64).reshape(spec.normal_shape))
    return out


class LibraryMismatch(UserError):
    """The available library cannot build this node's generated code (e.g. ``Pool_hls`` against
    a finn-hlslib older than the commit finn-plus pins). Backends raise it from ``build()``;
    reports show such a node as *not verified: library version*, never as passed."""


def open_runner(folder: str | Path, cache: Path | None = None) -> Runner:
    """The runner of a generated node folder, by its backend (imported only when needed).

    ``cache``: a root folder for every backend's builds (``<cache>/cppsim``,
    ``<cache>/verilator``); None: each backend's default."""
    node = GeneratedNode.load(folder)
    if node.backend == "hls":
        from fcnseg.hw.verify.hls import HlsRunner

        return HlsRunner(folder, cache=cache / "cppsim" if cache else None)
    from fcnseg.hw.verify.rtl_node import RtlRunner

    return RtlRunner(folder, cache=cache / "verilator" if cache else None)
