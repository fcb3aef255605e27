"""Atomic writes of files and folders, shared by every stage (standard library only).

A reader (or a re-run after a crash, Ctrl-C or SIGKILL) sees either the old complete output or
the new complete output, never a half-written one: everything is written next to its target
under a hidden temporary name and renamed onto it with :func:`os.replace`, which is atomic on one
file system. Failed writes remove their temporary file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    For writers that take a file name (``safetensors.save_file``, ``np.save``). The file gets the
    usual permissions (``0666 & ~umask``; ``mkstemp`` alone would leave it ``0600``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path`` for binary writing; rename it onto ``path`` on
    success, after flushing it to disk (so a power cut cannot leave a renamed empty file)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path) as handle:
        handle.write(text.encode("utf-8"))


def replace_dir(new: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Move the complete folder ``new`` onto ``target``, replacing an existing folder.

    A folder cannot be renamed over a non-empty folder, so an existing ``target`` is first moved
    aside (one rename), then ``new`` takes its place (a second rename) and the old one is deleted.
    Between the two renames ``target`` is briefly absent, never half-written.
    """
    new, target = Path(new), Path(target)
    if not target.exists():
        os.replace(new, target)
        return
    if not target.is_dir():
        raise NotADirectoryError(f"output exists and is not a directory: {target}")
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, aside / target.name)
    os.replace(new, target)
    shutil.rmtree(aside, ignore_errors=True)
