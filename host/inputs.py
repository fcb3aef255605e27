"""What ``fcnseg segment`` reads: files, folders and globs expanded into jobs with output names.

Each input image becomes a :class:`Job`: its source and the *stem* of its outputs (a relative
path without suffix: ``OUT/STEM.png`` is the mask). A file given by name, or matched by a glob,
has its own stem (``photos/a.jpg`` -> ``a``); files found under a folder keep their path
relative to it (``in/sub/b.png`` -> ``sub/b``), so a tree of inputs gives the same tree of
outputs. Folders are scanned recursively for :data:`IMAGE_SUFFIXES` in sorted order; files named
explicitly may have any suffix Pillow reads.

**Multi-frame files** (animated GIF, WebP and PNG, multi-page TIFF, MPO;
:mod:`fcnseg.host.images.frames`). ``frames="first"`` (``--frames first``, the default): one job,
frame 0, whose :attr:`Job.note` says so (``a.gif: frame 0 of 3 used (--frames all for every
frame)``). ``frames="all"``: one job per frame, named ``STEM_fNNN`` (``a_f000``, ``a_f001``, ...;
zero-padded to three digits, more when the count needs them, so names sort in frame order); a file
of one frame keeps its plain stem. Every job records ``{"used": [k], "of": n}``
(:meth:`Job.frames_record`).

Same-stem inputs (``a.png`` and ``a.bmp`` in one batch, or ``x/a.png`` and ``y/a.png`` given
by name, or ``a_f000.png`` beside the first frame of ``a.gif``) would write the same outputs. The
first in input order (command line order; within a folder sorted by name, files of one stem in
the order of :data:`IMAGE_SUFFIXES`, so ``a.png`` before ``a.bmp``; frames in frame order) keeps
the stem; each later one is named by its whole file name instead (``a.bmp`` -> ``a.bmp.png``,
``a.bmp_overlay.jpg``; a frame ``a.gif_f000.png``), then with ``-2``, ``-3``... if even that is
taken. The rule depends only on the inputs and their order, so a re-run names every output the
same way (and skips the finished ones). The same file given twice is one job (one per frame).

**Every input accounted for.** An input that never becomes a job is an :class:`InputError`, one
line each, and the batch goes on with the rest: a name that matches nothing, a symbolic link
loop, a broken link (``x: broken symbolic link (to TARGET)``), a folder or path that cannot be
read (``x: permission denied``), a folder with no images, something that is not a file (a pipe,
a device), a frame count the file cannot hold. Folder scans follow symbolic links to folders,
list each folder once (a second link to a folder already listed adds nothing), report a link
back to a folder that contains it as a loop instead of following it, and report each unreadable
sub-folder, loop, and broken link named like an image. A link back to a folder being scanned,
and a looping link not named like an image, lose no image: they are notes (:attr:`InputError.note`),
said but not counted as failed inputs. Recursive globs (``**``) walk the same
way, so no tree of links makes a scan hang. A file that can be listed but not read becomes a job,
and fails as one line when decoded (``x: permission denied``).
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from fcnseg.errors import UserError
    from fcnseg.host.images.frames import FrameSource
    from fcnseg.host.images.rows import RowReader

#: Suffixes picked up from folders (files named explicitly may have any suffix Pillow reads).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm")
#: ``frames`` policies of :func:`collect_inputs` (``--frames``).
FRAMES = ("first", "all")


class InputError(str):
    """An input that never became a job: the line ``"PATH: reason"`` itself (printed as is,
    compared as a string), with its :attr:`path` and :attr:`reason` for a summary."""

    path: str
    reason: str
    #: True for what a folder scan met that is no input of its own (a link back to a folder
    #: being scanned, a looping link not named like an image): said, but no input failed
    note: bool

    def __new__(cls, path: str | os.PathLike[str], reason: str, note: bool = False) -> InputError:
        line = super().__new__(cls, f"{path}: {reason}")
        line.path, line.reason, line.note = str(path), reason, note
        return line

    @classmethod
    def of(cls, path: str | os.PathLike[str], error: UserError) -> InputError:
        """The :class:`InputError` of a one-line :class:`UserError` about ``path``."""
        text, prefix = str(error), f"{path}: "
        return cls(path, text[len(prefix) :] if text.startswith(prefix) else text)


def _error(
    path: str | os.PathLike[str], key: str, note: bool = False, **fields: object
) -> InputError:
    from fcnseg.host.images.messages import MESSAGES

    return InputError(path, MESSAGES[key].format(**fields), note=note)


@dataclass
class Job:
    """One input image (or one frame of it) and the stem of its outputs."""

    source: Path
    stem: Path
    #: the input that kept this job's natural stem, when this one had to be renamed
    renamed_for: Path | None = None
    #: the frame this job segments under ``--frames all``; None: the file's first (or only) one
    frame: int | None = None
    #: how many frames the file has (None: unknown, Pillow cannot open it; decoding says why)
    frames: int | None = 1
    #: decodes the frames of a multi-frame file in order, shared by its frame jobs
    reader: FrameSource | None = None

    @property
    def note(self) -> str | None:
        """The line saying which frame a multi-frame file gave under ``--frames first``."""
        if self.frame is not None or not self.frames or self.frames == 1:
            return None
        return f"{self.source}: frame 0 of {self.frames} used (--frames all for every frame)"

    def frames_record(self) -> dict[str, object] | None:
        """``{"used": [k], "of": n}`` for the summary (None when the count is unknown)."""
        if self.frames is None:
            return None
        return {"used": [self.frame or 0], "of": self.frames}

    def load(self, max_pixels: int) -> np.ndarray:
        """The job's image (its frame) as upright ``(H, W, 3) uint8`` RGB; one line on failure."""
        if self.reader is not None and self.frame is not None:
            return self.reader.load(self.frame, max_pixels)
        from fcnseg.host.images.decode import load_image

        return load_image(self.source, max_pixels, self.frame)

    def rows(self, max_pixels: int) -> RowReader:
        """A row reader over the job's image (:func:`~fcnseg.host.images.rows.open_rows`). A
        frame job's frame is decoded whole (only a file's first image can be read band by band:
        PPM/PGM hold one, an APNG's first frame is its PNG image)."""
        from fcnseg.host.images.rows import DecodedRows, open_rows

        if self.frame is None:
            return open_rows(self.source, max_pixels)
        from fcnseg.host.images.decode import decode

        return DecodedRows(decode(self.source, max_pixels, self.frame))


