"""Atomic writes of files and folders, shared by every stage (standard library only).

A reader (or a re-run after a crash, Ctrl-C or SIGKILL) sees either the old complete output or
the new complete output, never a half-written one: everything is written next to its target
under a hidden temporary name and renamed onto it with :func:`os.replace`, which is atomic on one
file system. Failed writes remove their temporary file.

Thread safety: writers run in several threads at once (``fcnseg segment --workers N``), so this
module never changes process-wide state: the only portable way to read the umask is to set it
(``os.umask``), and two threads doing that at once can leave it at 0 (later files
world-writable). So it is read once per process, under a lock (:func:`process_umask`; on Linux
from ``/proc/self/status``, without setting it at all), and each new file gets its mode with
:func:`os.chmod`. A program that changes its umask after its first atomic write keeps the old
one for these files.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

_UMASK_LOCK = threading.Lock()
_umask: int | None = None


def _read_umask() -> int:
    """The current umask: from ``/proc/self/status`` (Linux >= 4.7, nothing changed), else by
    setting and restoring it (the caller holds :data:`_UMASK_LOCK`)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o077)  # briefly restrictive, never permissive, if another thread creates
    os.umask(mask)
    return mask


def process_umask() -> int:
    """The process umask, read once (thread-safe) and remembered (module docstring)."""
    global _umask
    with _UMASK_LOCK:
        if _umask is None:
            _umask = _read_umask()
        return _umask


def file_mode() -> int:
    """The mode a new regular file gets from ``open``: ``0o666 & ~umask``."""
    return 0o666 & ~process_umask()


_TEMP_SUFFIX = ".tmp"  # temporaries are ``.NAME.<random>.tmp`` next to ``NAME``


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    For writers that take a file name (``safetensors.save_file``, ``np.save``). The file gets the
    usual permissions (``0666 & ~umask``; ``mkstemp`` alone would leave it ``0600``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
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


def remove_stale_temps(path: str | os.PathLike[str]) -> int:
    """Delete the temporaries a killed writer (SIGKILL, power loss) left next to ``path``;
    return how many. Safe only while nobody is writing ``path``."""
    path = Path(path)
    removed = 0
    if path.parent.is_dir():
        pattern = f".{glob.escape(path.name)}.*{_TEMP_SUFFIX}"
        for tmp in path.parent.glob(pattern):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed += 1
    return removed
