"""Benchmark 6: hardware ESTIMATES per board preset (finn-plus estimate reports, not measured).

For each preset in :data:`fcnseg.hw.boards.BOARDS`: the subject's package when it is for that
board, else the shipped ``fcn8s-<board>`` installed with fcnseg; when neither exists and
``ctx.compile_missing``, one compiled here from the subject's export with ``fcnseg compile``'s
code, estimate-only. Reading the estimates needs no finn-plus: this runs on a board too.
From its ``accelerator.json`` estimates: FPS on tiles and latency (finn's cycle estimates at
the preset's clock), resources as % of the board's totals; frames/s on 512x1024 frames = tile
FPS / tiles per frame, the tile count from the host's exact tiling plan
(:func:`fcnseg.host.tiling.plan_tiles`, default overlap
counted). Without Vivado no bitfile exists here: these are estimates, not measurements.
"""

from __future__ import annotations

from typing import Any

from fcnseg.benchmarks.runner import Context, headline, ratio
from fcnseg.benchmarks.subjects import build_package_for, default_subject, shipped_package
from fcnseg.errors import UserError

FRAME = (512, 1024)


def _package_for(ctx: Context, board: str) -> tuple[Any, str] | None:
    """The package measured for ``board``: the subject's when it is for that board, else the
    shipped one, else (full runs) one compiled here from the subject's export."""
    from fcnseg.host.package import load_package

    subject = default_subject(ctx)
    if subject.package_dir.exists() and load_package(subject.package_dir).board == board:
        return subject.package_dir, subject.source
    path = shipped_package(ctx, board)
    if path is not None:
        return path, "shipped"
    if ctx.compile_missing and not ctx.quick and subject.export_dir is not None:
        ctx.log(f"bench: no package for {board}: compiling {subject.export_dir}")
        try:
            out = build_package_for(ctx, subject.export_dir, board, ctx.work_dir / f"hw-{board}")
        except ModuleNotFoundError as error:
            raise _NoPackage(f"not shipped; compiling it needs {error.name!r}") from error
        except UserError as error:  # the export cannot be compiled (the user can fix that)
            raise _NoPackage(
                f"not shipped; compiling {subject.export_dir} failed: {error}"
            ) from error
        return out, f"compiled here from {subject.source} export"
    return None


class _NoPackage(Exception):
    """No package for one board, with the reason (a note; the other boards are still read)."""


def run(ctx: Context) -> dict[str, Any]:
    from fcnseg.host.package import load_package
    from fcnseg.host.tiling import plan_tiles
    from fcnseg.hw.boards import BOARDS

    rows = []
    notes = []
    for name, board in BOARDS.items():
        try:
            found = _package_for(ctx, name)
        except _NoPackage as reason:
            notes.append(f"{name}: no package ({reason})")
            continue
        if found is None:
            notes.append(f"{name}: no package (not shipped, not compiled in this run)")
            continue
        path, source = found
        pkg = load_package(path)
        est = pkg.estimates or {}
        if "estimated_fps" not in est:
            notes.append(f"{name}: package {path} has no estimates")
            continue
        geometry = pkg.geometry
        plan = plan_tiles(geometry, geometry.canvas_shape(*FRAME))
        tiles = len(plan.tiles)
        no_overlap = len(plan_tiles(geometry, geometry.canvas_shape(*FRAME), 0).tiles)
        total = est.get("total", {})
        budget = board.budget()
        pct = {
            r: round(100 * float(total.get(r, 0.0)) / budget[r], 1) if budget[r] else None
            for r in ("LUT", "BRAM_18K", "DSP", "URAM")
        }
        fps = float(est["estimated_fps"])
        rows.append(
            {
                "board": name,
                "package": source,
                "tile": f"{pkg.tile[0]}x{pkg.tile[1]}",
                "clock_MHz": round(float(est.get("clock_mhz", 1e3 / board.clock_ns)), 1),
                "est_tile_fps": round(fps, 1),
                "est_latency_ms": round(float(est.get("estimated_latency_ms", 0.0)), 2),
                "tiles_per_512x1024": tiles,
                "overlap_px": plan.overlap,
                "est_frame_fps_512x1024": round(fps / tiles, 2),
                "est_frame_fps_no_overlap_(not_exact)": round(fps / no_overlap, 2),
                "LUT_%": pct["LUT"],
                "BRAM18_%": pct["BRAM_18K"],
                "DSP_%": pct["DSP"],
                "URAM_%": pct["URAM"],
                "fits": (est.get("fit") or {}).get("fits"),
            }
        )
    if not rows:
        from fcnseg.benchmarks.runner import Skipped

        raise Skipped("no package with estimates for any board: " + "; ".join(notes))
    ref = rows[0]["est_tile_fps"]
    for r in rows:
        r["fps_vs_" + rows[0]["board"]] = ratio(r["est_tile_fps"], ref)
    return {
        "title": "Hardware ESTIMATES per board (finn-plus estimate reports; no bitfile built here)",
        "method": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "rows": rows,
        "headline": [
            headline(
                f"ESTIMATED frames/s at 512x1024 on {r['board']}",
                r["est_frame_fps_512x1024"],
                "frames/s",
            )
            for r in rows
        ],
        "checks": [],
        "notes": notes
        + [
            "The exact overlap (overlap_px) is the receptive field's margin on both sides of "
            "each cut, so tiles advance by tile - overlap pixels and a 512x1024 frame takes many "
            "tiles. The no-overlap column (labels not exact at tile seams; the tiling benchmark "
            "measures how many change) bounds what larger tiles or a smaller overlap could give."
        ],
    }
