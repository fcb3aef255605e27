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

Temporaries carry their owner, so concurrent runs cannot delete each other's: a temporary is
``.NAME.<host>-<pid>-<start>.<random>.tmp``, where ``host`` names the pid space (this machine's
name, and on Linux the boot id and pid namespace: boards flashed from one image share a name, and
containers share a kernel; :func:`_host_name`), ``pid`` is the writing process and ``start`` its
start time (clock ticks since boot, field 22 of ``/proc/<pid>/stat``; ``0`` where there is no
``/proc``). A large image written in strips keeps its temporary open for a long time, and a second
``fcnseg segment`` on the same folder must leave it alone. :func:`remove_stale_temps` therefore
removes a temporary only when its owner is provably gone -- same host, and the pid is not running,
or is running with another start time (the pid was reused) -- or, where that cannot be told
(another host or an earlier boot, no ``/proc``, the old ``.NAME.<random>.tmp`` names, or a name
it cannot parse), when it was last modified more than :data:`STALE_AGE_SECONDS` ago. So a
running writer's temporary on this host is never removed, one elsewhere only after a day without
a write; the price is that what a power cut left behind stays (hidden) for a day. No lock files:
the name alone says who writes, and nothing needs cleaning up if a run is killed. Two runs that
both write one output each replace it atomically; the last rename wins, and both wrote the same
bytes.

