"""Claims: which ``fcnseg segment`` run is segmenting an image, so concurrent runs on one output
folder each do an image once.

Before a run works on an image it claims it: it creates ``.MASK.claim`` next to the image's mask
with ``O_CREAT | O_EXCL`` (exactly one creator wins, also between processes and, on a network
folder, between hosts) and writes its owner tag into it (``<host>-<pid>-<start>``, the owner of
:mod:`fcnseg.atomic`'s temporaries). The claim goes once the mask is committed or the image has
failed. While it is held, a daemon thread of the holder refreshes its **heartbeat**, the claim
file's modification time, every :data:`HEARTBEAT_SECONDS` (until the claim is released, or is
found to be someone else's: then it stops).

A run that finds an image claimed leaves it to the holder, unless the claim is stale:

- its owner is provably gone (same host: pid not running, or running with another start time;
  the rule of :func:`fcnseg.atomic.owner_gone`), whatever the heartbeat says; a live owner on
  this host keeps its claim;
- or its owner cannot be told from here (another host sharing the folder, or no start times)
  and its heartbeat is older than :data:`CLAIM_STALE_SECONDS`, six missed beats: its holder
  died (a worker killed on another machine, a board that lost power) or is stuck. An empty or
  unreadable claim (its creator has not written its tag yet) is judged by that age too.

**Whose clock.** Hosts sharing a folder may disagree about the time by minutes, so the age is
never taken against this process's ``time.time()``: the judge creates a fresh file in the
claim's folder (:func:`folder_now`, removed at once) and compares the claim's modification
time with that file's. Both times are stamped by the same file system (on NFS, by
the server, for a refresh as for a create), so the comparison holds however far apart the
hosts' clocks are; it only assumes the file system's own clock runs steadily.

Taking over a stale claim is serialised by a second ``O_EXCL`` file, ``.MASK.claim.break``:
only the run that created it removes the stale claim (after reading it again: still the stale
content), then it races for the claim like anyone else. So two runs breaking one stale claim at
once cannot delete each other's fresh claim. A break takes microseconds; a break file older
than :data:`BREAK_AGE_SECONDS` (its maker died in those microseconds) is removed. The one
window left open: a run that dies mid-break, and, a minute later, two runs that both remove its
break file and both break -- then an image can be segmented twice, each time atomically and
with the same bytes.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fcnseg.atomic import Owner, owner_gone, this_owner

CLAIM_SUFFIX = ".claim"
BREAK_SUFFIX = ".break"
#: How often a holder refreshes its claim's heartbeat (its modification time), in seconds.
HEARTBEAT_SECONDS = 20.0
#: A claim whose owner cannot be told from here is stale once its heartbeat is this old (s).
CLAIM_STALE_SECONDS = 120.0
#: The fresh file a judge writes to read the folder's clock (:func:`folder_now`).
CLOCK_PREFIX = ".fcnseg-clock-"
#: A break file this old is left over from a run that died while breaking a claim (seconds).
BREAK_AGE_SECONDS = 60.0


def claim_path(target: str | os.PathLike[str]) -> Path:
    """The claim file of ``target`` (an image's mask): ``.NAME.claim`` beside it."""
    target = Path(target)
    return target.parent / f".{target.name}{CLAIM_SUFFIX}"


@dataclass(frozen=True)
class Holder:
    """Who holds a claim another run found: its owner (None if unreadable) and the claim's
    age in seconds."""

    owner: Owner | None
    age: float
    text: str = field(default="", repr=False)  #: the claim's content as read

    def describe(self) -> str:
        """``pid 123`` (this host), ``pid 123 on host H`` or ``an unknown run``."""
        if self.owner is None:
            return "an unknown run"
        if self.owner.host == this_owner().host:
            return f"pid {self.owner.pid}"
        return f"pid {self.owner.pid} on host {self.owner.host}"


@dataclass
class Claim:
    """A claim this process holds, its heartbeat refreshed by a daemon thread (:meth:`beat`);
    :meth:`release` it when the image is done or failed."""

    path: Path
    text: str
    released: bool = False
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _beating: threading.Thread | None = field(default=None, repr=False)

    def beat(self, every: float = HEARTBEAT_SECONDS) -> None:
        """Refresh the claim's modification time every ``every`` seconds from a daemon thread,
        until :meth:`release`, or until the file is no longer this claim (gone, or taken over
        by a run that judged this one dead): someone else's claim is never touched."""
        if self._beating is not None or self.released:
            return

        def refresh() -> None:
            while not self._stop.wait(every):
                if _read(self.path) != self.text:
                    return
                with contextlib.suppress(OSError):  # a folder gone away: judged by age, rightly
                    os.utime(self.path)  # now, as the file system stamps it

        self._beating = threading.Thread(target=refresh, name=f"heartbeat {self.path}", daemon=True)
        self._beating.start()

    @property
    def beating(self) -> bool:
        """Is the heartbeat thread running?"""
        return self._beating is not None and self._beating.is_alive()

    def release(self) -> None:
        """Stop the heartbeat and remove the claim file if it is still this claim
        (idempotent)."""
        if self.released:
            return
        self.released = True
        self._stop.set()
        if self._beating is not None and self._beating is not threading.current_thread():
            self._beating.join(timeout=5.0)  # a refresh in progress ends in a file system call
        if _read(self.path) == self.text:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


class Held:
    """The claims one process holds, by a key of the caller's (thread-safe: a batch claims in
    its decoding thread and releases in its finishing threads)."""

    def __init__(self) -> None:
        self._claims: dict[object, Claim] = {}
        self._lock = threading.Lock()

    def add(self, key: object, claim: Claim) -> None:
        with self._lock:
            self._claims[key] = claim

    def release(self, key: object) -> None:
        """Release the claim held under ``key``, if any."""
        with self._lock:
            claim = self._claims.pop(key, None)
        if claim is not None:
            claim.release()

    def release_all(self) -> None:
        with self._lock:
            claims, self._claims = list(self._claims.values()), {}
        for claim in claims:
            claim.release()


def _read(path: Path) -> str | None:
    """The text of a claim or break file, or None if it is gone or unreadable."""
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def _create(path: Path, text: str) -> bool:
    """Create ``path`` exclusively holding ``text``; False if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, text.encode("ascii") + b"\n")
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)
    return True


def folder_now(folder: str | os.PathLike[str]) -> float:
    """The current time by ``folder``'s file system clock: the modification time of a fresh
    file created there (and removed). On a folder that cannot be written, this host's clock."""
    import tempfile

    try:
        fd, name = tempfile.mkstemp(prefix=CLOCK_PREFIX, suffix=".tmp", dir=folder)
    except OSError:
        return time.time()
    try:
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)


