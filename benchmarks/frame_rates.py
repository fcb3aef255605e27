"""Benchmark 8: frames/s ESTIMATES per board, frame size and tile choice (issue 15).

For every deployment package with finn estimates — each shipped ``fcn8s-<board>*`` package (the
256x256 tile and the tiles chosen by ``fcnseg compile --frame``) and ``--package`` — and each
frame size of :data:`FRAMES` (Cityscapes at half resolution, 720p, Cityscapes full): the tiles of
the host's exact tiling of one frame (:func:`fcnseg.host.tiling.plan_tiles`, the receptive
field's overlap), the share of computed pixels kept, and three rates from
:mod:`fcnseg.hw.throughput` (finn's cycles per tile and its latency per tile at the preset's
clock, the IODMA port, the pynq backend's batch limit for the package's io):

- ``steady``: the fabric's rate, tiles of successive frames back to back;
- ``in_flight``: what the pynq backend's default depth achieves (its ``DEFAULT_CALLS`` calls of
  as many tiles as its buffers hold, :func:`fcnseg.hw.info.pynq_host`), counting finn's latency
  per call — finn's latency is a pessimistic critical path (layers as if
  none overlapped), so this is a lower bound;
- ``one_frame``: one frame at a time (the next frame's tiles wait for this one's last);
- ``streaming``: the in-flight rate again with the latency of :mod:`fcnseg.hw.latency`'s
  row-by-row model of the streaming pipeline (an estimate, not a bound).

The host's per-frame work and the driver's per-call cost are not counted here (the
``end_to_end`` and ``in_flight`` benchmarks measure them). Reading estimates needs no finn:
this runs on a board. Estimates, not measurements: no bitfile is built on this machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fcnseg.benchmarks.runner import Context, Skipped, headline

#: frame sizes (height, width) the table covers
FRAMES: tuple[tuple[int, int], ...] = ((512, 1024), (720, 1280), (1024, 2048))


def packages(ctx: Context) -> list[tuple[Path, str]]:
    """``(package folder, label)`` of every package measured: the shipped segmentation ones for
    any board, then ``--package`` when it is not one of them (reading estimates needs no
    subject: no torch, no build). A classifier's frames are not tiled for masks: left out."""
    found: list[tuple[Path, str]] = []
    if ctx.packages_dir is not None and Path(ctx.packages_dir).is_dir():
        for path in sorted(Path(ctx.packages_dir).iterdir()):
            if (path / "accelerator.json").is_file() and _segments(path):
                found.append((path, f"shipped {path.name}"))
    shipped = {p.resolve() for p, _ in found}
    given = Path(ctx.package) if ctx.package is not None else None
    if given is not None and (given / "accelerator.json").is_file() and _segments(given):
        if given.resolve() not in shipped:
            found.append((given, f"--package {given.name}"))
    return found


def _segments(path: Path) -> bool:
    """Whether the package at ``path`` is a segmenter (its model card's task)."""
    import json

    card = json.loads((path / "accelerator.json").read_text()).get("model_card", {})
    return card.get("task", "segmentation") == "segmentation"


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def rows_for(path: Path, label: str, frames: tuple[tuple[int, int], ...] = FRAMES) -> list[dict]:
    """One row per frame size for the package at ``path`` (none without estimates)."""
    from fcnseg.host.package import load_package
    from fcnseg.hw.info import frames as frame_figures
    from fcnseg.hw.info import package_fabric, pynq_host
    from fcnseg.hw.latency import package_streaming

    package = load_package(path)
    estimates = package.estimates or {}
    fabric = package_fabric(package)
    if "estimated_fps" not in estimates or fabric is None:
        return []
    host = pynq_host(package.meta["io"])
    streamed = package_streaming(package)
    utilisation = (estimates.get("fit") or {}).get("utilisation") or {}
    rows = []
    for frame in frames:
        f = frame_figures(
            package.geometry,
            frame,
            float(estimates["estimated_fps"]),
            fabric=fabric,
            host=host,
            streaming_cycles=None if streamed is None else streamed.latency_cycles,
        )
        lat, stream = f["latency"], f.get("streaming") or {}
        rows.append(
            {
                "board": package.board,
                "package": label,
                "tile": f"{package.tile[0]}x{package.tile[1]}",
                "frame": f"{frame[0]}x{frame[1]}",
                "tiles_per_frame": f["tiles_per_frame"],
                "overlap_px": f["overlap"],
                "kept_%": round(100 * f["kept_share"], 1),
                "tiles_per_s": round(lat["steady_tiles_per_s"], 1),
                "steady_fps": round(lat["steady_frames_per_s"], 2),
                "in_flight": lat["in_flight"],
                "in_flight_fps": round(lat["frames_per_s"], 2),
                "one_frame_fps": round(lat["one_frame_frames_per_s"], 2),
                "latency_ms": round(lat["latency_ms"], 1),
                "in_flight_for_steady": lat["in_flight_for_steady"],
                "streaming_latency_ms": _rounded(stream.get("latency_ms"), 1),
                "in_flight_fps_streaming": _rounded(stream.get("frames_per_s"), 2),
                "in_flight_for_steady_streaming": stream.get("in_flight_for_steady"),
                "LUT_%": round(100 * float(utilisation.get("LUT", 0.0)), 1),
                "BRAM18_%": round(100 * float(utilisation.get("BRAM_18K", 0.0)), 1),
                "DSP_%": round(100 * float(utilisation.get("DSP", 0.0)), 1),
            }
        )
    return rows


def run(ctx: Context) -> dict[str, Any]:
    rows: list[dict] = []
    notes: list[str] = []
    for path, label in packages(ctx):
        found = rows_for(path, label)
        if not found:
            notes.append(f"{label}: no finn estimates (rates unknown)")
        rows.extend(found)
    if not rows:
        raise Skipped("no package with estimates: " + ("; ".join(notes) or "none found"))
    best: dict[tuple[str, str], dict] = {}
    for r in rows:
        key = (r["board"], r["frame"])
        if key not in best or r["steady_fps"] > best[key]["steady_fps"]:
            best[key] = r
    return {
        "title": "Frames/s ESTIMATES per board, frame size and tile (finn-plus cycles; no bitfile)",
        "method": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "rows": rows,
        "headline": [
            headline(
                f"ESTIMATED frames/s at {frame} on {board} (best tile {r['tile']}, steady; "
                f"{r['in_flight_fps']:g} with {r['in_flight']} tiles in flight)",
                r["steady_fps"],
                "frames/s",
            )
            for (board, frame), r in sorted(best.items())
        ],
        "checks": [],
        "notes": notes
        + [
            "in_flight_fps counts finn's latency per call at the host's default depth; finn's "
            "latency is pessimistic (summed layer cycles), so the true rate at that depth is at "
            "least this. in_flight_for_steady: the depth at which even that latency reaches the "
            "steady rate."
        ],
    }
