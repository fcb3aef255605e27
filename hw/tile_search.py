"""``fcnseg compile --frame H W``: the tile shape and folding with the most frames/s for one frame.

A user's frame (say 512x1024) runs as a plan of tiles (:func:`fcnseg.host.tiling.plan_tiles`, at
the exact overlap unless ``--overlap``); the accelerator's rate counts tiles. Small tiles waste
most of what they compute on the overlap (65 tiles of 256x256 keep 12.3% of the pixels), large
ones need more line buffer and more parallelism per tile. The search:

1. **Candidates** (:func:`candidates`): tile heights and widths that are multiples of the net
   stride ``g``, larger than the overlap (or the whole axis), up to the frame's canvas; per axis
   only the smallest size giving each distinct tile count (a larger tile with the same count
   computes more pixels for nothing). Squares and strips alike: every height with every width.
   They are ranked by pixels computed per frame (tiles x tile area, the work the fabric does) and
   the first ``limit`` are evaluated; the rest are listed as pruned.
2. **Evaluate** (:class:`Evaluator`): the export is streamlined once (the flow up to
   ``step_specialize_layers``, :func:`fcnseg.hw.build.specialise_export`); each candidate is that
   graph retiled (:class:`fcnseg.hw.retile.Retile`, proven equal to a fresh flow by
   tests/hw/test_retile.py) and re-folded by finn's own folding steps over a bisection of the
   target rate (:func:`fcnseg.hw.fit.bisect_fps`, from 1 tile/s up to ``clock / (H W)``, one
   pixel per cycle, the most any layer that sees every pixel can do) for the fastest folding that
   fits the board, counting the layers finn does not estimate (:func:`fcnseg.hw.fit.
   unestimated_bounds`, :func:`~fcnseg.hw.fit.skip_fifo_bounds`).
3. **Frames/s** per candidate from :mod:`fcnseg.hw.throughput` (the fabric's ``II`` = finn's
   ``max_cycles`` or the IODMA's cycles per tile, ``L`` = finn's critical path): ``--objective
   throughput`` maximises frames/s with the pynq backend's default tiles in flight
   (:func:`fcnseg.hw.info.pynq_host`), ``latency`` one frame's time alone.
4. **Choose, report** (:func:`format_table`, ``BUILD/report/tile_search.json``), then the caller
   (:func:`compile_for_frame`) re-exports the checkpoint at the winning tile and compiles it with
   the winning target rate, and compares the fresh build's finn figures with the prediction.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fcnseg.errors import UserError
from fcnseg.hw.fit import Fit, bisect_fps
from fcnseg.hw.folding import Estimate, estimate

if TYPE_CHECKING:
    from qonnx.core.modelwrapper import ModelWrapper

    from fcnseg.host.tiling import Geometry
    from fcnseg.hw.build import BuildOptions, BuildResult

OBJECTIVES = ("throughput", "latency")
#: candidates evaluated by default (the rest, ranked by computed pixels per frame, are pruned)
DEFAULT_LIMIT = 16
REPORT_NAME = "tile_search.json"
SEARCH_DIR = "search"
EXPORT_DIR = "export"

Progress = Callable[[str], None]


# --------------------------------------------------------------------------- candidates


def axis_sizes(length: int, g: int, overlap: int) -> list[int]:
    """Tile sizes along an axis of ``length`` px (a multiple of ``g``): multiples of ``g`` larger
    than ``overlap`` up to ``length``, the smallest per distinct tile count (module docstring)."""
    from fcnseg.host.tiling import plan_axis

    best: dict[int, int] = {}
    for size in range(g, length + 1, g):
        if size <= overlap and size != length:
            continue
        count = len(plan_axis(length, size, g, g, min(overlap, size - g)).starts)
        best.setdefault(count, size)
    return sorted(best.values())


@dataclass(frozen=True)
class Plan:
    """One candidate tile's plan for the frame: its counts, independent of the hardware."""

    tile: tuple[int, int]
    tiles_per_frame: int
    kept_share: float
    overlap: int
    exact: bool

    @property
    def computed_px(self) -> int:
        return self.tiles_per_frame * self.tile[0] * self.tile[1]


def frame_plan(geometry: Geometry, frame: tuple[int, int], tile: tuple[int, int], overlap):
    """:class:`Plan` of ``frame`` with tiles of ``tile`` (``overlap`` None: the exact one)."""
    from fcnseg.host.tiling import plan_tiles

    geo = replace(geometry, tile=tuple(tile))
    plan = plan_tiles(geo, geo.canvas_shape(*frame), overlap)
    tiles = len(plan.tiles)
    share = frame[0] * frame[1] / (tiles * tile[0] * tile[1])
    return Plan(tuple(tile), tiles, share, plan.overlap, plan.exact)


