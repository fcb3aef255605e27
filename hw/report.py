"""Build reports: per-layer cycles, resources and folding; tiles/s, latency and the bottleneck.

Collected from finn's ``report/estimate_*.json`` into one summary dict, written as
``report/fcnseg_summary.json`` (+ the same table as text in ``fcnseg_summary.txt``) and stored in
the package's ``estimates``, so ``fcnseg info`` can print it again from a build folder or a
package without finn. Pure Python (json, math): importable on a board.

Units. The accelerator has one fixed input, the *tile*; everything finn estimates is per tile.
The summary keeps finn's key names (``estimated_fps``, ``target_fps``, ``max_cycles``: format 1
of the package, read by the board runtime), whose "frames" are tiles; :data:`UNITS`, stored
with every new summary and filled in by :func:`load_summary` for older ones, says so, and the
printed table speaks in tiles/s and cycles per tile. Frames/s appear only next to a frame size
(``frames``: the host's exact tiling of e.g. 512x1024 frames into tiles).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fcnseg.atomic import atomic_write_text
from fcnseg.errors import UserError
from fcnseg.hw.fit import added_note

SUMMARY_JSON = "fcnseg_summary.json"
SUMMARY_TXT = "fcnseg_summary.txt"
_RES = ("LUT", "BRAM_18K", "URAM", "DSP")

#: what the summary's numbers count (finn's names, whose "frames" are the accelerator's tiles).
UNITS: dict[str, str] = {
    "estimated_fps": "tiles/s",
    "target_fps": "tiles/s",
    "max_cycles": "cycles per tile (the bottleneck layer's; sets the rate)",
    "critical_path_cycles": "cycles for one tile from input to output",
    "estimated_latency_ms": "ms for one tile from input to output",
    "layers.cycles": "cycles per tile",
    "headroom.tiles_per_s": "tiles/s",
    "frames.frames_per_s": "frames/s of frames.frame (H, W) px, tiled exactly",
}


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else {}


def summarize(
    report_dir: Path,
    *,
    folding: Mapping[str, Mapping[str, Any]],
    board: Mapping[str, Any],
    clock_ns: float,
    fit: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One summary dict from finn's estimate reports in ``report_dir``.

    ``folding``: final node name -> {PE, SIMD, ...}. Tiles/s and latency are recomputed at
    ``clock_ns`` from the cycle estimates (finn's own figures use the same formula).
    """
    cycles: dict[str, int] = _load(report_dir / "estimate_layer_cycles.json")
    resources: dict[str, dict] = _load(report_dir / "estimate_layer_resources.json")
    perf: dict[str, Any] = _load(report_dir / "estimate_network_performance.json")
    if not cycles or not perf:
        raise UserError(f"no finn estimate reports in {report_dir}")
    layers = []
    for name, c in cycles.items():
        res = resources.get(name, {})
        fold = folding.get(name, {})
        layers.append(
            {
                "name": name,
                "cycles": int(c),
                **{r: float(res.get(r, 0.0)) for r in _RES},
                "PE": fold.get("PE"),
                "SIMD": fold.get("SIMD"),
            }
        )
    max_cycles = int(perf["max_cycles"])
    fps = 1e9 / clock_ns / max_cycles
    total = {r: float(resources.get("total", {}).get(r, 0.0)) for r in _RES}
    return {
        "board": dict(board),
        "clock_ns": clock_ns,
        "clock_mhz": 1e3 / clock_ns,
        "estimated_fps": fps,
        "estimated_latency_ms": int(perf["critical_path_cycles"]) * clock_ns * 1e-6,
        "max_cycles": max_cycles,
        "critical_path_cycles": int(perf["critical_path_cycles"]),
        "bottleneck": perf.get("max_cycles_node_name"),
        "total": total,
        "layers": layers,
        "fit": dict(fit) if fit else None,
        "units": dict(UNITS),
        **dict(extra or {}),
    }


