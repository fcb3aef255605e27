"""Claims across machines (issue 17): a claim's heartbeat (:mod:`fcnseg.host.claims`).

A holder refreshes its claim file's modification time from a daemon thread until it releases
the claim; a claim whose owner cannot be told from here (another host) is stale once its
heartbeat is older than ``CLAIM_STALE_SECONDS``, the age read against a fresh file's
modification time in the same folder, never this process's clock. Same-host claims are judged
by their pid, whatever their heartbeat.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fcnseg.atomic import Owner, this_owner
from fcnseg.host import claims
from fcnseg.host.claims import (
    CLAIM_STALE_SECONDS,
    Claim,
    Holder,
    claim_path,
    folder_now,
    remove_stale_claim,
    try_claim,
)

OTHER = Owner("x" + this_owner().host[:79], 4242, 17)  #: a run on another machine


def _plant(target: Path, owner: Owner, heartbeat_age: float) -> Path:
    """A claim of ``owner`` whose heartbeat is ``heartbeat_age`` seconds old by the folder's
    clock."""
    path = claim_path(target)
    path.write_text(owner.tag + "\n")
    stamp = folder_now(target.parent) - heartbeat_age
    os.utime(path, (stamp, stamp))
    return path


def _wait_for(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_another_hosts_claim_with_an_old_heartbeat_is_taken_over(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    _plant(target, OTHER, CLAIM_STALE_SECONDS + 5)
    mine = try_claim(target)
    try:
        assert isinstance(mine, Claim) and mine.path.read_text().strip() == this_owner().tag
        assert not (tmp_path / ".a.png.claim.break").exists()
    finally:
        mine.release()
    path = _plant(target, OTHER, CLAIM_STALE_SECONDS + 5)
    assert remove_stale_claim(target) is True and not path.exists()


def test_another_hosts_claim_with_a_fresh_heartbeat_is_held(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    path = _plant(target, OTHER, CLAIM_STALE_SECONDS - 10)
    holder = try_claim(target)
    assert isinstance(holder, Holder) and holder.owner == OTHER
    assert CLAIM_STALE_SECONDS - 11 < holder.age < CLAIM_STALE_SECONDS
    assert remove_stale_claim(target) is False and path.read_text().strip() == OTHER.tag
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the clock's file is gone


def test_the_age_is_the_folders_clock_not_this_hosts(tmp_path: Path, monkeypatch) -> None:
    """This host's clock a day ahead (or behind) of the folder's: a fresh claim stays held,
    an old one is still taken over."""
    target = tmp_path / "a.png"
    real = time.time
    for skew in (86400.0, -86400.0):
        monkeypatch.setattr(claims.time, "time", lambda skew=skew: real() + skew)
        _plant(target, OTHER, 1.0)
        assert isinstance(try_claim(target), Holder)
        _plant(target, OTHER, CLAIM_STALE_SECONDS + 5)
        mine = try_claim(target)
        assert isinstance(mine, Claim)
        mine.release()


def test_a_live_claim_on_this_host_is_held_whatever_its_heartbeat(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    _plant(target, this_owner(), 10 * CLAIM_STALE_SECONDS)  # this process: alive
    assert isinstance(try_claim(target), Holder)


def test_the_heartbeat_refreshes_the_claim_until_it_is_released(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    mine = try_claim(target, heartbeat=0.02)
    assert isinstance(mine, Claim) and mine.beating
    old = folder_now(tmp_path) - CLAIM_STALE_SECONDS - 5
    os.utime(mine.path, (old, old))  # as if the holder had been silent: the beat renews it
    assert _wait_for(lambda: mine.path.stat().st_mtime > old + CLAIM_STALE_SECONDS)
    mine.release()
    assert not mine.beating and not mine.path.exists()
    mine.release()  # idempotent


def test_the_heartbeat_stops_on_a_claim_that_is_no_longer_ours(tmp_path: Path) -> None:
    """Judged dead and taken over meanwhile: the old holder's beat must not keep the new
    holder's claim alive (nor touch it)."""
    target = tmp_path / "a.png"
    mine = try_claim(target, heartbeat=0.02)
    assert isinstance(mine, Claim)
    mine.path.write_text(OTHER.tag + "\n")
    assert _wait_for(lambda: not mine.beating)
    old = folder_now(tmp_path) - 1000
    os.utime(mine.path, (old, old))
    time.sleep(0.1)  # five beats' time
    assert mine.path.stat().st_mtime == pytest.approx(old)
    mine.release()
    assert mine.path.read_text().strip() == OTHER.tag  # someone else's: left


def test_the_folders_clock_is_a_fresh_files_time(tmp_path: Path) -> None:
    before = time.time()
    now = folder_now(tmp_path)
    assert before - 2 <= now <= time.time() + 2 and list(tmp_path.iterdir()) == []
    assert abs(folder_now(tmp_path / "missing") - time.time()) < 2  # cannot write: this clock