def candidates(geometry: Geometry, frame: tuple[int, int], overlap: int | None) -> list[Plan]:
    """Every candidate tile's plan, fewest computed pixels first (module docstring)."""
    height, width = frame
    if height < 1 or width < 1:
        raise UserError(f"--frame must be two positive sizes, got {height} {width}")
    g = geometry.net_stride
    if overlap is not None and overlap < 0:
        raise UserError(f"--overlap must be >= 0, got {overlap}")
    ov = requested_overlap(geometry, overlap)
    canvas = (-(-height // g) * g, -(-width // g) * g)
    if ov >= max(canvas):
        raise UserError(
            f"--overlap {ov} px leaves no tile: a tile must be larger than the overlap and fit "
            f"the {canvas[0]}x{canvas[1]} canvas of a {height}x{width} frame"
        )
    rows, cols = axis_sizes(canvas[0], g, ov), axis_sizes(canvas[1], g, ov)
    plans = [frame_plan(geometry, frame, (h, w), ov) for h in rows for w in cols]
    # plan_tiles caps the overlap at the tile's short side - g on both axes: a strip as high as
    # the frame would get less than the overlap across its columns; one tile needs none.
    plans = [p for p in plans if p.overlap >= ov or p.tiles_per_frame == 1]
    return sorted(plans, key=lambda p: (p.computed_px, -p.tile[0] * p.tile[1], p.tile))


def requested_overlap(geometry: Geometry, overlap: int | None) -> int:
    """The overlap the plans use: ``overlap`` (default the exact one) rounded up to ``g``."""
    g = geometry.net_stride
    ov = geometry.default_overlap if overlap is None else int(overlap)
    return -(-ov // g) * g


# --------------------------------------------------------------------------- evaluation


@dataclass
class Row:
    """One candidate as the table and the JSON show it."""

    plan: Plan
    evaluated: bool
    fits: bool = False
    estimate: Estimate | None = None
    probes: int = 0
    seconds: float = 0.0
    #: :func:`fcnseg.hw.throughput.estimate` for the best fitting folding
    throughput: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def tiles_per_s(self) -> float:
        """Steady tiles/s (``1 / II``, the IODMA counted)."""
        return float(self.throughput.get("latency", {}).get("steady_tiles_per_s", 0.0))

    @property
    def in_flight(self) -> int:
        """Tiles the host keeps in flight in these figures (0 when nothing fits)."""
        return int(self.throughput.get("latency", {}).get("in_flight", 0))

    @property
    def steady_frames_per_s(self) -> float:
        return float(self.throughput.get("latency", {}).get("steady_frames_per_s", 0.0))

    def frames_per_s(self, objective: str, model: str = "streaming") -> float:
        """Frames/s the objective ranks by: with the host's tiles in flight (``throughput``) or
        one frame alone (``latency``), at the row model's latency (``model="streaming"``, else
        finn's when the row model is absent) or finn's (``"latency"``); 0 when nothing fits."""
        if not self.fits:
            return 0.0
        figures = self.throughput.get(model) or self.throughput["latency"]
        key = "frames_per_s" if objective == "throughput" else "one_frame_frames_per_s"
        return float(figures[key])

    def score(self, objective: str) -> float:
        return self.frames_per_s(objective)

    def to_json(self) -> dict[str, Any]:
        est = self.estimate
        return {
            "tile": list(self.plan.tile),
            "tiles_per_frame": self.plan.tiles_per_frame,
            "kept_share": self.plan.kept_share,
            "computed_px": self.plan.computed_px,
            "overlap": self.plan.overlap,
            "exact": self.plan.exact,
            "evaluated": self.evaluated,
            "fits": self.fits,
            "note": self.note,
            "probes": self.probes,
            "seconds": self.seconds,
            "target_fps": est.target_fps if est else None,
            "max_cycles": est.max_cycles if est else None,
            "critical_path_cycles": est.critical_path_cycles if est else None,
            "finn_total": est.finn_total if est else None,
            "fit": est.fit.to_json() if est else None,
            "throughput": self.throughput,
        }


class Evaluator:
    """Retile the one specialised graph and bisect its folding for each candidate tile."""

    def __init__(self, base: ModelWrapper, opts: BuildOptions, scratch: Path) -> None:
        self.base = base
        self.opts = opts
        self.scratch = scratch

    def estimate(self, model: ModelWrapper, target_fps: float) -> Estimate:
        """finn's folding for ``target_fps`` of a retiled ``model``: cycles, resources, fit."""
        return estimate(model, self.opts, self.scratch, target_fps)

    def frames(self, plan: Plan, est: Estimate) -> dict[str, Any]:
        """Frames/s of ``plan``'s tiles per frame for one folding, by the figures ``fcnseg
        compile`` / ``info`` give a package (:func:`fcnseg.hw.build.feeding`,
        :func:`fcnseg.hw.info.rates`): finn's latency in ``latency``, the row model's in
        ``streaming``, at the pynq backend's default tiles in flight."""
        from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer

        from fcnseg.hw.build import feeding
        from fcnseg.hw.info import rates

        cycles = est.folded.analysis(exp_cycles_per_layer)
        figures = {
            "max_cycles": est.max_cycles,
            "critical_path_cycles": est.critical_path_cycles,
            "clock_ns": self.opts.resolved_clock_ns(),
            "board": {"dma_port_width": self.opts.board.dma_port_width},
            "layers": [{"name": name, "cycles": int(c)} for name, c in cycles.items()],
        }
        fabric, host, streaming_cycles = feeding(figures, est.folded)
        return rates(fabric, plan.tiles_per_frame, host, streaming_cycles)

    def evaluate(self, plan: Plan) -> Row:
        """The fastest fitting folding of ``plan.tile`` and its frames/s for the frame."""
        from fcnseg.hw.retile import Retile

        started = time.perf_counter()
        model = self.base.transform(Retile(plan.tile))
        clock_ns = self.opts.resolved_clock_ns()
        seen: dict[float, Estimate] = {}

        def probe(target: float) -> tuple[float, Fit]:
            est = seen[target] = self.estimate(model, target)
            return 1e9 / clock_ns / est.max_cycles, est.fit

        high = max(2.0, 1e9 / clock_ns / (plan.tile[0] * plan.tile[1]))
        best, probes = bisect_fps(probe, high_fps=high)
        row = Row(plan, evaluated=True, probes=len(probes))
        if best is None:
            row.estimate = seen[probes[0].target_fps]
            row.note = "over " + ",".join(row.estimate.fit.over) + " even at 1 tile/s"
        else:
            row.fits = True
            row.estimate = seen[best.target_fps]
            row.throughput = self.frames(plan, row.estimate)
        for est in seen.values():
            est.folded = None  # only the figures are kept
        row.seconds = time.perf_counter() - started
        return row


# --------------------------------------------------------------------------- the search


@dataclass
class Search:
    """What the search tried and chose."""

    frame: tuple[int, int]
    board: str
    objective: str
    overlap: int
    exact_overlap: int
    rows: list[Row]
    winner: Row | None
    seconds: float
    notes: list[str] = field(default_factory=list)
    #: after the real compile: the fresh build's figures against the prediction
    check: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "frame": list(self.frame),
            "board": self.board,
            "objective": self.objective,
            "overlap": self.overlap,
            "exact_overlap": self.exact_overlap,
            "winner": list(self.winner.plan.tile) if self.winner else None,
            "seconds": self.seconds,
            "notes": self.notes,
            "method": "one streamlined graph retiled per candidate (fcnseg.hw.retile), folded by "
            "finn-plus 1.6.1's SetFolding over a bisection of the target rate, estimated by finn "
            "(not synthesised) plus the bounds of fcnseg.hw.fit for layers finn does not "
            "estimate; frames/s from fcnseg.hw.throughput",
            "candidates": [row.to_json() for row in self.rows],
            "check": self.check,
        }


def choose(rows: list[Row], objective: str) -> Row | None:
    """The fitting row with the most frames/s by ``objective`` (ties: fewer computed px, the
    earlier row); None if none fits."""
    fitting = [row for row in rows if row.fits]
    return max(fitting, key=lambda row: row.score(objective), default=None)


def search(
    base: ModelWrapper,
    opts: BuildOptions,
    geometry: Geometry,
    frame: tuple[int, int],
    *,
    overlap: int | None = None,
    objective: str = "throughput",
    limit: int = DEFAULT_LIMIT,
    scratch: Path,
    progress: Progress = lambda message: None,
) -> Search:
    """Evaluate the first ``limit`` candidates (0: all) and choose by ``objective``."""
    if objective not in OBJECTIVES:
        raise UserError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {objective}")
    started = time.perf_counter()
    plans = candidates(geometry, frame, overlap)
    chosen = plans if limit <= 0 else plans[:limit]
    evaluator = Evaluator(base, opts, scratch)
    rows = []
    for k, plan in enumerate(chosen):
        row = evaluator.evaluate(plan)
        rows.append(row)
        progress(
            f"  [{k + 1:2}/{len(chosen)}] tile {plan.tile[0]}x{plan.tile[1]}: "
            + (
                f"{row.score(objective):.2f} frames/s ({row.tiles_per_s:.1f} tiles/s)"
                if row.fits
                else f"does not fit ({row.note})"
            )
            + f", {row.probes} foldings, {row.seconds:.1f} s"
        )
    for plan in plans[len(chosen) :]:
        rows.append(
            Row(plan, evaluated=False, note=f"pruned: beyond the first {limit} by computed px")
        )
    winner = choose(rows, objective)
    notes = []
    if winner is not None and winner.estimate is not None:
        added = winner.estimate.fit.added_note()
        if added:
            notes.append(added)
    notes.append(
        "skip-join FIFOs: bounded by one tile of the skip tensor (finn sizes them only with "
        "Vivado); the shell (DMAs, interconnect) is left to the margin"
    )
    if not all(row.plan.exact for row in rows if row.evaluated):
        notes.append("--overlap below the exact overlap: stitched frames are not exact")
    return Search(
        frame=tuple(frame),
        board=opts.board.name,
        objective=objective,
        overlap=requested_overlap(geometry, overlap),
        exact_overlap=geometry.default_overlap,
        rows=rows,
        winner=winner,
        seconds=time.perf_counter() - started,
        notes=notes,
    )


def format_table(result: Search) -> str:
    """The table of what the search tried (evaluated rows, then a count of the pruned ones)."""
    depth = "alone" if result.objective == "latency" else "@fly"
    head = (
        f"{'tile':>10} {'tiles':>5} {'kept':>6} {'tiles/s':>8} {'steady':>7} {'fly':>4} "
        f"{'finn ' + depth:>10} {'rows ' + depth:>10} {'LUT':>4} {'BRAM':>4} {'DSP':>4}  fits"
    )
    lines = [
        f"tile search for {result.frame[0]}x{result.frame[1]} frames on {result.board} "
        f"(overlap {result.overlap} px, exact {result.exact_overlap}; objective "
        f"{result.objective}; estimates)",
        head,
        "-" * len(head),
    ]
    pruned = 0
    for row in result.rows:
        if not row.evaluated:
            pruned += 1
            continue
        use = row.estimate.fit.utilisation() if row.estimate else {}
        tile = f"{row.plan.tile[0]}x{row.plan.tile[1]}"
        mark = " <- chosen" if row is result.winner else ""
        finn = row.frames_per_s(result.objective, "latency")
        lines.append(
            f"{tile:>10} {row.plan.tiles_per_frame:>5} {row.plan.kept_share:>6.1%} "
            f"{row.tiles_per_s:>8.1f} {row.steady_frames_per_s:>7.2f} {row.in_flight:>4} "
            f"{finn:>10.2f} "
            f"{row.score(result.objective):>10.2f} {use.get('LUT', 0):>4.0%} "
            f"{use.get('BRAM_18K', 0):>4.0%} {use.get('DSP', 0):>4.0%}"
            f"  {'yes' if row.fits else 'no: ' + row.note}{mark}"
        )
    if pruned:
        lines.append(f"({pruned} more candidates pruned: most computed px per frame)")
    lines.append(
        "tiles/s, steady: the pipeline's rate (finn's bottleneck cycles or the IODMA's); fly: "
        "tiles the pynq backend keeps in flight (its calls of as many tiles as its buffers hold); "
        f"finn {depth} / rows {depth}: frames/s "
        + ("one frame at a time" if result.objective == "latency" else "with those in flight")
        + " at finn's pessimistic latency / the row model's (fcnseg.hw.latency; ranked by it)"
    )
    lines += result.notes
    lines.append(f"searched in {result.seconds:.0f} s")
    return "\n".join(lines)


def save(result: Search, out_dir: Path) -> Path:
    """``out_dir/report/tile_search.json`` (atomic)."""
    from fcnseg.atomic import atomic_write_text

    path = Path(out_dir) / "report" / REPORT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result.to_json(), indent=1) + "\n")
    return path


