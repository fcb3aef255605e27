"""What ``fcnseg segment`` reads: files, folders and globs expanded into jobs with output names.

Each input image becomes a :class:`Job`: its source and the *stem* of its outputs (a relative
path without suffix: ``OUT/STEM.png`` is the mask). A file given by name, or matched by a glob,
has its own stem (``photos/a.jpg`` -> ``a``); files found under a folder keep their path
relative to it (``in/sub/b.png`` -> ``sub/b``), so a tree of inputs gives the same tree of
outputs. Folders are scanned recursively for :data:`IMAGE_SUFFIXES` in sorted order; files named
explicitly may have any suffix Pillow reads.

Same-stem inputs (``a.png`` and ``a.bmp`` in one batch, or ``x/a.png`` and ``y/a.png`` given
by name) would write the same outputs. The first in input order (command line order; within a
folder sorted by name, files of one stem in the order of :data:`IMAGE_SUFFIXES`, so ``a.png``
before ``a.bmp``) keeps the stem; each later one is named by its whole file name instead
(``a.bmp`` -> ``a.bmp.png``, ``a.bmp_overlay.jpg``), then with ``-2``, ``-3``... if even that
is taken. The rule depends only on the inputs and their order, so a re-run names every output
the same way (and skips the finished ones). The same file given twice is one job.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: Suffixes picked up from folders (files named explicitly may have any suffix Pillow reads).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm")


@dataclass
class Job:
    """One input image and the stem (relative path without suffix) of its outputs."""

    source: Path
    stem: Path
    #: the input that kept this job's natural stem, when this one had to be renamed
    renamed_for: Path | None = None


def _scan_order(path: Path) -> tuple[str, str, int, str]:
    """Sorted by name; files of one stem in the order of :data:`IMAGE_SUFFIXES`."""
    return (str(path.parent), path.stem, IMAGE_SUFFIXES.index(path.suffix.lower()), path.name)


def _scan(folder: Path, skip: Path | None) -> list[Path]:
    found = (
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not (skip is not None and p.resolve().is_relative_to(skip))
    )
    return sorted(found, key=_scan_order)


def _candidates(
    inputs: tuple[str, ...], skip: Path | None, errors: list[str]
) -> Iterator[tuple[Path, Path]]:
    """``(source, natural stem)`` of every input file, in input order; unmatched -> errors."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = _scan(path, skip)
            if not found:
                errors.append(f"{path}: no images in this folder")
            for p in found:
                yield p, p.relative_to(path).parent / p.stem
        elif path.exists():
            yield path, Path(path.stem)
        else:
            files = [Path(m) for m in sorted(glob.glob(item, recursive=True)) if Path(m).is_file()]
            if not files:
                errors.append(f"{item}: no such file or folder, and no file matches it")
            for p in files:
                yield p, Path(p.stem)


def _free_stem(stem: Path, source: Path, taken: dict[Path, Path]) -> Path:
    """``stem`` if free, else the source's whole file name, else that name with ``-k``."""
    if stem not in taken:
        return stem
    name = stem.parent / source.name
    k = 2
    while name in taken:
        name = stem.parent / f"{source.name}-{k}"
        k += 1
    return name


def collect_inputs(
    inputs: tuple[str, ...], exclude: Path | None = None
) -> tuple[list[Job], list[str]]:
    """Expand files, folders (recursively, image suffixes) and globs into jobs with distinct
    output stems (module docstring); inputs that match nothing -> one error line each.

    Folder scans skip everything under ``exclude`` (the output folder, so a re-run never reads
    its own masks).
    """
    skip = exclude.resolve() if exclude is not None else None
    errors: list[str] = []
    jobs: list[Job] = []
    taken: dict[Path, Path] = {}  # stem -> source
    seen: set[Path] = set()
    for source, stem in _candidates(inputs, skip, errors):
        identity = source.resolve()
        if identity in seen:
            continue
        seen.add(identity)
        final = _free_stem(stem, source, taken)
        taken[final] = source
        jobs.append(Job(source, final, None if final == stem else taken[stem]))
    return jobs, errors
