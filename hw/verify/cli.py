"""``fcnseg verify``: run the generated hardware of a build or package and hold it against the
simulator (:func:`fcnseg.hw.verify.run.verify`). Exit 0: every verified node and the final
scores exact; 1: a mismatch; 2: a usage or setup error (one line, naming what is missing)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from fcnseg.errors import UserError


def _table(report) -> str:
    rows = [("node", "kind", "status", "build s", "run s/tile", "cycles", "estimate")]
    for n in report.nodes:
        build = "cached" if n.cached else f"{n.build_s:.1f}"
        status = n.status if n.status != "mismatch" else f"MISMATCH {n.mismatch}"
        if n.status == "not verified":
            status = (
                "not verified (library version)"
                if "library version" in n.reason
                else ("not verified")
            )
        cycles = "" if n.cycles is None else str(n.cycles)
        rows.append(
            (n.name, n.kind, status, build, f"{n.run_s:.2f}", cycles, str(n.expected_cycles))
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def _summary(report) -> str:
    kinds = ", ".join(
        f"{k} {v['exact']}/{v['total']}"
        + (f" ({v['not_verified']} not verified)" if v["not_verified"] else "")
        for k, v in report.by_kind().items()
    )
    verdict = "EXACT" if report.ok else "MISMATCH"
    return (
        f"{verdict}: final scores {'equal' if report.final_output_equal else 'DIFFER'}; "
        f"exact per kind: {kinds}; chain {report.seconds_per_tile:.1f} s/tile, "
        f"builds {report.build_seconds:.0f} s"
    )


@click.command("verify")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--image",
    "images",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Verify on the centre tile of this image (repeatable). Default: a bundled photo.",
)
@click.option("--isolated", is_flag=True, help="Also run every node alone on reference inputs.")
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Build cache root (default ~/.cache/fcnseg/{cppsim,verilator}).",
)
@click.option("--jobs", type=int, default=None, help="Parallel builds (default: cores, max 4).")
@click.option(
    "--regenerate",
    is_flag=True,
    help="Generate the hardware with finn even if the package carries it.",
)
@click.option(
    "--hardware-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the generated hardware here (default: a temporary folder).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the full per-node report (JSON) here.",
)
@click.option("--record", is_flag=True, help="Add the result to the package as verification.json.")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
def verify(
    source: Path,
    images: tuple[Path, ...],
    isolated: bool,
    cache: Path | None,
    jobs: int | None,
    regenerate: bool,
    hardware_dir: Path | None,
    report_path: Path | None,
    record: bool,
    as_json: bool,
) -> None:
    """Run the generated HLS (C++) and RTL (Verilator) layers of SOURCE, a build folder or a
    deployment package, chained, and compare every node and the final scores with the
    simulator, exactly."""
    from fcnseg.atomic import atomic_write_text
    from fcnseg.hw.verify import run as vrun
    from fcnseg.hw.verify.generate import resolve_target

    target = resolve_target(source)
    from fcnseg.host.package import load_package

    tile = load_package(target.package_dir).tile
    tiles = [vrun.image_tile(p, tile) for p in images] or None
    if jobs is not None and jobs < 1:
        raise UserError("--jobs must be at least 1")
    report = vrun.verify(
        source,
        tiles,
        cache=cache,
        jobs=jobs or vrun.cpu_jobs(),
        isolated=isolated,
        regenerate=regenerate,
        work_dir=hardware_dir,
        progress=lambda m: click.echo(m, err=True),
    )
    if report_path is not None:
        atomic_write_text(report_path, json.dumps(report.to_json(), indent=1) + "\n")
    if record:
        path = vrun.record(target.package_dir, report)
        click.echo(f"recorded: {path}", err=True)
    click.echo(json.dumps(report.to_json(), indent=1) if as_json else _table(report))
    click.echo(_summary(report))
    if not report.ok:
        raise SystemExit(1)