# --------------------------------------------------------------------------- the command


def source_checkpoint(export_dir: Path, card: Any, given: Path | None) -> Path:
    """The checkpoint to re-export: ``given``, else the card's ``source_checkpoint`` found in
    the export folder or its parent with the recorded sha256; one line when there is none."""
    from fcnseg.host.package import sha256_file

    if given is not None:
        if not Path(given).is_file():
            raise UserError(f"--checkpoint {given} not found")
        return Path(given)
    record = card.source_checkpoint or {}
    name = record.get("file")
    if not name:
        raise UserError(
            f"{export_dir}/model.json names no source checkpoint: pass --checkpoint CKPT to "
            "re-export the winning tile"
        )
    for folder in (Path(export_dir), Path(export_dir).parent):
        path = folder / name
        if path.is_file() and sha256_file(path) == record.get("sha256"):
            return path
    raise UserError(
        f"the export's source checkpoint {name} (sha256 {str(record.get('sha256'))[:12]}...) is "
        f"not beside {export_dir}: pass --checkpoint CKPT"
    )


def compare(row: Row, result: BuildResult) -> dict[str, Any]:
    """The fresh build's finn figures against the search's prediction for its tile."""
    est = row.estimate
    summary = result.summary
    fresh_total = {k: float(v) for k, v in (summary.get("total") or {}).items()}
    pairs = {
        "max_cycles": (est.max_cycles, int(summary["max_cycles"])),
        "critical_path_cycles": (est.critical_path_cycles, int(summary["critical_path_cycles"])),
    }
    for resource, value in est.finn_total.items():
        pairs[f"total {resource}"] = (value, fresh_total.get(resource, 0.0))
    differ = {k: list(v) for k, v in pairs.items() if v[0] != v[1]}
    return {
        "equal": not differ,
        "compared": {k: list(v) for k, v in pairs.items()},
        "differ": differ,
    }


