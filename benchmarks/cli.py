"""``fcnseg bench``: run the benchmark suite and write ``OUT/results.json`` + ``OUT/RESULTS.md``.

Imports stay light (click, the runner); each benchmark imports what it needs when it runs.
Exit status 1 when a benchmark failed a check or raised (its figures and message are still
written); skipped benchmarks (a dependency missing here) are not failures, and each is listed
with its reason. The subjects come from the options or the installed package (never from the
location of this file), so ``fcnseg bench --package DIR`` runs from a wheel on a board too.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import click

from fcnseg.benchmarks import BENCHMARKS


@click.command()
@click.option(
    "-o",
    "--output",
    default="bench",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for results.json and RESULTS.md.",
)
@click.option(
    "--only",
    "only",
    multiple=True,
    help=f"Run only this benchmark (repeatable): {', '.join(BENCHMARKS)}.",
)
@click.option(
    "--reps",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Repetitions per measurement (the slow references run at most 3).",
)
@click.option(
    "--quick", is_flag=True, help="Tiny net and inputs, 1 repetition: a smoke run, not figures."
)
@click.option("--backend", default="sim", show_default=True, help="sim | pynq (host benchmarks).")
@click.option(
    "--package",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Deployment package to measure (default: the shipped fcn8s-pynq-z2 installed with "
    "fcnseg). Works without torch/finn: the numpy-only benchmarks run, the others say why not.",
)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Quantized checkpoint the package was exported from: the Brevitas and onnxruntime "
    "references and the accuracy benchmark (float twin looked up beside it).",
)
@click.option(
    "--samples",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of sample photos (astronaut.jpg is the timing photo); default: synthetic images.",
)
@click.option(
    "--tile",
    "tiles",
    nargs=2,
    type=click.IntRange(min=32),
    multiple=True,
    metavar="H W",
    help="Also time the simulator at this tile size (repeatable; random weights, needs torch "
    "and finn-plus; multiples of 32).",
)
def bench(
    output: str,
    only: tuple[str, ...],
    reps: int,
    quick: bool,
    backend: str,
    package: Path | None,
    checkpoint: Path | None,
    samples: Path | None,
    tiles: tuple[tuple[int, int], ...],
) -> None:
    """Run the benchmarks and write OUT/results.json and OUT/RESULTS.md."""
    from fcnseg.benchmarks import BENCHMARKS
    from fcnseg.benchmarks.runner import Context, run_benchmarks
    from fcnseg.benchmarks.writers import write_results
    from fcnseg.errors import UserError

    if package is not None and not (package / "accelerator.json").is_file():
        hint = (
            " (a build folder? its package is in package/)"
            if (package / "package").is_dir()
            else ""
        )
        raise UserError(f"--package {package}: no accelerator.json there{hint}")
    bad = [f"{h}x{w}" for h, w in tiles if h % 32 or w % 32]
    if bad:
        raise UserError(f"--tile must be multiples of 32 (the net's stride), got {', '.join(bad)}")
    work = Path(tempfile.mkdtemp(prefix="fcnseg-bench-"))
    ctx = Context(
        reps=1 if quick else reps,
        quick=quick,
        backend=backend,
        work_dir=work,
        package=package,
        checkpoint=checkpoint,
        samples_dir=samples,
        tiles=tuple(tiles),
    )
    try:
        results = run_benchmarks(only or list(BENCHMARKS), ctx)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    json_path, md_path = write_results(results, Path(output))
    statuses = {n: r["status"] for n, r in results["benchmarks"].items()}
    click.echo(
        f"wrote {json_path} and {md_path}: " + ", ".join(f"{n} {s}" for n, s in statuses.items())
    )
    for name, r in results["benchmarks"].items():
        if r["status"] != "ok":
            click.echo(f"  {name} {r['status']}: {r.get('reason', '')}")
    if any(s in ("failed", "error") for s in statuses.values()):
        raise SystemExit(1)