# --- what a path is ----------------------------------------------------------------------------


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _stat_error(path: Path, error: OSError) -> InputError | None:
    """The line for a path ``os.stat`` refused; None when it simply does not exist."""
    if error.errno == errno.ELOOP:
        return _error(path, "link_loop")
    if isinstance(error, PermissionError):
        return _error(path, "permission")
    if os.path.islink(path):
        return _error(path, "link_broken", target=_link_target(path))
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return None
    return _error(path, "unreadable", reason=error.strerror or error)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


# --- walking folders ---------------------------------------------------------------------------


def _listed(folder: Path, errors: list[InputError]) -> list[os.DirEntry[str]] | None:
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as error:
        errors.append(_stat_error(folder, error) or _error(folder, "missing"))
        return None


def _walk(
    folder: Path, errors: list[InputError], wanted: Callable[[Path], bool], skip: Path | None
) -> Iterator[Path]:
    """Regular files under ``folder``, depth first in name order, following links to folders
    and listing each folder once. Unreadable folders -> ``errors``; so are links that loop or
    lead nowhere, if ``wanted(path)`` says the link could have been an input. Never recursive,
    so no depth overflows the stack."""
    top = os.stat(folder)
    listed = {(top.st_dev, top.st_ino)}
    stack = [(folder, frozenset(listed))]
    while stack:
        here, ancestors = stack.pop()
        entries = _listed(here, errors)
        below: list[tuple[Path, frozenset[tuple[int, int]]]] = []
        for entry in entries or ():
            path = Path(entry.path)
            try:
                info = entry.stat()  # follows links
            except PermissionError:  # a folder we may list but not enter: said once
                errors.append(_error(here, "permission"))
                break
            except OSError as error:
                problem = _stat_error(path, error)
                if problem is not None and wanted(path):
                    if not _is_image_name(path):  # a looping link, no image of its own
                        problem = InputError(problem.path, problem.reason, note=True)
                    errors.append(problem)
                continue
            if stat.S_ISDIR(info.st_mode):
                key = (info.st_dev, info.st_ino)
                if key in ancestors:
                    if wanted(path):
                        target = _link_target(path) if entry.is_symlink() else "a mount of it"
                        # every image below it is scanned through the folder itself
                        errors.append(_error(path, "link_cycle", note=True, target=target))
                elif key not in listed and not (
                    skip is not None and path.resolve().is_relative_to(skip)
                ):
                    listed.add(key)
                    below.append((path, ancestors | {key}))
            elif stat.S_ISREG(info.st_mode):
                yield path
        stack.extend(reversed(below))


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _scan_order(path: Path) -> tuple[str, str, int, str]:
    """Sorted by name; files of one stem in the order of :data:`IMAGE_SUFFIXES`."""
    return (str(path.parent), path.stem, IMAGE_SUFFIXES.index(path.suffix.lower()), path.name)