def compile_for_frame(
    opts: BuildOptions,
    frame: tuple[int, int],
    *,
    overlap: int | None = None,
    objective: str = "throughput",
    checkpoint: Path | None = None,
    limit: int = DEFAULT_LIMIT,
    progress: Progress | None = None,
) -> tuple[Search, BuildResult]:
    """The whole ``fcnseg compile --frame``: search, report, re-export, compile, compare
    (``progress``: one line per step, default stderr as ``compile_export``'s)."""
    from qonnx.core.modelwrapper import ModelWrapper

    from fcnseg.host.card import CARD_FILE, ModelCard
    from fcnseg.hw.build import _stderr, compile_export, specialise_export

    progress = progress or _stderr
    from fcnseg.quantize.export import export_checkpoint

    if opts.target_fps is not None or opts.folding_file is not None:
        raise UserError("--frame chooses the folding: give no --target-fps or --folding with it")
    if objective not in OBJECTIVES:
        raise UserError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {objective}")
    export_dir = Path(opts.export_dir)
    card = ModelCard.load(export_dir / CARD_FILE)
    geometry = card.geometry()
    candidates(geometry, frame, overlap)  # bad --frame / --overlap: one line before any work
    ckpt = source_checkpoint(export_dir, card, checkpoint)
    out_dir = Path(opts.out_dir).resolve()
    search_opts = replace(opts, out_dir=out_dir / SEARCH_DIR, package=False)
    progress(f"streamlining {export_dir} once for the tile search")
    spec = specialise_export(search_opts, progress=progress)
    progress(f"tile search for {frame[0]}x{frame[1]} frames on {opts.board.name}")
    with tempfile.TemporaryDirectory(dir=search_opts.out_dir) as scratch:
        result = search(
            ModelWrapper(str(spec)),
            search_opts,
            geometry,
            frame,
            overlap=overlap,
            objective=objective,
            limit=limit,
            scratch=Path(scratch),
            progress=progress,
        )
    save(result, out_dir)
    winner = result.winner
    if winner is None:
        save(result, out_dir)
        raise UserError(
            f"no candidate tile fits {opts.board.name} (see {out_dir / 'report' / REPORT_NAME})"
        )
    tile = winner.plan.tile
    progress(f"re-exporting {ckpt} at the chosen tile {tile[0]}x{tile[1]}")
    export_checkpoint(ckpt, tile, out_dir / EXPORT_DIR)
    build = compile_export(
        replace(
            opts,
            export_dir=out_dir / EXPORT_DIR,
            out_dir=out_dir,
            # finn folds for an integer target (make_config rounds): the same folding
            target_fps=float(max(1, round(winner.estimate.target_fps))),
            frame=tuple(frame),
        ),
        progress=progress,
    )
    result.check = compare(winner, build)
    for name, (predicted, built) in result.check["differ"].items():
        progress(f"warning: {name} of the build {built} differs from the search's {predicted}")
    save(result, out_dir)
    return result, build
