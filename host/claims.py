"""Claims: which ``fcnseg segment`` run is segmenting an image, so concurrent runs on one output
folder each do an image once.

Before a run works on an image it claims it: it creates ``.MASK.claim`` next to the image's mask
with ``O_CREAT | O_EXCL`` (exactly one creator wins, also between processes and, on a network
folder, between hosts) and writes its owner tag into it (``<host>-<pid>-<start>``, the owner of
:mod:`fcnseg.atomic`'s temporaries). The claim goes once the mask is committed or the image has
failed. A run that finds an image claimed leaves it to the holder, unless the claim is stale by
the temporaries' rule (:func:`fcnseg.atomic.is_stale`): its owner is provably gone (same host,
pid not running or running with another start time), or it cannot be told and the claim is older
than :data:`~fcnseg.atomic.STALE_AGE_SECONDS`. An empty or unreadable claim (its creator has not
written its tag yet) is judged by its age alone.

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

from fcnseg.atomic import STALE_AGE_SECONDS, Owner, owner_gone, this_owner

CLAIM_SUFFIX = ".claim"
BREAK_SUFFIX = ".break"
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
    """A claim this process holds; :meth:`release` it when the image is done or failed."""

    path: Path
    text: str
    released: bool = False

    def release(self) -> None:
        """Remove the claim file if it is still this claim (idempotent)."""
        if self.released:
            return
        self.released = True
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
    """The rule of :func:`fcnseg.atomic.is_stale`, for a claim's holder."""
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
    target: str | os.PathLike[str], *, max_age: float = STALE_AGE_SECONDS, now: float | None = None
) -> Claim | Holder:
    """Claim ``target`` for this process: a :class:`Claim`, or the live :class:`Holder` of
    someone else's claim (a stale one is taken over; module docstring)."""
    path = claim_path(target)
    mine = this_owner().tag
    holder = Holder(None, 0.0)
    for _ in range(5):  # a stale claim: break it, then race for it like anyone else
        if _create(path, mine):
            return Claim(path, mine)
        clock = time.time() if now is None else now
        found = _holder(path, clock)
        if found is None:
            continue  # released between our create and our read: try again
        holder = found
        if not _stale(holder, max_age):
            return holder
        _break(path, holder.text, clock)
    return holder  # still contended after five tries: leave it to the others


def remove_stale_claim(
    target: str | os.PathLike[str], *, max_age: float = STALE_AGE_SECONDS, now: float | None = None
) -> bool:
    """Remove the claim of ``target`` if it is stale (a run killed after the mask was
    committed leaves one behind); True if one was removed."""
    path = claim_path(target)
    clock = time.time() if now is None else now
    holder = _holder(path, clock)
    if holder is None or not _stale(holder, max_age):
        return False
    _break(path, holder.text, clock)
    return not path.exists()
