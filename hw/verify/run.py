"""``fcnseg verify``: the generated hardware, node by node and chained, against the simulator.

:func:`verify` takes a build folder or deployment package and tiles, gets the generated
hardware (the package's ``hardware/`` folder if it carries one, else generated now with finn:
:mod:`.generate`), builds every node (cached by content: a second run only runs), runs each tile
through the *chained* generated nodes (each fed by the generated nodes before it) and compares
every node's output, in finn's stream layout, and the final integer scores with the simulator
exactly. A node that differs is also run alone on the simulator's inputs, which says whether the
node itself is wrong or only its input was; ``isolated=True`` runs every node alone as well.

A node the available library cannot build is *not verified: library version* — computed by the
simulator in the chain so the run can go on (:mod:`.bridge`), and never counted as passed.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fcnseg.errors import UserError
from fcnseg.hw.verify.chain import HardwareGraph, HardwareNode
from fcnseg.hw.verify.generate import HARDWARE_DIR
from fcnseg.hw.verify.node import BuildInfo, LibraryMismatch
from fcnseg.hw.verify.tensors import simulator_tensors, to_finn_layout

VERIFICATION_FORMAT = "fcnseg-verification"


@dataclass
class Tile:
    """One input tile and a label saying where it came from."""

    label: str
    pixels: np.ndarray

    @property
    def sha256(self) -> str:
        return hashlib.sha256(
            np.ascontiguousarray(self.pixels, dtype=np.uint8).tobytes()
        ).hexdigest()


@dataclass
class NodeReport:
    """One node's verification over all tiles.

    ``status``: ``"exact"``, ``"mismatch"`` or ``"not verified"`` (``reason`` says why).
    ``mismatch``: the first difference (tile, tensor, position, values, count), and
    ``isolated_equal``: whether the node alone, on the simulator's inputs, was exact.
    ``run_s``: mean seconds per tile in the chain; ``cycles``: clock cycles (RTL; last tile).
    """

    name: str
    kind: str
    backend: str
    status: str = "exact"
    reason: str = ""
    build_s: float = 0.0
    cached: bool = False
    run_s: float = 0.0
    cycles: int | None = None
    expected_cycles: int = 0
    mismatch: dict[str, Any] | None = None
    isolated_equal: bool | None = None


@dataclass
class Report:
    """A verification run: per-node results, the final output, timings and versions."""

    source: str
    level: str
    tiles: list[dict[str, str]]
    nodes: list[NodeReport]
    final_output_equal: bool | None
    seconds_per_tile: float
    build_seconds: float
    libraries: dict[str, str]
    hardware: str
    date: str = field(
        default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    )

    @property
    def ok(self) -> bool:
        """No verified node differs and the final scores (if run) are equal."""
        return self.final_output_equal is not False and not any(
            n.status == "mismatch" for n in self.nodes
        )

    def by_kind(self) -> dict[str, dict[str, int]]:
        kinds: dict[str, dict[str, int]] = {}
        for n in self.nodes:
            k = kinds.setdefault(n.kind, {"total": 0, "exact": 0, "mismatch": 0, "not_verified": 0})
            k["total"] += 1
            k[n.status.replace(" ", "_")] += 1
        return kinds

    def to_json(self) -> dict[str, Any]:
        """The full report (every node), for ``--report``."""
        data = asdict(self)
        data["ok"] = self.ok
        data["by_kind"] = self.by_kind()
        return data

    def verification_record(self) -> dict[str, Any]:
        """The summary a package carries as ``verification.json`` (``fcnseg info`` shows it)."""
        from fcnseg import __version__

        return {
            "format": VERIFICATION_FORMAT,
            "format_version": 1,
            "created_by": f"fcnseg {__version__}",
            "date": self.date,
            "level": self.level,
            "tiles": self.tiles,
            "result": "exact" if self.ok else "mismatch",
            "nodes": {
                "total": len(self.nodes),
                "exact": sum(n.status == "exact" for n in self.nodes),
                "mismatch": [n.name for n in self.nodes if n.status == "mismatch"],
                "not_verified": {
                    n.name: portable(n.reason) for n in self.nodes if n.status == "not verified"
                },
            },
            "by_kind": self.by_kind(),
            "final_output_equal": self.final_output_equal,
            "seconds_per_tile": round(self.seconds_per_tile, 2),
            "libraries": self.libraries,
        }


def portable(reason: str) -> str:
    """A reason without this machine's paths (a package travels): ``(/abs/dir)`` groups and
    the local tail from ``; log:`` on (log path, a cached failure's record) dropped,
    ``/abs/dir/file.cpp:31:42:`` shortened to ``file.cpp:31:42:``."""
    text = re.sub(r" \(/[^)]*\)", "", reason)
    text = re.sub(r"; log: .*$", "", text)
    return re.sub(r"/\S*/([^/\s]+:\d+(?::\d+)?:)", r"\1", text)


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_tiles(tile: tuple[int, int]) -> list[Tile]:
    """The tiles verified when none are given: a crop of the bundled photo ``samples/
    astronaut.jpg`` where the source tree has it, else a seeded random tile."""
    sample = Path(__file__).resolve().parents[2] / "samples" / "astronaut.jpg"
    if sample.is_file():
        return [image_tile(sample, tile)]
    pixels = np.random.default_rng(0).integers(0, 256, (*tile, 3), dtype=np.uint8)
    return [Tile("random uint8 tile (seed 0)", pixels)]


def image_tile(path: str | Path, tile: tuple[int, int]) -> Tile:
    """The centre ``tile`` of an image (RGB): a photo smaller than the tile along an axis is
    first scaled up (bilinear, the smallest factor that covers the tile), so a large tile is
    still verified on photo content; one-line error if unreadable."""
    from PIL import Image

    from fcnseg.host.images.decode import load_image

    img = load_image(Path(path))
    h, w = tile
    name = Path(path).name
    if img.shape[0] < h or img.shape[1] < w:
        factor = max(h / img.shape[0], w / img.shape[1])
        size = (max(w, round(img.shape[1] * factor)), max(h, round(img.shape[0] * factor)))
        img = np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR))
        name = f"{name} scaled to {size[0]}x{size[1]}"
    top, left = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    crop = np.ascontiguousarray(img[top : top + h, left : left + w])
    return Tile(f"{name}[{top}:{top + h},{left}:{left + w}]", crop)


def hardware_for(
    target,
    package,
    regenerate: bool,
    work: Path,
    progress: Callable[[str], None],
    cache: Path | None,
) -> HardwareGraph:
    """The package's ``hardware.tar.xz`` when it carries one (and ``regenerate`` is off),
    unpacked once into the cache; else the graph generated now with finn into ``work``."""
    from fcnseg.host.hardware import ARCHIVE_NAME, materialize

    carried = target.package_dir / ARCHIVE_NAME
    if not regenerate and package.hardware is not None:
        progress(f"hardware: {carried} (carried by the package)")
        return HardwareGraph.load(materialize(carried, cache / "hardware" if cache else None))
    try:
        from fcnseg.hw.verify.generate import generate_hardware
    except ImportError as exc:  # pragma: no cover - board environment
        raise UserError(f"generating the hardware needs finn-plus ({exc})") from None
    progress(f"hardware: generating {target.source} into {work}")
    return generate_hardware(target, work)


def verify(
    source: str | Path,
    tiles: Sequence[Tile] | None = None,
    *,
    cache: Path | None = None,
    jobs: int = 1,
    isolated: bool = False,
    regenerate: bool = False,
    nodes: Sequence[str] | None = None,
    work_dir: Path | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> Report:
    """Verify ``source`` (a build folder or package) on ``tiles`` (:func:`default_tiles`).

    ``nodes``: only these nodes, each alone on the simulator's inputs (no chain, no final
    scores): a quick check of a few layers at full size."""
    from fcnseg.host.package import load_package
    from fcnseg.hw.verify.bridge import simulator_bridge
    from fcnseg.hw.verify.generate import resolve_target

    target = resolve_target(source)
    package = load_package(target.package_dir)
    tiles = list(tiles) if tiles else default_tiles(package.tile)
    with tempfile.TemporaryDirectory(prefix="fcnseg-verify-") as scratch:
        work = Path(work_dir) if work_dir else Path(scratch) / HARDWARE_DIR
        graph = hardware_for(target, package, regenerate, work, progress, cache)
        chosen = _chosen(graph, nodes)
        reports = {n.name: NodeReport(n.name, n.kind, n.backend) for n in chosen}
        started = time.perf_counter()
        only = None if nodes is None else set(nodes)
        builds = graph.build(cache, jobs, lambda n, b: progress(_build_line(n, b)), only=only)
        build_seconds = time.perf_counter() - started
        for node in chosen:
            _record_build(reports[node.name], builds[node.name], graph, node)
        bridge = simulator_bridge(package, graph) if graph.unbuildable else None
        final_equal: bool | None = True if nodes is None else None
        chain_seconds = 0.0
        for tile in tiles:
            ref = simulator_tensors(package, tile.pixels)
            if nodes is not None:
                for node in chosen:
                    if node.name not in graph.unbuildable:
                        _compare_alone(reports[node.name], graph, node, ref, tile, len(tiles))
                continue
            run = graph.run(tile.pixels, bridge=bridge)
            chain_seconds += run.seconds
            for node, node_run in zip(graph.nodes, run.nodes, strict=True):
                rep = reports[node.name]
                rep.run_s += node_run.seconds / len(tiles)
                rep.cycles = node_run.cycles
                if node_run.status == "ran":
                    _compare_node(rep, graph, node, run.tensors, ref, tile, isolated)
            final_equal = final_equal and _equal(run.output(graph), _want(graph, graph.output, ref))
            progress(
                f"tile {tile.label}: chain {run.seconds:.1f} s, final scores "
                + ("equal" if final_equal else "DIFFER")
            )
    return Report(
        source=str(source),
        level="isolated" if nodes is not None else "chained+isolated" if isolated else "chained",
        tiles=[{"label": t.label, "sha256": t.sha256} for t in tiles],
        nodes=list(reports.values()),
        final_output_equal=final_equal,
        seconds_per_tile=chain_seconds / len(tiles),
        build_seconds=build_seconds,
        libraries=_libraries(graph),
        hardware=str(graph.root),
    )


def _chosen(graph: HardwareGraph, names: Sequence[str] | None) -> list[HardwareNode]:
    """The nodes named ``names`` (all when None); one-line error for an unknown name."""
    if names is None:
        return list(graph.nodes)
    known = {n.name for n in graph.nodes}
    missing = [n for n in names if n not in known]
    if missing:
        raise UserError(f"no node named {missing[0]} in {graph.root}")
    return [n for n in graph.nodes if n.name in set(names)]


def _compare_alone(
    rep: NodeReport,
    graph: HardwareGraph,
    node: HardwareNode,
    ref: dict[str, np.ndarray],
    tile: Tile,
    n_tiles: int,
) -> None:
    """Run one node alone on the simulator's inputs and compare its outputs."""
    started = time.perf_counter()
    outs, rep.cycles = graph.run_node(node, [_want(graph, t, ref) for t in node.inputs])
    rep.run_s += (time.perf_counter() - started) / n_tiles
    for t, got in zip(node.outputs, outs, strict=True):
        want = _want(graph, t, ref)
        if not _equal(got, want) and rep.mismatch is None:
            rep.status = "mismatch"
            rep.mismatch = {"tile": tile.label, "tensor": t, **first_mismatch(got, want)}
    rep.isolated_equal = rep.status == "exact"


