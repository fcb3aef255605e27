"""``fcnseg bench``: run the benchmark suite and write ``OUT/results.json`` + ``OUT/RESULTS.md``.

Imports stay light (click, the runner); each benchmark imports what it needs when it runs.
Exit status 1 when a benchmark failed a check or raised (its figures and message are still
written); skipped benchmarks (a dependency missing here) are not failures.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import click


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
    help="Run only this benchmark (repeatable): simulator, seed_claim, postprocess, tiling, "
    "end_to_end, estimates, accuracy.",
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
def bench(output: str, only: tuple[str, ...], reps: int, quick: bool, backend: str) -> None:
    """Run the benchmarks and write OUT/results.json and OUT/RESULTS.md."""
    from fcnseg.benchmarks import BENCHMARKS
    from fcnseg.benchmarks.runner import Context, run_benchmarks
    from fcnseg.benchmarks.writers import write_results

    work = Path(tempfile.mkdtemp(prefix="fcnseg-bench-"))
    ctx = Context(reps=1 if quick else reps, quick=quick, backend=backend, work_dir=work)
    try:
        results = run_benchmarks(only or list(BENCHMARKS), ctx)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    json_path, md_path = write_results(results, Path(output))
    statuses = {n: r["status"] for n, r in results["benchmarks"].items()}
    click.echo(
        f"wrote {json_path} and {md_path}: " + ", ".join(f"{n} {s}" for n, s in statuses.items())
    )
    if any(s in ("failed", "error") for s in statuses.values()):
        raise SystemExit(1)