def _holder(path: Path, now: float) -> Holder | None:
    """The holder of claim file ``path``, or None if there is none any more."""
    text = _read(path)
    try:
        age = now - os.stat(path).st_mtime
    except OSError:
        return None
    if text is None:
        return None
    return Holder(Owner.parse(text), age, text)


def _stale(holder: Holder, max_age: float) -> bool:
    """Is the claim stale? Its owner gone (same host), or not tellable and its heartbeat older
    than ``max_age`` (module docstring)."""
    gone = owner_gone(holder.owner) if holder.owner is not None else None
    return gone if gone is not None else holder.age > max_age


def _break(path: Path, seen: str, now: float) -> None:
    """Remove stale claim ``path`` if it still reads ``seen``, under the break file."""
    breaker = path.parent / (path.name + BREAK_SUFFIX)
    if not _create(breaker, this_owner().tag):
        with contextlib.suppress(OSError):
            if now - os.stat(breaker).st_mtime > BREAK_AGE_SECONDS:
                os.unlink(breaker)
        return
    try:
        if _read(path) == seen:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(breaker)


def try_claim(
    target: str | os.PathLike[str],
    *,
    max_age: float = CLAIM_STALE_SECONDS,
    now: float | None = None,
    heartbeat: float = HEARTBEAT_SECONDS,
) -> Claim | Holder:
    """Claim ``target`` for this process: a :class:`Claim` whose heartbeat beats every
    ``heartbeat`` seconds, or the live :class:`Holder` of someone else's claim (a stale one is
    taken over; module docstring). ``now``: the folder's clock (default :func:`folder_now`)."""
    path = claim_path(target)
    mine = this_owner().tag
    holder = Holder(None, 0.0)
    for _ in range(5):  # a stale claim: break it, then race for it like anyone else
        if _create(path, mine):
            claim = Claim(path, mine)
            claim.beat(heartbeat)
            return claim
        clock = folder_now(path.parent) if now is None else now
        found = _holder(path, clock)
        if found is None:
            continue  # released between our create and our read: try again
        holder = found
        if not _stale(holder, max_age):
            return holder
        _break(path, holder.text, clock)
    return holder  # still contended after five tries: leave it to the others


def holder_of(target: str | os.PathLike[str]) -> Holder | None:
    """Who holds ``target``'s claim now (its age by the folder's clock), or None if nobody."""
    path = claim_path(target)
    if not path.exists():
        return None
    return _holder(path, folder_now(path.parent))


def remote(holder: Holder) -> bool:
    """Is ``holder`` a run this host cannot judge by its pid (another host, or unreadable)?
    Its claim ends by its heartbeat: stale :data:`CLAIM_STALE_SECONDS` after the last beat."""
    return holder.owner is None or owner_gone(holder.owner) is None


def remove_stale_claim(
    target: str | os.PathLike[str],
    *,
    max_age: float = CLAIM_STALE_SECONDS,
    now: float | None = None,
) -> bool:
    """Remove the claim of ``target`` if it is stale (a run killed after the mask was
    committed leaves one behind); True if one was removed. ``now`` as for :func:`try_claim`."""
    path = claim_path(target)
    if not path.exists():
        return False
    clock = folder_now(path.parent) if now is None else now
    holder = _holder(path, clock)
    if holder is None or not _stale(holder, max_age):
        return False
    _break(path, holder.text, clock)
    return not path.exists()