Files that belong together (an image's mask, overlay and scores) are written with
:func:`atomic_group`: each into its own temporary, named like any temporary of its target (so a
killed writer's are cleaned by the same rule) and ending in the target's suffix too
(``.NAME.<owner>.<random>.tmp.jpg``, for writers that choose the format by the file name); only
once all of them are complete are they renamed into place, the last one last. The last file's
presence therefore means the whole set is there; if any of them fails, every temporary of the
group goes and no file of the set appears (a rename that fails half-way removes the ones this
group already renamed). The writers keep using :func:`atomic_open`: on a group member's
temporary it writes in place (the group renames it), so no temporary of a temporary is made.
(Not a staging folder per image: a ``mkdir`` + ``rmdir`` measured 2.7 ms on this machine's ext4,
as much as writing and flushing a mask.)
"""

from __future__ import annotations

import contextlib
import glob
import os
import platform
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
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


_TEMP_SUFFIX = ".tmp"  # temporaries are ``.NAME.<owner>.<random>.tmp`` next to ``NAME``

#: A temporary whose owner cannot be checked is removed once it is this old (seconds since its
#: last modification): far longer than any single output takes to write.
STALE_AGE_SECONDS = 24 * 3600

#: ``<host>-<pid>-<start>``: an owner tag (:attr:`Owner.tag`).
_TAG = r"([A-Za-z0-9_]{1,80})-([0-9]{1,10})-([0-9]{1,20})"
#: ``<host>-<pid>-<start>.<random>`` (what ``mkstemp`` puts between the prefix and the suffix).
_OWNED = re.compile(_TAG + r"\.[A-Za-z0-9_]{1,32}")


@dataclass(frozen=True)
class Owner:
    """Who writes a temporary: host name (sanitised), process id, process start time (0 if
    unknown)."""

    host: str
    pid: int
    start: int

    @property
    def tag(self) -> str:
        """The form in the temporary's name: ``<host>-<pid>-<start>``."""
        return f"{self.host}-{self.pid}-{self.start}"

    @classmethod
    def parse(cls, tag: str) -> Owner | None:
        """The owner written as :attr:`tag`, or None if ``tag`` is not one."""
        match = re.fullmatch(_TAG, tag)
        return None if match is None else cls(match[1], int(match[2]), int(match[3]))


def _host_name() -> str:
    """Where pids mean the same thing, as ``[A-Za-z0-9_]`` (at most 80 characters): this
    machine's name, and on Linux this boot's id (12 hex digits of
    ``/proc/sys/kernel/random/boot_id``) and the pid namespace's inode. Boards flashed from one
    image share a host name (and a machine id) and may share a network folder; containers share
    a kernel but not pids: each sees the others as another host, never as dead pids."""
    name = (re.sub(r"[^A-Za-z0-9_]", "_", platform.node()) or "unknown")[:40]
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot:
            boot_id = boot.read().strip().replace("-", "")[:12]
        if re.fullmatch(r"[0-9a-f]{12}", boot_id) is None:
            raise ValueError(boot_id)
        name += f"_{boot_id}_{os.stat('/proc/self/ns/pid').st_ino}"
    return name


def process_start(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot, ``/proc/<pid>/stat`` field
    22), or None if there is no such process, it is a zombie, or ``/proc`` cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read().decode("ascii", "replace")
        fields = text[text.rindex(")") + 2 :].split()  # the name in (...) may hold spaces
        return None if fields[0] == "Z" else int(fields[19])  # fields[0] is field 3
    except (OSError, ValueError, IndexError):
        return None


def this_owner() -> Owner:
    """The owner written into this process's temporaries (re-read after a fork)."""
    pid = os.getpid()
    return Owner(_host_name(), pid, process_start(pid) or 0)


def _temp_suffixes(target: str | os.PathLike[str]) -> list[str]:
    """How temporaries of ``target`` end: ``.tmp``, and for a member of an
    :func:`atomic_group` ``.tmp`` + the target's own suffix (``.tmp.jpg``)."""
    suffix = Path(target).suffix
    return [_TEMP_SUFFIX] + ([_TEMP_SUFFIX + suffix] if suffix else [])


def parse_owner(path: str | os.PathLike[str], target: str | os.PathLike[str]) -> Owner | None:
    """The owner in the name of temporary ``path`` of ``target``, or None (the old format
    without one, or a name this module did not write)."""
    prefix = f".{Path(target).name}."
    name = Path(path).name
    end = next((e for e in _temp_suffixes(target)[::-1] if name.endswith(e)), None)
    if not name.startswith(prefix) or end is None:
        return None
    match = _OWNED.fullmatch(name[len(prefix) : -len(end)])
    if match is None:
        return None
    return Owner(match[1], int(match[2]), int(match[3]))


def _pid_running(pid: int) -> bool | None:
    """Is ``pid`` running? None where this cannot be asked (not POSIX: there ``os.kill``
    terminates)."""
    if os.name != "posix":
        return None
    if pid <= 0:  # 0 and negatives address process groups, not a process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def _exited(pid: int) -> bool:
    """Has ``pid`` exited, its status not yet collected by its parent (state ``Z`` or ``X`` in
    ``/proc/<pid>/stat``)? Such a process never writes again, but ``kill(pid, 0)`` still finds
    it: a worker killed with SIGKILL stays a zombie until its parent (a Dask nanny) reaps it,
    and its images are retried in that window (:mod:`fcnseg.host.farm`)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read().decode("ascii", "replace")
        return text[text.rindex(")") + 2 :].split()[0] in ("Z", "X")
    except (OSError, ValueError, IndexError):
        return False


def owner_gone(owner: Owner) -> bool | None:
    """True if ``owner`` has certainly exited, False if it is certainly running, None if this
    cannot be told here (another host, or no way to read start times)."""
    if owner.host != _host_name():
        return None
    running = _pid_running(owner.pid)
    if running is None:
        return None
    if not running or _exited(owner.pid):
        return True
    start = process_start(owner.pid)
    if start is None or owner.start == 0:
        return None  # running, start time not comparable (no /proc, or it just exited): age rule
    return start != owner.start  # another start time: the pid was reused, the writer is gone


def is_stale(
    tmp: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    max_age: float = STALE_AGE_SECONDS,
    now: float | None = None,
) -> bool:
    """May temporary ``tmp`` of ``target`` be removed? (module docstring: owner gone, or owner
    unknown and not modified for ``max_age`` seconds.)"""
    owner = parse_owner(tmp, target)
    gone = owner_gone(owner) if owner is not None else None
    if gone is not None:
        return gone
    try:
        modified = os.stat(tmp).st_mtime
    except OSError:
        return False
    return (time.time() if now is None else now) - modified > max_age


def owned_temp(path: str | os.PathLike[str], *, keep_suffix: bool = False) -> str:
    """Create an empty temporary file of ``path`` next to it, named for this process
    (``.NAME.<owner>.<random>.tmp``, module docstring; with ``keep_suffix`` followed by the
    suffix of ``path``, for writers that choose a format by it), and return its path."""
    path = Path(path)
    prefix = f".{path.name}.{this_owner().tag}."
    suffix = _TEMP_SUFFIX + (path.suffix if keep_suffix else "")
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    return tmp


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    For writers that take a file name (``safetensors.save_file``, ``np.save``). The file gets the
    usual permissions (``0666 & ~umask``; ``mkstemp`` alone would leave it ``0600``).
    """
    if _staged(path):  # a member of an atomic_group: written in place, renamed by the group
        yield os.fspath(path)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = owned_temp(path)
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


_STAGED: set[str] = set()  # members of open groups: atomic_path writes them in place
_STAGED_LOCK = threading.Lock()


def _staged(path: str | os.PathLike[str]) -> bool:
    with _STAGED_LOCK:
        return os.path.abspath(path) in _STAGED


class AtomicGroup:
    """Files that appear together or not at all, the :attr:`last` one last (module docstring).

    Made by :func:`atomic_group`; each member is written (by any writer) to :meth:`path` of its
    target: a temporary of that target, which :func:`atomic_path` and :func:`atomic_open`
    write in place (the group, not they, renames it).
    """

    def __init__(self, last: str | os.PathLike[str]) -> None:
        self.last = Path(last)
        self.staged: dict[Path, str] = {}  #: target -> its temporary, in the order given

    def path(self, target: str | os.PathLike[str]) -> Path:
        """Where to write ``target`` until the commit (the same path if asked again)."""
        target = Path(target)
        if target not in self.staged:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = owned_temp(target, keep_suffix=True)
            with _STAGED_LOCK:
                _STAGED.add(os.path.abspath(tmp))
            self.staged[target] = tmp
        return Path(self.staged[target])

    def commit(self) -> None:
        """Rename every member into place, the last file last; if a rename fails, remove the
        members already renamed (no part of the set stays) and re-raise."""
        order = [t for t in self.staged if t != self.last]
        renamed: list[Path] = []
        try:
            if self.last not in self.staged:
                raise FileNotFoundError(f"{self.last} was not written")
            for target in [*order, self.last]:
                os.chmod(self.staged[target], file_mode())
                os.replace(self.staged[target], target)
                renamed.append(target)
        except BaseException:
            for target in renamed:
                with contextlib.suppress(OSError):
                    os.unlink(target)
            raise
        finally:
            self.abort()

    def abort(self) -> None:
        """Remove the members' temporaries that are still there."""
        with _STAGED_LOCK:
            _STAGED.difference_update(os.path.abspath(tmp) for tmp in self.staged.values())
        for tmp in self.staged.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self.staged = {}


@contextlib.contextmanager
def atomic_group(last: str | os.PathLike[str]) -> Iterator[AtomicGroup]:
    """Yield an :class:`AtomicGroup` whose members appear when the block ends without an
    exception, ``last`` last; on an exception none of them appears.

    >>> with atomic_group("out/a.png") as group:          # doctest: +SKIP
    ...     save_overlay(group.path("out/a_overlay.jpg"), ...)
    ...     save_mask(group.path("out/a.png"), ...)
    """
    group = AtomicGroup(last)
    try:
        yield group
    except BaseException:
        group.abort()
        raise
    group.commit()


def replace_dir(new: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Move the complete folder ``new`` onto ``target``, replacing an existing folder.

    A folder cannot be renamed over a non-empty folder, so an existing ``target`` is first moved
    aside (one rename), then ``new`` takes its place (a second rename) and the old one is deleted.
    Between the two renames ``target`` is briefly absent, never half-written. ``new`` gets the
    usual folder mode first (``0777 & ~umask``): staged with ``mkdtemp`` it would stay ``0700``,
    unreadable to the other users of a board or a shared build folder.
    """
    new, target = Path(new), Path(target)
    os.chmod(new, 0o777 & ~process_umask())
    if not target.exists():
        os.replace(new, target)
        return
    if not target.is_dir():
        raise NotADirectoryError(f"output exists and is not a directory: {target}")
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, aside / target.name)
    os.replace(new, target)
    shutil.rmtree(aside, ignore_errors=True)


def remove_stale_temps(
    path: str | os.PathLike[str], *, max_age: float = STALE_AGE_SECONDS, now: float | None = None
) -> int:
    """Delete the temporaries a killed writer (SIGKILL, power loss) left next to ``path``;
    return how many. Safe while other processes write ``path``: only temporaries of writers that
    are gone, or of unknown writers untouched for ``max_age`` seconds, go (:func:`is_stale`)."""
    path = Path(path)
    removed = 0
    if path.parent.is_dir():
        found = {
            tmp
            for end in _temp_suffixes(path)
            for tmp in path.parent.glob(f".{glob.escape(path.name)}.*{glob.escape(end)}")
        }
        for tmp in sorted(found):
            if not is_stale(tmp, path, max_age=max_age, now=now):
                continue
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed += 1
    return removed