def _build_line(node: HardwareNode, outcome: BuildInfo | LibraryMismatch) -> str:
    if isinstance(outcome, LibraryMismatch):
        return f"build {node.name}: {outcome}"
    how = "cached" if outcome.cached else f"{outcome.seconds:.1f} s"
    return f"build {node.name} ({node.kind}): {how}"


def _record_build(rep: NodeReport, outcome, graph: HardwareGraph, node: HardwareNode) -> None:
    rep.expected_cycles = graph.generated(node).expected_cycles
    if isinstance(outcome, LibraryMismatch):
        text = str(outcome)
        rep.status, rep.reason = "not verified", text.split("not verified: ", 1)[-1]
    else:
        rep.build_s, rep.cached = round(outcome.seconds, 3), outcome.cached


def _want(graph: HardwareGraph, tensor: str, ref: dict[str, np.ndarray]) -> np.ndarray:
    """The simulator's value of ``tensor`` in the layout its stream carries."""
    if tensor not in ref:
        raise UserError(f"the simulator has no tensor {tensor!r}: hardware and package differ")
    layout = graph.layouts().get(tensor)
    value = ref[tensor]
    return value if layout is None else to_finn_layout(layout[0], layout[1], value)


def _equal(got: np.ndarray, want: np.ndarray) -> bool:
    return got.size == want.size and np.array_equal(got.reshape(want.shape), want)


