"""Benchmark: the seed's classifier, one pass vs 36 crops as finn-ESTIMATED accelerator time.

Part 2 of :mod:`.classify` (whose docstring says what is measured and why): finn-plus cycle
estimates of the classification package's 384 accelerator on one tile and on 36, and of the same
checkpoint exported at 224x224 and compiled here (estimate-only) at two targets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fcnseg.benchmarks.classify import (
    CHECKPOINT,
    IMAGE,
    STEP,
    classifier_checkpoint,
    load_classifier,
    method,
)
from fcnseg.benchmarks.runner import Context, headline


def _timing(estimates: dict[str, Any]) -> tuple[float, float]:
    """``(interval_ms, latency_ms)`` from a package's finn estimates."""
    clock_mhz = float(estimates.get("clock_mhz") or 1e3 / float(estimates["clock_ns"]))
    interval = float(estimates["max_cycles"]) / (clock_mhz * 1e3)
    latency = float(estimates.get("estimated_latency_ms") or interval)
    return interval, latency


def _estimate_row(
    what: str, pkg: Any, tiles: int, one_pass: tuple[float, float] | None
) -> dict[str, Any]:
    """One row of part 2: ``tiles`` tiles in a row on ``pkg``'s accelerator (finn's cycles);
    ``one_pass``: the 384 accelerator's ``(interval, latency)`` ms the ratios divide by."""
    est = pkg.estimates or {}
    interval, latency = _timing(est)
    alone = latency + (tiles - 1) * interval
    total = est.get("total", {})
    return {
        "what": what,
        "tile": f"{pkg.tile[0]}x{pkg.tile[1]}",
        "tiles": tiles,
        "est_interval_ms": round(interval, 3),
        "est_latency_ms": round(latency, 2),
        "est_steady_ms": round(tiles * interval, 2),
        "est_alone_ms": round(alone, 2),
        "steady_vs_one_pass": None
        if one_pass is None
        else round(tiles * interval / one_pass[0], 2),
        "alone_vs_one_pass": None if one_pass is None else round(alone / one_pass[1], 2),
        "target_fps": est.get("target_fps"),
        "est_tiles_per_s": round(float(est.get("estimated_fps", 0.0)), 1),
        "LUT": total.get("LUT"),
        "BRAM_18K": total.get("BRAM_18K"),
        "fits": (est.get("fit") or {}).get("fits"),
    }


def build_224(ctx: Context, checkpoint: Path, board: str, targets: dict[str, float | None]) -> dict:
    """The checkpoint exported at 224x224 and compiled estimate-only for ``board`` once per
    ``targets`` entry (name -> target tiles/s, None: the board's default): name -> package dir.
    Kept in ``ctx.cache`` for the rest of the run."""
    from fcnseg.benchmarks.subjects import build_package_for
    from fcnseg.quantize.export import export_checkpoint

    key = ("classify-224", str(checkpoint), board, tuple(sorted(targets.items(), key=str)))
    if key not in ctx.cache:
        root = ctx.work_dir / "classify-224"
        export_dir = root / "export"
        if not (export_dir / "model.onnx").is_file():
            export_checkpoint(checkpoint, (224, 224), export_dir)
        built = {}
        for name, target in targets.items():
            ctx.log(f"bench: compiling the classifier at 224x224 for {board} ({name})")
            built[name] = build_package_for(ctx, export_dir, board, root / name, target)
        ctx.cache[key] = built
    return ctx.cache[key]


def estimates_part(ctx: Context, package: Path) -> tuple[list[dict], list[dict], list[str]]:
    """Part 2: rows, headlines, notes."""
    from fcnseg.host.package import load_package

    pkg = load_package(package)
    if not (pkg.estimates or {}).get("max_cycles"):
        return [], [], [f"package {package} has no finn estimates: part 2 not measured"]
    cells = (IMAGE - pkg.card.window) // STEP + 1
    positions = cells * cells
    interval, latency = _timing(pkg.estimates)
    rows = [
        _estimate_row(f"{pkg.tile[0]} accelerator, one pass ({positions} positions)", pkg, 1, None),
        _estimate_row(
            f"{pkg.tile[0]} accelerator, {positions} crops (a tile each)",
            pkg,
            positions,
            (interval, latency),
        ),
    ]
    notes: list[str] = []
    checkpoint = classifier_checkpoint(ctx, package)
    if ctx.quick or not ctx.compile_missing:
        notes.append("224x224 builds not compiled (quick run or compiling disabled)")
    elif checkpoint is None:
        notes.append(
            f"224x224 builds not compiled: no checkpoint with the model card's sha256 "
            f"(--checkpoint, or {CHECKPOINT} under the current folder)"
        )
    else:
        fps = float(pkg.estimates["estimated_fps"])
        targets = {"default-target": None, "pixel-rate-target": fps * (IMAGE / 224) ** 2}
        try:
            built = build_224(ctx, checkpoint, pkg.board, targets)
        except ModuleNotFoundError as error:
            notes.append(f"224x224 builds not compiled: {error.name!r} is not installed here")
            built = {}
        for name, path in built.items():
            small = load_package(path)
            target = small.estimates.get("target_fps")
            rows.append(
                _estimate_row(
                    f"224 build ({name}, {target:.0f} tiles/s asked), {positions} crops",
                    small,
                    positions,
                    (interval, latency),
                )
            )
    heads = [
        headline(
            f"ESTIMATED one pass vs {positions} crops, {r['what']}", r["steady_vs_one_pass"], "x"
        )
        for r in rows[1:]
    ]
    notes.append(
        f"finn's numbers for the {pkg.tile[0]} accelerator: interval {interval:.2f} ms, latency "
        f"{latency:.1f} ms (critical path, pessimistic); steady = tiles x interval, alone = "
        "latency + (tiles - 1) x interval. steady_vs_one_pass divides by the one-pass interval."
    )
    return rows, heads, notes


def run(ctx: Context) -> dict[str, Any]:
    """Part 2: one pass vs 36 crops as finn-estimated accelerator time."""
    package, _ = load_classifier(ctx)
    rows, heads, notes = estimates_part(ctx, package)
    return {
        "title": "The seed's classifier: one pass vs 36 crops, ESTIMATED accelerator time (finn)",
        "method": method(2),
        "rows": rows,
        "headline": heads,
        "checks": [],
        "notes": notes,
    }
