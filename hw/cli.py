"""``fcnseg compile``, ``fcnseg info`` and ``fcnseg upgrade``: the hw stage's commands.

Heavy imports (finn, qonnx, onnx) happen inside the ``compile`` command, after its up-front
checks (:mod:`fcnseg.hw.compat`, :mod:`fcnseg.hw.preflight`) have turned a missing extra, a
malformed ``XILINX_VIVADO``, absent finn deps or a wrong ``.onnx`` into one line. This module
imports click and the standard library only; ``fcnseg info`` adds numpy (the package loader and
the tiling plan), so it runs on a board.
"""

from __future__ import annotations

from pathlib import Path

import click

from fcnseg.hw.boards import BOARDS, Board, get_board


def _board(ctx: click.Context, param: click.Parameter, value: str) -> Board:
    """``--board``: a preset by name (any spelling), or a one-line error listing the boards."""
    return get_board(value)


@click.command("compile")
@click.argument("export_dir", type=click.Path(exists=True, path_type=Path), metavar="EXPORT")
@click.option(
    "--board",
    default="pynq-z2",
    show_default=True,
    callback=_board,
    metavar="[" + "|".join(BOARDS) + "]",
    help="Board preset (part, clock, resource budget).",
)
@click.option(
    "--target-fps",
    type=float,
    default=None,
    help="Fold for this many tiles/s (finn's target_fps counts tiles) [default: the board's: "
    + ", ".join(f"{b.name} {b.default_target_fps}" for b in BOARDS.values())
    + "].",
)
@click.option(
    "--folding",
    "folding_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="finn folding JSON (node name -> PE/SIMD/...), instead of --target-fps.",
)
@click.option("--clock-ns", type=float, default=None, help="Clock period [default: board's, 10].")
@click.option(
    "--margin", type=float, default=0.1, show_default=True, help="Budget share kept free."
)
@click.option(
    "--vivado/--no-vivado",
    default=None,
    help="Run the IP/bitfile steps [default: iff XILINX_VIVADO is set].",
)
@click.option(
    "--frame",
    nargs=2,
    type=int,
    default=None,
    metavar="H W",
    help="Search the tile shape and folding with the most frames/s for HxW frames (table and "
    "BUILD_DIR/report/tile_search.json), re-export the checkpoint at that tile and compile it.",
)
@click.option(
    "--overlap",
    type=int,
    default=None,
    metavar="PX",
    help="With --frame: tile overlap in px [default: the exact one from the receptive field].",
)
@click.option(
    "--objective",
    type=click.Choice(["throughput", "latency"]),
    default="throughput",
    show_default=True,
    help="With --frame: most frames/s with the host's tiles in flight, or least time per frame.",
)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="With --frame: checkpoint to re-export [default: the export's source_checkpoint].",
)
@click.option(
    "--search-limit",
    type=click.IntRange(min=0),
    default=16,
    show_default=True,
    help="With --frame: candidates evaluated, fewest computed px per frame first (0: all).",
)
@click.option(
    "--runtime-weights",
    is_flag=True,
    help="Weights and thresholds writable at run time over AXI-lite (standalone thresholds), "
    "so `fcnseg swap-weights` can put a retrained net on the same bitfile.",
)
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    metavar="BUILD_DIR",
    help="Build folder: reports, log, intermediate models and package/.",
)
def compile_(
    export_dir: Path,
    board: Board,
    target_fps: float | None,
    folding_file: Path | None,
    clock_ns: float | None,
    margin: float,
    vivado: bool | None,
    frame: tuple[int, int] | None,
    overlap: int | None,
    objective: str,
    checkpoint: Path | None,
    search_limit: int,
    runtime_weights: bool,
    out_dir: Path,
) -> None:
    """Compile EXPORT (the folder `fcnseg export` wrote, or its model.onnx) with finn-plus into
    BUILD_DIR (-o).

    Streamlines, converts to HW layers, folds to --target-fps (or --folding), estimates, checks
    the board budget (re-folding lower until it fits; with room to spare, says how fast a fold
    still fits) and writes reports and BUILD_DIR/package/. Without Vivado it stops after the
    estimates. With --frame H W it first searches the tile (squares and strips, multiples of the
    net stride) and folding for the most frames/s of HxW frames (fcnseg.hw.tile_search).
    """
    from fcnseg.hw.compat import (
        check_dependencies,
        check_finn_deps,
        check_vivado_install,
        has_vivado,
    )

    check_dependencies()  # before anything imports onnx or finn
    check_vivado_install()
    if (has_vivado() if vivado is None else vivado) and has_vivado():
        check_finn_deps(board)  # the Vivado steps come after 20-70 s of estimate steps
    from fcnseg.errors import UserError
    from fcnseg.hw.build import BuildOptions, compile_export
    from fcnseg.hw.preflight import resolve_export
    from fcnseg.hw.report import format_table

    export_dir = resolve_export(export_dir)
    opts = BuildOptions(
        export_dir=export_dir,
        out_dir=out_dir,
        board=board,
        target_fps=target_fps,
        folding_file=folding_file,
        clock_ns=clock_ns,
        margin=margin,
        vivado=vivado,
        standalone_thresholds=runtime_weights,
        runtime_weights=runtime_weights,
    )
    if frame is None:
        if overlap is not None or checkpoint is not None:
            raise UserError("--overlap and --checkpoint go with --frame H W")
        result = compile_export(opts)
    else:
        from fcnseg.hw.tile_search import compile_for_frame
        from fcnseg.hw.tile_search import format_table as search_table

        searched, result = compile_for_frame(
            opts,
            (int(frame[0]), int(frame[1])),
            overlap=overlap,
            objective=objective,
            checkpoint=checkpoint,
            limit=search_limit,
        )
        click.echo(search_table(searched))
        click.echo("")
    click.echo(format_table(result.summary))
    click.echo(f"build: {result.out_dir}  ({result.summary['build_seconds']:.0f} s)")
    if result.package_dir is not None:
        click.echo(f"package: {result.package_dir}")