def first_mismatch(got: np.ndarray, want: np.ndarray) -> dict[str, Any] | None:
    """None when equal; else the first differing index, both values and how many differ (or
    the two shapes)."""
    if got.size != want.size:
        return {"shape": list(got.shape), "expected_shape": list(want.shape)}
    got = got.reshape(want.shape)
    diff = np.argwhere(got != want)
    if not len(diff):
        return None
    at = tuple(int(i) for i in diff[0])
    return {
        "position": list(at),
        "value": int(got[at]),
        "expected": int(want[at]),
        "count": int(len(diff)),
    }


def _compare_node(
    rep: NodeReport,
    graph: HardwareGraph,
    node: HardwareNode,
    tensors: dict[str, np.ndarray],
    ref: dict[str, np.ndarray],
    tile: Tile,
    isolated: bool,
) -> None:
    wants = [_want(graph, t, ref) for t in node.outputs]
    bad = [
        (t, tensors[t], w)
        for t, w in zip(node.outputs, wants, strict=True)
        if not _equal(tensors[t], w)
    ]
    if bad and rep.mismatch is None:
        t, got, want = bad[0]
        rep.status = "mismatch"
        rep.mismatch = {"tile": tile.label, "tensor": t, **first_mismatch(got, want)}
    if bad or isolated:
        outs, _ = graph.run_node(node, [_want(graph, t, ref) for t in node.inputs])
        alone = all(_equal(o, w) for o, w in zip(outs, wants, strict=True))
        rep.isolated_equal = alone if rep.isolated_equal is None else rep.isolated_equal and alone
        if not alone and rep.mismatch is None:
            rep.status = "mismatch"
            rep.mismatch = {"tile": tile.label, "isolated": True}


