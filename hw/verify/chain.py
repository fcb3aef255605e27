"""The generated hardware of a whole graph, chained: each node fed by the nodes before it.

A *hardware folder* (``BUILD/hardware/`` or a package's ``hardware/``) holds one generated node
folder per HW layer (:mod:`.node`) and ``graph.json``, which wires them: the graph's input and
output tensors and, per node in dataflow order, its folder and the tensors it reads and writes.
:class:`HardwareGraph` loads it, builds every node (C++ or Verilator, cached by content) and runs
one tile through the chain, keeping every tensor, so each node's output can be held against the
simulator. Nothing here needs finn: the emulated board (``.venv-board``) runs the same code.

A node whose design the available library cannot build (:class:`~.node.LibraryMismatch`, e.g.
``Pool_hls`` against an older finn-hlslib) can be *bridged*: a caller-supplied function computes
its outputs instead (the simulator's layer, :func:`fcnseg.hw.verify.bridge.simulator_bridge`),
and the run says which nodes were bridged, so no report can mistake them for verified ones.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fcnseg.atomic import atomic_write_text
from fcnseg.errors import UserError
from fcnseg.hw.verify.node import BuildInfo, GeneratedNode, LibraryMismatch, Runner, open_runner

GRAPH_FILE = "graph.json"
FORMAT_NAME = "fcnseg-hardware"
FORMAT_VERSION = 1

#: computes a bridged node's outputs from its inputs (finn layouts, normal shapes)
Bridge = Callable[["HardwareNode", list[np.ndarray]], list[np.ndarray]]


@dataclass(frozen=True)
class HardwareNode:
    """One node of ``graph.json``: its generated folder (relative) and tensor wiring."""

    name: str
    kind: str
    backend: str
    folder: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "backend": self.backend,
            "folder": self.folder,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
        }


@dataclass
class NodeRun:
    """One node of one chained run: ``status`` is ``"ran"`` or ``"bridged"``."""

    name: str
    status: str
    seconds: float
    cycles: int | None


@dataclass
class ChainRun:
    """Every tensor of one chained run (finn layouts) and what each node did."""

    tensors: dict[str, np.ndarray]
    nodes: list[NodeRun]
    seconds: float

    def output(self, graph: HardwareGraph) -> np.ndarray:
        return self.tensors[graph.output]


@dataclass
class HardwareGraph:
    """A loaded hardware folder (see the module docstring)."""

    root: Path
    nodes: list[HardwareNode]
    input: str
    output: str
    input_shape: tuple[int, ...]
    info: dict[str, Any] = field(default_factory=dict)
    _runners: dict[str, Runner] = field(default_factory=dict, repr=False)
    _unbuildable: dict[str, LibraryMismatch] = field(default_factory=dict, repr=False)
    _layouts: dict[str, tuple[dict[str, Any], str]] | None = field(default=None, repr=False)

    # ---------------------------------------------------------------- files
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "input": self.input,
            "output": self.output,
            "input_shape": list(self.input_shape),
            **self.info,
            "nodes": [n.to_json() for n in self.nodes],
        }

    def save(self) -> None:
        atomic_write_text(self.root / GRAPH_FILE, json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> HardwareGraph:
        """Read and check ``folder/graph.json``: format, node folders, and that every tensor a
        node reads is the graph input or written by an earlier node."""
        root = Path(folder)
        path = root / GRAPH_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"{root}: no {GRAPH_FILE} (not a hardware folder)") from None
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: unreadable ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise UserError(f"{path}: not an {FORMAT_NAME} description")
        if data.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{path}: format version {data.get('format_version')} unsupported")
        try:
            nodes = [
                HardwareNode(
                    name=str(n["name"]),
                    kind=str(n["kind"]),
                    backend=str(n["backend"]),
                    folder=str(n["folder"]),
                    inputs=tuple(str(t) for t in n["inputs"]),
                    outputs=tuple(str(t) for t in n["outputs"]),
                )
                for n in data["nodes"]
            ]
            fixed = {"format", "format_version", "input", "output", "input_shape", "nodes"}
            graph = cls(
                root=root,
                nodes=nodes,
                input=str(data["input"]),
                output=str(data["output"]),
                input_shape=tuple(int(v) for v in data["input_shape"]),
                info={k: v for k, v in data.items() if k not in fixed},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path}: malformed ({type(exc).__name__}: {exc})") from None
        graph._check_wiring(path)
        return graph

    def _check_wiring(self, where: Path) -> None:
        known = {self.input}
        for node in self.nodes:
            rel = Path(node.folder)
            if rel.is_absolute() or ".." in rel.parts or not (self.root / rel).is_dir():
                raise UserError(f"{where}: node {node.name}: folder {node.folder!r} missing")
            missing = [t for t in node.inputs if t not in known]
            if missing:
                raise UserError(f"{where}: node {node.name} reads {missing[0]} before it is made")
            known.update(node.outputs)
        if self.output not in known:
            raise UserError(f"{where}: no node writes the graph output {self.output}")

    def generated(self, node: HardwareNode) -> GeneratedNode:
        return GeneratedNode.load(self.root / node.folder)

    def layouts(self) -> dict[str, tuple[dict[str, Any], str]]:
        """Tensor -> (attributes, kind) of the node writing it: what decides the order its
        stream carries values in (``fcnseg.hw.verify.tensors.to_finn_layout``)."""
        if self._layouts is None:
            self._layouts = {}
            for node in self.nodes:
                attrs = self.generated(node).attrs
                self._layouts.update({t: (attrs, node.kind) for t in node.outputs})
        return self._layouts

    # ---------------------------------------------------------------- build
    def build(
        self,
        cache: Path | None = None,
        jobs: int = 1,
        progress: Callable[[HardwareNode, BuildInfo | LibraryMismatch], None] | None = None,
        only: set[str] | None = None,
    ) -> dict[str, BuildInfo | LibraryMismatch]:
        """Build every node, or those named in ``only`` (``jobs`` at a time; builds are
        compiler processes). A node the library cannot build is recorded, not raised; any
        other failure raises."""
        chosen = [n for n in self.nodes if only is None or n.name in only]

        def one(node: HardwareNode) -> tuple[Runner, BuildInfo | LibraryMismatch]:
            runner = open_runner(self.root / node.folder, cache)
            try:
                return runner, runner.build()
            except LibraryMismatch as exc:
                return runner, exc

        results: dict[str, BuildInfo | LibraryMismatch] = {}
        with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
            for node, (runner, outcome) in zip(chosen, pool.map(one, chosen), strict=True):
                if isinstance(outcome, LibraryMismatch):
                    self._unbuildable[node.name] = outcome
                else:
                    self._runners[node.name] = runner
                results[node.name] = outcome
                if progress:
                    progress(node, outcome)
        return results

    @property
    def unbuildable(self) -> dict[str, LibraryMismatch]:
        """Nodes :meth:`build` found the library cannot build, with the reason."""
        return dict(self._unbuildable)

    # ---------------------------------------------------------------- run
    def run(
        self,
        tile: np.ndarray,
        *,
        bridge: Bridge | None = None,
        progress: Callable[[HardwareNode, NodeRun], None] | None = None,
    ) -> ChainRun:
        """One tile (uint8, ``(H, W, 3)`` or the input's normal shape) through the chain.

        Needs :meth:`build` first. Unbuildable nodes go through ``bridge``; without one they
        are a one-line error."""
        if len(self._runners) + len(self._unbuildable) < len(self.nodes):
            raise UserError(f"{self.root}: build() the hardware before running it")
        x = np.asarray(tile)
        if x.size != int(np.prod(self.input_shape)):
            raise UserError(f"the tile has shape {x.shape}; the hardware takes {self.input_shape}")
        tensors: dict[str, np.ndarray] = {self.input: x.astype(np.int64).reshape(self.input_shape)}
        runs: list[NodeRun] = []
        started = time.perf_counter()
        for node in self.nodes:
            runs.append(self._run_node(node, tensors, bridge))
            if progress:
                progress(node, runs[-1])
        return ChainRun(tensors, runs, time.perf_counter() - started)

    def run_node(
        self, node: HardwareNode, inputs: list[np.ndarray]
    ) -> tuple[list[np.ndarray], int | None]:
        """One built node on given inputs (finn layouts): its outputs and cycles."""
        runner = self._runners.get(node.name)
        if runner is None:
            raise UserError(f"node {node.name} was not built ({self._why_not(node)})")
        result = runner.run(inputs)
        return result.outputs, result.cycles

    def _why_not(self, node: HardwareNode) -> str:
        exc = self._unbuildable.get(node.name)
        return str(exc) if exc else "call build() first"

    def _run_node(
        self, node: HardwareNode, tensors: dict[str, np.ndarray], bridge: Bridge | None
    ) -> NodeRun:
        inputs = [tensors[t] for t in node.inputs]
        started = time.perf_counter()
        if node.name in self._unbuildable:
            if bridge is None:
                raise UserError(f"node {node.name}: {self._unbuildable[node.name]}")
            outputs, cycles, status = bridge(node, inputs), None, "bridged"
        else:
            outputs, cycles = self.run_node(node, inputs)
            status = "ran"
        if len(outputs) != len(node.outputs):
            raise UserError(f"node {node.name} gave {len(outputs)} outputs for {len(node.outputs)}")
        tensors.update(zip(node.outputs, outputs, strict=True))
        return NodeRun(node.name, status, time.perf_counter() - started, cycles)
