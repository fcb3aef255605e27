"""The output folder, checked before any image is read, and the write errors that stop a batch.

:func:`check_output_folder` is what ``fcnseg segment`` asks of ``OUT`` up front, so a folder it
cannot use is one line and exit 2 instead of one error per image: it can be created (the folders
this check made go again if a later check fails), it is a folder, it is on a writable file system
(``statvfs``'s read-only flag), a file can be created, written, flushed to disk and removed in it
(a probe named like any temporary of :mod:`fcnseg.atomic`, so a probe a crash left behind is
cleaned by the same rule), and it has room for the first image's outputs
(:func:`estimate_bytes`, at least :data:`MIN_FREE_BYTES`).

:func:`disk_trouble` tells the errors after which no later image can be written either (disk
full, quota exceeded, the file system turned read-only): the batch stops on them instead of
failing image after image.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable
from pathlib import Path

from fcnseg.atomic import owned_temp, remove_stale_temps
from fcnseg.errors import UserError

#: The least free space a batch starts with (bytes): a few masks and ``classes.json``.
MIN_FREE_BYTES = 4 * 2**20
#: Name of the probe file (its temporaries are ``.fcnseg-probe.<owner>.<random>.tmp``).
PROBE = "fcnseg-probe"
#: Bytes per pixel the outputs take for natural images, with room to spare (estimates, see
#: :func:`estimate_bytes`): a mask PNG (run-length deflated labels: 0.023 measured at 512x1024
#: with 21 classes, :mod:`fcnseg.host.images.masks`), a JPEG overlay (quality 95 photos stay
#: below 4 bits per pixel) and a PNG overlay (the RGB pixels; deflating only shrinks them).
MASK_BYTES_PER_PIXEL = 0.05
JPEG_BYTES_PER_PIXEL = 0.5
PNG_BYTES_PER_PIXEL = 3.0
#: How many of the largest input files (by file size) have their headers read for the estimate.
LARGEST_INPUTS = 8

#: errno -> what a one-line message calls it: the errors that stop a batch (:func:`disk_trouble`).
STOPPING = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
}


def disk_trouble(error: BaseException | None) -> str | None:
    """``"disk full"`` (or quota, read-only) if ``error`` or an error it was raised from is an
    ``OSError`` after which nothing more can be written; else None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in STOPPING:
            return STOPPING[error.errno]
        error = error.__cause__ or error.__context__
    return None


def _mb(n: float) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n / 2**20:.1f} MB"


def estimate_bytes(
    sizes: Iterable[tuple[int, int]],
    *,
    overlay: str | None,
    scores: bool,
    stride: int,
    classes: int,
) -> int:
    """Space for the outputs of the largest of ``sizes`` (``(H, W)``): its mask, its overlay
    (``overlay``: ``"jpeg"``, ``"png"`` or None) and its scores (int32, ``H/stride x W/stride x
    classes``, exact), at least :data:`MIN_FREE_BYTES`. An estimate for natural images, not a
    bound: a disk that fills anyway stops the batch cleanly (:func:`disk_trouble`)."""
    need = 0.0
    for height, width in sizes:
        pixels = height * width
        one = pixels * MASK_BYTES_PER_PIXEL
        if overlay is not None:
            one += pixels * (PNG_BYTES_PER_PIXEL if overlay == "png" else JPEG_BYTES_PER_PIXEL)
        if scores:
            one += -(-height // stride) * -(-width // stride) * classes * 4
        need = max(need, one)
    return max(MIN_FREE_BYTES, int(need))


def largest_sizes(sources: Iterable[Path]) -> list[tuple[int, int]]:
    """``(H, W)`` of the :data:`LARGEST_INPUTS` largest files of ``sources`` (header only;
    unreadable ones are left out: decoding reports them)."""
    from fcnseg.host.images import image_size

    by_size: list[tuple[int, Path]] = []
    for source in sources:
        with contextlib.suppress(OSError):
            by_size.append((os.stat(source).st_size, source))
    by_size.sort(key=lambda item: item[0], reverse=True)
    found = (image_size(path) for _, path in by_size[:LARGEST_INPUTS])
    return [size for size in found if size is not None]


def _reason(error: OSError) -> str:
    """What a refused folder's line says about ``error``."""
    if error.errno == errno.EROFS:
        return "read-only file system"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "not writable"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return STOPPING[error.errno]
    return error.strerror or str(error)


def _make(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, deepest first."""
    missing = []
    here = folder
    while not here.exists() and not here.is_symlink() and here != here.parent:
        missing.append(here)
        here = here.parent
    if here.exists() and not here.is_dir():
        what = "is not a folder" if here == folder else f"cannot be made ({here} is a file)"
        raise UserError(f"{folder}: {what}")
    created = []
    try:
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                continue  # made by a concurrent run meanwhile: not ours to remove
            created.append(path)
    except OSError as error:
        _unmake(created)
        raise UserError(f"{folder}: cannot be created ({_reason(error)})") from None
    return created[::-1]


def _unmake(created: list[Path]) -> None:
    for path in sorted(created, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir()


def _probe(folder: Path) -> None:
    """Create, write, flush and remove a file in ``folder`` (OSError if any of it fails)."""
    probe = folder / PROBE
    remove_stale_temps(probe)
    tmp = owned_temp(probe)
    try:
        fd = os.open(tmp, os.O_WRONLY)
        try:
            os.write(fd, b"fcnseg\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def check_output_folder(folder: Path, need: int) -> None:
    """Refuse ``folder`` as the output folder with one :class:`~fcnseg.errors.UserError` line
    unless it is (or can be created as) a writable folder with ``need`` bytes free (module
    docstring); a refused folder that this check created is removed again."""
    folder = Path(folder)
    created = _make(folder)
    try:
        if not folder.is_dir():
            raise UserError(f"{folder}: is not a folder")
        stat = None
        with contextlib.suppress(OSError, AttributeError):  # no statvfs: the probe decides
            stat = os.statvfs(folder)
        if stat is not None and stat.f_flag & getattr(os, "ST_RDONLY", 1):
            raise UserError(f"{folder}: cannot write here (read-only file system)")
        try:
            _probe(folder)
        except OSError as error:
            reason = _reason(error)
            if stat is not None and error.errno in (errno.ENOSPC, errno.EDQUOT):
                reason += f", {_mb(stat.f_bavail * stat.f_frsize)} free, need ~{_mb(need)}"
            raise UserError(f"{folder}: cannot write here ({reason})") from None
        if stat is not None:
            free = stat.f_bavail * stat.f_frsize
            if free < need:
                raise UserError(
                    f"{folder}: not enough space ({_mb(free)} free, need ~{_mb(need)} for the "
                    "first image's outputs)"
                )
    except BaseException:
        _unmake(created)
        raise
