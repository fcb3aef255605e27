"""What ``fcnseg info`` says about a deployment package or a build folder.

The estimate table comes from :mod:`fcnseg.hw.report`; this module adds what a user deciding how
to run the accelerator needs beside it: the classes, the tile, the net and output strides, the
receptive field and the overlap that makes the stitch exact (with a warning naming the smallest
exact tile when the tile is too small for one: :func:`tiling_warning`), whether the package
carries a bitfile (fabric) or is estimate-only (simulator), the generated hardware it carries
and whether and how that was verified against the simulator (``verification.json``), and
frames/s for any frame size from the host's exact tiling plan
(:func:`fcnseg.host.tiling.plan_tiles`), since the accelerator's own rate counts tiles.

numpy-only (the package loader and the tiling plan): ``fcnseg info`` runs on a board, where
finn, onnx and torch are absent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fcnseg.errors import UserError
from fcnseg.hw import report

if TYPE_CHECKING:
    from fcnseg.host.package import Package
    from fcnseg.host.tiling import Geometry
    from fcnseg.hw.throughput import Fabric, Host

#: frame size ``fcnseg info`` gives frames/s for by default (Cityscapes at half resolution).
DEFAULT_FRAME = (512, 1024)


@dataclass(frozen=True)
class Described:
    """A package or build folder: its summary, and its package when there is one."""

    path: Path
    #: finn's estimates (None: a package written without them, e.g. by the API)
    summary: dict[str, Any] | None
    package: Package | None


def find_package_dir(path: Path) -> Path | None:
    """The package folder of ``path``: itself if it is one, ``path/package`` for a build."""
    for candidate in (path, path / "package"):
        if (candidate / "accelerator.json").is_file():
            return candidate
    return None


def describe(path: Path) -> Described:
    """Load the summary of ``path`` (build folder or package) and, if present, its package."""
    from fcnseg.host.package import load_package

    package_dir = find_package_dir(Path(path))
    package = load_package(package_dir) if package_dir is not None else None
    try:
        summary = report.load_summary(path)
    except UserError:
        if package is None:
            raise
        summary = None  # the package still says what it is
    return Described(Path(path), summary, package)


def frames(
    geometry: Geometry,
    frame: tuple[int, int],
    tiles_per_s: float,
    *,
    fabric: Fabric | None = None,
    host: Host | None = None,
    streaming_cycles: int | None = None,
) -> dict[str, Any]:
    """Frames/s for ``frame``-sized images: the tiles of the host's exact tiling of one frame
    (default overlap from the receptive field), at the accelerator's steady ``tiles_per_s``;
    with ``fabric`` also ``latency``: what ``host`` (tiles in flight, per call, its own costs)
    achieves, counting finn's latency per call (:func:`fcnseg.hw.throughput.estimate`), and
    with ``streaming_cycles`` (:mod:`fcnseg.hw.latency`'s row model) ``streaming``: the same
    with that latency instead of finn's pessimistic one."""
    from fcnseg.host.tiling import plan_tiles
    from fcnseg.hw.throughput import Host

    height, width = frame
    if height < 1 or width < 1:
        raise UserError(f"--frame must be positive, got {height} {width}")
    plan = plan_tiles(geometry, geometry.canvas_shape(height, width))
    tiles = len(plan.tiles)
    computed = tiles * geometry.tile[0] * geometry.tile[1]
    out: dict[str, Any] = {
        "frame": [height, width],
        "tile": list(geometry.tile),
        "overlap": plan.overlap,
        "exact": plan.exact,
        "tiles_per_frame": tiles,
        "kept_share": height * width / computed,
        "frames_per_s": tiles_per_s / tiles,
    }
    if fabric is not None:
        out.update(rates(fabric, tiles, host or Host(), streaming_cycles))
    return out


def rates(
    fabric: Fabric, tiles: int, host: Host, streaming_cycles: int | None = None
) -> dict[str, Any]:
    """``latency``: :func:`fcnseg.hw.throughput.estimate` for frames of ``tiles`` tiles with
    finn's latency; ``streaming`` (with ``streaming_cycles``): the same with the row model's."""
    from dataclasses import replace

    from fcnseg.hw.throughput import estimate

    out = {"latency": estimate(fabric, tiles, host)}
    if streaming_cycles is not None:
        streamed = replace(fabric, latency_cycles=int(streaming_cycles))
        out["streaming"] = estimate(streamed, tiles, host)
    return out


def _tile_bytes(io: dict[str, Any]) -> int:
    """Bytes of one tile of an ``io`` record (``{"shape": [1, ...], "dtype": "UINT8"}``),
    packed at the datatype's width as the IODMA moves it."""
    from fcnseg.host.package import dtype_bits

    values = math.prod(int(v) for v in io["shape"][1:])
    return -(-values * dtype_bits(io["dtype"])[0] // 8)


def fabric_of(estimates: dict[str, Any], io: dict[str, Any]) -> Fabric | None:
    """The pipeline for :mod:`fcnseg.hw.throughput` from finn's figures (``max_cycles``,
    ``critical_path_cycles``, ``clock_ns``) and the cycles the board's IODMA port
    (``estimates["board"]["dma_port_width"]``) needs for one tile's input or output (``io``: the
    package's ``{"input": ..., "output": ...}``); None without those estimates."""
    from fcnseg.hw.throughput import Fabric, dma_cycles

    if not all(k in estimates for k in ("max_cycles", "critical_path_cycles", "clock_ns")):
        return None
    port = (estimates.get("board") or {}).get("dma_port_width")
    cycles = 0
    if port:
        for side in ("input", "output"):
            cycles = max(cycles, dma_cycles(_tile_bytes(io[side]), port))
    return Fabric.from_estimates(estimates, dma_cycles=cycles)


def max_batch_of(io: dict[str, Any]) -> int:
    """Tiles per call the pynq backend allows by default for ``io``
    (:func:`fcnseg.host.backends.pynq.tiles_per_call` at its defaults: ``DEFAULT_MAX_BATCH``,
    one of ``DEFAULT_CALLS`` buffer sets of ``DEFAULT_BUFFER_LIMIT``), at least 1."""
    from fcnseg.host.backends.pynq import tiles_per_call

    return max(1, tiles_per_call(_tile_bytes(io["input"]) + _tile_bytes(io["output"])))


def pynq_host(io: dict[str, Any], **given: Any) -> Host:
    """How the pynq backend feeds the fabric by default for ``io``: ``DEFAULT_CALLS`` calls of
    :func:`max_batch_of` tiles in flight, frames overlapped (:mod:`fcnseg.host.backends.pynq`).
    ``given`` (:class:`~fcnseg.hw.throughput.Host` fields; None = default) overrides: an
    ``in_flight`` without ``batch`` splits it into calls up to the batch limit."""
    from fcnseg.host.backends.pynq import DEFAULT_CALLS
    from fcnseg.hw.throughput import Host

    given = {k: v for k, v in given.items() if v is not None}
    batch = max_batch_of(io)
    if "in_flight" in given:
        given.setdefault("batch", None)
    fields = {"in_flight": DEFAULT_CALLS * batch, "batch": batch, "max_batch": batch, **given}
    return Host(**fields)


def package_fabric(package: Package) -> Fabric | None:
    """:func:`fabric_of` the package's estimates and io."""
    return fabric_of(package.estimates, package.meta["io"])


def package_max_batch(package: Package) -> int:
    """:func:`max_batch_of` the package's io."""
    return max_batch_of(package.meta["io"])


def bitfile_of(package: Package) -> str | None:
    """The package's bitstream (relative path) if it has one with its driver settings."""
    files = package.meta.get("files") or {}
    bits = sorted(rel for rel in files if rel.startswith("bitfile/") and rel.endswith(".bit"))
    if bits and "driver/settings.json" in files:
        return bits[0]
    return None


def hardware_facts(package: Package) -> dict[str, Any] | None:
    """The generated hardware the package carries (``hardware/graph.json``): node counts by
    backend and kind, the library versions, part and clock; None without ``hardware/``."""
    graph = package.hardware
    if graph is None:
        return None
    by_backend: dict[str, int] = {}
    by_kind: dict[str, int] = {}
    for node in graph["nodes"]:
        by_backend[node["backend"]] = by_backend.get(node["backend"], 0) + 1
        by_kind[node["kind"]] = by_kind.get(node["kind"], 0) + 1
    return {
        "nodes": len(graph["nodes"]),
        "by_backend": dict(sorted(by_backend.items())),
        "by_kind": dict(sorted(by_kind.items())),
        "library": dict(graph.get("library") or {}),
        "fpgapart": graph.get("fpgapart"),
        "clk_ns": graph.get("clk_ns"),
    }


def verification_facts(package: Package) -> dict[str, Any] | None:
    """How the package's hardware was verified (its checked ``verification.json``), or None."""
    record = package.verification
    if record is None:
        return None
    keep = ("level", "date", "created_by", "result", "final_output_equal", "seconds_per_tile")
    return {
        **{key: record.get(key) for key in keep},
        "tiles": [tile["label"] for tile in record["tiles"]],
        "nodes": record["nodes"],
        "by_kind": record["by_kind"],
        "libraries": record["libraries"],
    }


def tiling_warning(geometry: Geometry) -> str | None:
    """One line when no image larger than the tile can be stitched exactly (a side shorter than
    :attr:`~fcnseg.host.tiling.Geometry.smallest_exact_side`), naming the smallest exact tile;
    None when it can or when the receptive field is unknown (the facts say so already)."""
    side = geometry.smallest_exact_side
    th, tw = geometry.tile
    if side is None or min(th, tw) >= side:
        return None
    return (
        f"tile {th}x{tw} px is smaller than exact tiling needs (exact overlap "
        f"{geometry.default_overlap} px + net stride {geometry.net_stride}): images larger than "
        f"one tile are never stitched exactly; the smallest exact tile is "
        f"{max(th, side)}x{max(tw, side)} px (at least {side} px per side)"
    )


def accelerator_facts(package: Package) -> dict[str, Any]:
    """The package's identity (its manifest sha256, which covers every file), classes, tile,
    strides, receptive field, exact overlap, board and bitfile, the generated hardware and its
    verification, as data."""
    from fcnseg.host.package import MANIFEST_KEY

    geometry = package.geometry
    card = package.card
    return {
        "package": str(package.path),
        "package_sha256": package.meta[MANIFEST_KEY],
        "board": package.board,
        "bitfile": bitfile_of(package),
        "arch": card.arch,
        "classes": list(card.classes),
        "tile": list(geometry.tile),
        "net_stride": geometry.net_stride,
        "output_stride": geometry.output_stride,
        "receptive_field": geometry.receptive_field,
        "exact_overlap": geometry.default_overlap if geometry.receptive_field else None,
        "planned_overlap": geometry.planned_overlap,
        "tiling_warning": tiling_warning(geometry),
        "hardware": hardware_facts(package),
        "verification": verification_facts(package),
    }


_BACKEND_NAMES = {"hls": "HLS C++", "rtl": "RTL"}


def hardware_line(hardware: dict[str, Any] | None) -> str:
    """One line: how many generated nodes by backend, and the library versions."""
    if hardware is None:
        return "no generated hardware sources in this package"
    backends = ", ".join(
        f"{n} {_BACKEND_NAMES.get(b, b)}" for b, n in hardware["by_backend"].items()
    )
    libs = (
        ", ".join(f"{k} {v}" for k, v in hardware["library"].items()) or "library versions unknown"
    )
    return f"{hardware['nodes']} generated nodes ({backends}); {libs}"


def verification_line(record: dict[str, Any] | None) -> str:
    """One line: level, date, tiles, result, counts, and what was not verified and why."""
    if record is None:
        return "not verified"
    nodes = record["nodes"]
    tiles = record["tiles"]
    head = (
        f"{record['level']} on {record['date']}, {len(tiles)} tile{'s' * (len(tiles) != 1)} "
        f"({'; '.join(tiles)}): {record['result']}; {nodes['exact']}/{nodes['total']} nodes exact"
    )
    parts = [head]
    if nodes["mismatch"]:
        parts.append(f"mismatch: {', '.join(nodes['mismatch'])}")
    reasons: dict[str, list[str]] = {}
    for name, why in nodes["not_verified"].items():
        reasons.setdefault(why, []).append(name)
    for why, names in reasons.items():
        parts.append(f"not verified: {', '.join(names)} ({why})")
    parts.append(f"final output {'equal' if record['final_output_equal'] else 'differs'}")
    return "; ".join(parts)


def facts_lines(facts: dict[str, Any]) -> list[str]:
    """``accelerator_facts`` as a few aligned lines of text."""
    tile = f"{facts['tile'][0]}x{facts['tile'][1]} px"
    field = facts["receptive_field"]
    if field is None:
        tiling = "receptive field unknown: the stitch cannot be proved exact"
    else:
        tiling = (
            f"receptive field {field} px; exact overlap {facts['exact_overlap']} px "
            f"(tiles {facts['tile'][0] - facts['planned_overlap']} px apart at most)"
        )
    if facts["bitfile"]:
        runs = f"bitfile {facts['bitfile']}: runs on the fabric (--backend pynq)"
    else:
        runs = "no bitfile (estimate-only build): runs on the simulator; rebuild with Vivado"
    classes = facts["classes"]
    return [
        f"package  {facts['package']} (built for {facts['board']}); {runs}",
        f"sha256   {facts['package_sha256']} (the package's identity: covers every file)",
        f"model    {facts['arch']}, {len(classes)} classes: {', '.join(classes)}",
        f"tile     {tile}; net stride {facts['net_stride']}, output stride "
        f"{facts['output_stride']} (one score per {facts['output_stride']} px)",
        f"tiling   {tiling}",
        *([f"warning  {facts['tiling_warning']}"] if facts.get("tiling_warning") else []),
        f"hardware {hardware_line(facts.get('hardware'))}",
        f"verified {verification_line(facts.get('verification'))}",
    ]


def info_summary(
    described: Described, frame: tuple[int, int], host: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The summary with ``frames`` for ``frame`` and, with a package, its ``accelerator`` facts
    and ``frames["latency"]`` for the pynq backend's default feeding (:func:`pynq_host`) with
    ``host``'s overrides (``in_flight``, ``batch``, ``call_overhead_s``, ``frame_work_s``)."""
    summary = dict(described.summary or {})
    if described.package is not None:
        package = described.package
        geometry = package.geometry
        if described.summary is not None:
            from fcnseg.hw.latency import package_streaming

            feeder = pynq_host(package.meta["io"], **(host or {}))
            streamed = package_streaming(package)
            summary["frames"] = frames(
                geometry,
                frame,
                float(summary["estimated_fps"]),
                fabric=package_fabric(package),
                host=feeder,
                streaming_cycles=None if streamed is None else streamed.latency_cycles,
            )
        summary["accelerator"] = accelerator_facts(described.package)
        # From the package's geometry: also for packages built before compile recorded it.
        summary["tiling_warning"] = summary["accelerator"]["tiling_warning"]
    elif (summary.get("frames") or {}).get("frame") != list(frame):
        raise UserError(
            f"{described.path} has no package/: frames/s for {frame[0]}x{frame[1]} need the "
            "package's model card (the build recorded only "
            f"{'x'.join(map(str, (summary.get('frames') or {}).get('frame', ['?'])))})"
        )
    return summary


def format_info(summary: dict[str, Any]) -> str:
    """What ``fcnseg info`` prints: the accelerator facts, then the estimate table."""
    facts = summary.get("accelerator")
    if facts and "layers" in summary:  # the table says the tiling warning: once is enough
        facts = {**facts, "tiling_warning": None}
    head = [*facts_lines(facts), ""] if facts else []
    if "layers" not in summary:
        return "\n".join([*head, "no finn estimates in this package: cycles, rates unknown"])
    return "\n".join([*head, report.format_table(summary)])