def _scan_wants(path: Path) -> bool:
    """A folder scan reports a link that loops, and a broken one named like an image."""
    return _is_image_name(path) or os.path.isdir(path) or _loops(path)


def _loops(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as error:
        return error.errno == errno.ELOOP
    return False


def _scan(folder: Path, skip: Path | None, errors: list[InputError]) -> list[Path]:
    found = (
        p
        for p in _walk(folder, errors, _scan_wants, skip)
        if _is_image_name(p) and not (skip is not None and p.resolve().is_relative_to(skip))
    )
    return sorted(found, key=_scan_order)


# --- globs -------------------------------------------------------------------------------------


def _component(name: str, pattern: str) -> bool:
    """glob's rule for one name: ``fnmatch``, and a hidden name only by a pattern saying so."""
    return fnmatch.fnmatchcase(name, pattern) and (
        not name.startswith(".") or pattern.startswith(".")
    )


def _matches(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Does the relative path ``parts`` match ``pattern`` (``**``: zero or more folders)?"""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        for k in range(len(parts) + 1):
            if _matches(parts[k:], pattern[1:]):
                return True
            if k < len(parts) and parts[k].startswith("."):
                return False  # ** does not enter hidden folders
        return False
    return bool(parts) and _component(parts[0], pattern[0]) and _matches(parts[1:], pattern[1:])


def _matcher(root: Path, pattern: tuple[str, ...]) -> Callable[[Path], bool]:
    """Does a path under ``root`` match the rest of a pattern, from its ``**`` on?"""
    return lambda path: _matches(path.relative_to(root).parts, pattern)


def _glob(item: str, errors: list[InputError]) -> list[Path]:
    """What the pattern ``item`` names, sorted. Python's ``glob(recursive=True)`` follows links
    into loops (two links to ``.`` in one folder: 2**40 paths); a ``**`` pattern walks the
    folders below its literal head with :func:`_walk` instead."""
    parts = Path(item).parts
    if "**" not in parts:
        return [Path(m) for m in sorted(glob.glob(item))]
    cut = parts.index("**")
    head = str(Path(*parts[:cut])) if cut else "."
    found: list[Path] = []
    for base in sorted(glob.glob(head)) if glob.has_magic(head) else [head]:
        if os.path.isdir(base):
            root = Path(base)
            wanted = _matcher(root, parts[cut:])
            for path in _walk(root, errors, wanted, None):
                if wanted(path):
                    found.append(path if cut else path.relative_to(root))
    return sorted(found)


def _globbed(item: str, errors: list[InputError]) -> Iterator[tuple[Path, Path]]:
    """The regular files a pattern matches; matched links that lead nowhere are reported."""
    reported = len(errors)
    files: list[Path] = []
    for path in _glob(item, errors):
        try:
            info = os.stat(path)
        except OSError as error:
            problem = _stat_error(path, error)
            if problem is not None:
                errors.append(problem)
            continue
        if stat.S_ISREG(info.st_mode):
            files.append(path)
    if not files and len(errors) == reported:
        errors.append(_error(item, "no_match"))
    for path in files:
        yield path, Path(path.stem)


# --- inputs to jobs ----------------------------------------------------------------------------


def _candidates(
    inputs: tuple[str, ...], skip: Path | None, errors: list[InputError]
) -> Iterator[tuple[Path, Path]]:
    """``(source, natural stem)`` of every input file, in input order; the rest -> errors."""
    for item in inputs:
        path = Path(item)
        try:
            info = os.stat(path)
        except OSError as error:
            problem = _stat_error(path, error)
            if problem is not None:
                errors.append(problem)
            else:  # not a path: a pattern, perhaps
                yield from _globbed(item, errors)
            continue
        if stat.S_ISDIR(info.st_mode):
            reported = len(errors)
            found = _scan(path, skip, errors)
            if not found and len(errors) == reported:
                errors.append(_error(path, "no_images"))
            for p in found:
                yield p, p.relative_to(path).parent / p.stem
        elif stat.S_ISREG(info.st_mode):
            yield path, Path(path.stem)
        else:
            errors.append(_error(path, "not_a_file", kind=_kind(info.st_mode)))


def _frame_jobs(source: Path, stem: Path, count: int | None, frames: str) -> list[tuple[Job, str]]:
    """The jobs of one file with their natural stems, each with the name it falls back to."""
    if frames == "first" or count is None or count == 1:
        return [(Job(source, stem, frames=count), source.name)]
    from fcnseg.host.images.frames import FrameSource

    reader = FrameSource(source, count)
    width = max(3, len(str(count - 1)))
    return [
        (
            Job(source, stem.parent / f"{stem.name}_f{k:0{width}d}", None, k, count, reader),
            f"{source.name}_f{k:0{width}d}",
        )
        for k in range(count)
    ]


def _free_stem(stem: Path, fallback: str, taken: dict[Path, Path]) -> Path:
    """``stem`` if free, else ``fallback`` (the source's whole file name, for a frame with its
    frame suffix) in the same folder, else that with ``-k``."""
    if stem not in taken:
        return stem
    name = stem.parent / fallback
    k = 2
    while name in taken:
        name = stem.parent / f"{fallback}-{k}"
        k += 1
    return name


def collect_inputs(
    inputs: tuple[str, ...], exclude: Path | None = None, frames: str = "first"
) -> tuple[list[Job], list[InputError]]:
    """Expand files, folders (recursively, image suffixes) and globs into jobs with distinct
    output stems, one per file or, with ``frames="all"``, one per frame (module docstring);
    each input that gives no job is one :class:`InputError` line.

    Folder scans skip everything under ``exclude`` (the output folder, so a re-run never reads
    its own masks).
    """
    from fcnseg.errors import UserError
    from fcnseg.host.images.frames import check_frames, frame_count

    if frames not in FRAMES:
        raise ValueError(f"frames must be one of {FRAMES}, got {frames!r}")
    skip = exclude.resolve() if exclude is not None else None
    errors: list[InputError] = []
    jobs: list[Job] = []
    taken: dict[Path, Path] = {}  # stem -> source
    seen: set[Path] = set()
    for source, stem in _candidates(inputs, skip, errors):
        identity = source.resolve()
        if identity in seen:
            continue
        seen.add(identity)
        try:
            count = frame_count(source)
            if frames == "all" and count is not None:
                check_frames(source, count)
        except UserError as error:
            errors.append(InputError.of(source, error))
            continue
        for job, fallback in _frame_jobs(source, stem, count, frames):
            natural = job.stem
            job.stem = _free_stem(natural, fallback, taken)
            taken[job.stem] = source
            job.renamed_for = None if job.stem == natural else taken[natural]
            jobs.append(job)
    return jobs, errors