def _layer_lines(summary: Mapping[str, Any]) -> list[str]:
    head = f"{'layer':34} {'cycles/tile':>11} {'PE':>4} {'SIMD':>4} {'LUT':>8} {'BRAM18':>7}"
    head += f" {'URAM':>5} {'DSP':>5}"
    lines = [head, "-" * len(head)]
    for layer in summary["layers"]:
        mark = " <- bottleneck" if layer["name"] == summary.get("bottleneck") else ""
        pe = "" if layer.get("PE") is None else str(layer["PE"])
        simd = "" if layer.get("SIMD") is None else str(layer["SIMD"])
        lines.append(
            f"{layer['name'][:34]:34} {layer['cycles']:>11} {pe:>4} {simd:>4} "
            f"{layer['LUT']:>8.0f} {layer['BRAM_18K']:>7.0f} {layer['URAM']:>5.0f} "
            f"{layer['DSP']:>5.0f}{mark}"
        )
    t = summary["total"]
    lines.append("-" * len(head))
    lines.append(
        f"{'total':34} {'':>11} {'':>4} {'':>4} {t['LUT']:>8.0f} {t['BRAM_18K']:>7.0f} "
        f"{t['URAM']:>5.0f} {t['DSP']:>5.0f}"
    )
    return lines


def tile_of(summary: Mapping[str, Any]) -> tuple[int, int] | None:
    """The accelerator's tile (H, W) a summary's rates count, if it records one."""
    tile = summary.get("tile") or (summary.get("frames") or {}).get("tile")
    return (int(tile[0]), int(tile[1])) if tile else None


def rate_line(summary: Mapping[str, Any]) -> str:
    """Tiles/s, latency per tile and cycles per tile at the clock, and the bottleneck."""
    tile = tile_of(summary)
    of = f" of {tile[0]}x{tile[1]} px" if tile else ""
    return (
        f"estimated {summary['estimated_fps']:.1f} tiles/s{of}, latency "
        f"{summary['estimated_latency_ms']:.2f} ms per tile at {summary['clock_mhz']:.0f} MHz "
        f"({summary['max_cycles']} cycles per tile in the bottleneck {summary.get('bottleneck')})"
    )


def fit_lines(summary: Mapping[str, Any]) -> list[str]:
    """The board verdict, a re-fold to fit, and the room for a faster fold (when known)."""
    lines = []
    board = summary.get("board") or {}
    fit = summary.get("fit")
    if fit:
        util = ", ".join(f"{r} {u:.0%}" for r, u in fit["utilisation"].items())
        verdict = "fits" if fit["fits"] else "DOES NOT FIT"
        lines.append(
            f"board {board.get('name')} ({board.get('part')}): {verdict} with a "
            f"{fit['margin']:.0%} margin; utilisation {util}"
        )
        note = added_note(fit.get("added"))
        if note:
            lines.append(note)
    refold = summary.get("refold")
    if refold:
        lines.append(
            f"re-folded to fit: target {refold['requested_fps']:g} tiles/s did not fit, "
            f"reached {refold['reached_fps']:.1f} tiles/s after {len(refold['probes'])} foldings"
        )
    headroom = summary.get("headroom")
    if headroom and fit:
        used = ", ".join(
            f"{r} {fit['utilisation'][r]:.0%}"
            for r in ("LUT", "BRAM_18K")
            if r in fit["utilisation"]
        )
        then = ", ".join(
            f"{r} {headroom['utilisation'][r]:.0%}"
            for r in ("LUT", "BRAM_18K")
            if r in headroom["utilisation"]
        )
        lines.append(
            f"{used}: a faster fold fits (estimated, {headroom['probes']} re-foldings): "
            f"{headroom['tiles_per_s']:.1f} tiles/s at {then} "
            f"(try --target-fps {headroom['suggested_target_fps']})"
        )
    return lines


def frames_line(frames: Mapping[str, Any]) -> str:
    """Frames/s for one frame size from the tiles its exact tiling takes."""
    exact = "exact" if frames.get("exact", True) else "NOT exact"
    kept = (
        f", keeps {frames['kept_share']:.1%} of the computed px" if "kept_share" in frames else ""
    )
    rate = frames["frames_per_s"]
    return (
        f"{frames['frame'][0]}x{frames['frame'][1]} frames: {frames['tiles_per_frame']} "
        f"tile{'s' * (frames['tiles_per_frame'] != 1)} "
        f"of {frames['tile'][0]}x{frames['tile'][1]} (overlap {frames['overlap']} px, {exact}"
        f"{kept}) -> {rate:.{2 if rate < 10 else 1}f} frames/s"
    )


def streaming_line(streaming: dict[str, Any]) -> str:
    """``frames["streaming"]`` as text: the in-flight rate with the row model's latency."""
    need = streaming["in_flight_for_steady"]
    return (
        f"estimate {streaming['frames_per_s']:.2f} frames/s with {streaming['in_flight']} tiles "
        f"in flight and the streaming latency {streaming['latency_ms']:.1f} ms per tile (the "
        f"row-by-row model, fcnseg.hw.latency), {streaming['one_frame_frames_per_s']:.2f} one "
        "frame at a time" + (f"; {need} tiles in flight reach the steady rate" if need else "")
    )