@click.command("info")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--frame",
    nargs=2,
    type=int,
    default=(512, 1024),
    show_default=True,
    metavar="H W",
    help="Frame size (px) to give frames/s for, from the exact tiling of one frame.",
)
@click.option(
    "--in-flight",
    type=click.IntRange(min=1),
    default=None,
    metavar="D",
    help="Tiles the host keeps submitted, for the latency-counting frames/s estimate [default: "
    "the pynq backend's, 4 calls of as many tiles as its buffers hold: 64 for a 256x256 tile].",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=None,
    metavar="B",
    help="Tiles per DMA call (default: --in-flight, up to the pynq backend's batch limit); "
    "D/B calls are in flight.",
)
@click.option(
    "--call-overhead-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Host time per DMA call (driver, cache flush); 0: not counted.",
)
@click.option(
    "--host-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Host work per frame (decode, upsample + argmax, encode) beside the fabric; 0: not "
    "counted.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info(
    path: Path,
    frame: tuple[int, int],
    in_flight: int | None,
    batch: int | None,
    call_overhead_ms: float,
    host_ms: float,
    as_json: bool,
) -> None:
    """Print what a deployment package or a build folder holds and its estimates.

    The accelerator's classes, tile, strides, receptive field, exact overlap and bitfile; the
    generated hardware the package carries and whether and how it was verified; the per-layer
    cycles per tile and resources; tiles/s, the board fit, and frames/s for --frame, both at the
    steady-state rate and (estimates, fcnseg.hw.throughput) counting finn's latency per call with
    --in-flight tiles in flight, one frame at a time, and the host's costs.
    """
    import json

    from fcnseg.hw.info import describe, format_info, info_summary

    host = {
        "in_flight": in_flight,
        "batch": batch,
        "call_overhead_s": call_overhead_ms / 1e3,
        "frame_work_s": host_ms / 1e3,
    }
    summary = info_summary(describe(path), (int(frame[0]), int(frame[1])), host)
    click.echo(json.dumps(summary, indent=2) if as_json else format_info(summary))


@click.command("upgrade")
@click.argument("package", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    metavar="NEW",
    help="Write the upgraded package to NEW (a new folder) [default: upgrade PACKAGE in place].",
)
def upgrade(package: Path, out_dir: Path | None) -> None:
    """Upgrade PACKAGE, a deployment package of an older format version, to the current one.

    Keeps its files (bitfile, driver settings, generated hardware, verification record): the
    package is verified, the datatypes the new version declares are read from its own
    hw_graph.onnx, and the result is loaded with every check before it replaces anything
    (fcnseg.hw.upgrade). Needs the compile extra (qonnx, finn-plus) to read the graph.
    """
    from fcnseg.hw.upgrade import upgrade_line, upgrade_package

    click.echo(upgrade_line(upgrade_package(package, out_dir)))