def _libraries(graph: HardwareGraph) -> dict[str, str]:
    """Library versions of the generated code, plus the compilers this run built with."""
    found = dict(graph.info.get("library", {}))
    found.update(toolchain_versions(graph))
    return found


def toolchain_versions(graph: HardwareGraph) -> dict[str, str]:
    """The compilers the nodes were built with: g++ (HLS), Verilator (RTL)."""
    found = {}
    backends = {n.backend for n in graph.nodes}
    if "hls" in backends:
        from fcnseg.hw.verify.hls import compiler, compiler_version

        found["g++"] = compiler_version(compiler())
    if "rtl" in backends:
        from fcnseg.hw.verify.verilator_build import verilator_root, verilator_version

        found["verilator"] = verilator_version(verilator_root())
    return found


def record(package_dir: str | Path, report: Report) -> Path:
    """Add the report's ``verification.json`` to a package (atomically, re-hashed)."""
    import json

    from fcnseg.host.package import VERIFICATION_NAME, add_package_files

    data = json.dumps(report.verification_record(), indent=1) + "\n"
    add_package_files(Path(package_dir), {VERIFICATION_NAME: data.encode()})
    return Path(package_dir) / VERIFICATION_NAME


def cpu_jobs() -> int:
    """Default build parallelism: the cores this process may use, at most 4."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))