def latency_lines(
    latency: dict[str, Any] | None, streaming: dict[str, Any] | None = None
) -> list[str]:
    """``frames["latency"]`` as text: steady state, the host's in-flight depth, one frame; with
    ``frames["streaming"]`` the same depth at the row model's latency."""
    if latency is None:
        return []
    bound = {"fabric": "reaches the steady rate", "latency": "latency-bound", "host": "host-bound"}
    need = latency["in_flight_for_steady"]
    host = (
        f"host work {latency['host_frame_ms']:g} ms/frame"
        if latency["host_frame_ms"]
        else "host work per frame not counted (fcnseg info --host-ms)"
    )
    overhead = (
        f"{latency['call_overhead_ms']:g} ms driver overhead per call"
        if latency["call_overhead_ms"]
        else "driver overhead per call not counted (fcnseg info --call-overhead-ms)"
    )
    return [
        f"estimate {latency['steady_frames_per_s']:.2f} frames/s steady state "
        f"({latency['steady_tiles_per_s']:.1f} tiles/s, one per {latency['interval_ms']:.2f} ms);"
        f" latency {latency['latency_ms']:.1f} ms per tile (finn's critical path, pessimistic)",
        f"estimate {latency['frames_per_s']:.2f} frames/s with {latency['in_flight']} tiles in "
        f"flight ({latency['calls_in_flight']} call{'s' * (latency['calls_in_flight'] != 1)} of "
        f"{latency['tiles_per_call']} tiles, {latency['call_ms']:.1f} ms each; batch limit "
        f"{latency['max_batch']}): {latency['tiles_per_s']:.1f} tiles/s, "
        f"{bound[latency['bound']]}"
        + (
            f"; {need} tiles in flight ({need // latency['tiles_per_call']} calls of "
            f"{latency['tiles_per_call']}) reach the steady rate"
            if need
            else ""
        ),
        f"estimate {latency['one_frame_frames_per_s']:.2f} frames/s one frame at a time "
        f"({latency['frame_alone_ms']:.0f} ms per frame); {host}; {overhead}",
    ] + ([streaming_line(streaming)] if streaming else [])


def format_table(summary: Mapping[str, Any]) -> str:
    """The per-layer table and the headline figures, as terminal text."""
    lines = [*_layer_lines(summary), "", rate_line(summary), *fit_lines(summary)]
    if summary.get("tiling_warning"):
        lines.append(f"warning: {summary['tiling_warning']}")
    if summary.get("frames"):
        lines.append(frames_line(summary["frames"]))
        frames = summary["frames"]
        lines.extend(latency_lines(frames.get("latency"), frames.get("streaming")))
    return "\n".join(lines)


def write_reports(summary: Mapping[str, Any], report_dir: Path) -> None:
    """``fcnseg_summary.json`` and ``.txt`` in ``report_dir``, each written atomically (``info``
    may read them while a re-build rewrites them)."""
    atomic_write_text(report_dir / SUMMARY_JSON, json.dumps(summary, indent=2))
    atomic_write_text(report_dir / SUMMARY_TXT, format_table(summary) + "\n")


def load_summary(path: Path) -> dict[str, Any]:
    """The summary of a build folder (``report/fcnseg_summary.json``) or a deployment package
    (``accelerator.json`` -> ``estimates``)."""
    path = Path(path)
    for candidate in (path / "report" / SUMMARY_JSON, path / SUMMARY_JSON):
        if candidate.exists():
            return _with_units(json.loads(candidate.read_text()))
    accel = path / "accelerator.json"
    if accel.exists():
        estimates = json.loads(accel.read_text()).get("estimates") or {}
        if "layers" in estimates:
            return _with_units(estimates)
        raise UserError(f"{accel} carries no estimate reports")
    if (path / "package" / "accelerator.json").exists():
        return load_summary(path / "package")
    raise UserError(f"{path} is neither an fcnseg build folder nor a deployment package")


def _with_units(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` with :data:`UNITS` (summaries written before they were recorded lack them;
    the numbers meant the same then)."""
    return {**summary, "units": {**UNITS, **(summary.get("units") or {})}}
