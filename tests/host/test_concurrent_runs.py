"""Issue 16, part 2: two ``fcnseg segment`` runs on one output folder cannot step on each other.

Temporaries carry their owner (host, pid, start time; :mod:`fcnseg.atomic`) and the stale-temp
cleanup removes only those of writers that are gone, or of unknown writers past the age bound.
Images are claimed before they are worked on (:mod:`fcnseg.host.claims`), so each is segmented
and written by one run: the claim rules are unit-tested here, and many processes racing for one
claim (fresh, or a dead run's) must produce exactly one winner.

Unit tests decide each rule with planted names (this process, a reaped child, a reused pid, another
host, the old format, junk). The integration tests start two real ``python -m fcnseg.cli segment``
subprocesses on one folder at once -- 20 small images, and a binary PPM that is always written in
strips -- with a temporary planted for an output, owned by a live helper process: a run that
cleaned it would be deleting a live writer's file. The race between the two runs is real; what is
asserted is not timing-dependent: both exit 0, every output equals a single run's byte for byte,
the live writer's temporary survives both runs (and goes once its owner has exited), a dead
writer's goes, and nothing else is left; from the two runs' ``--json`` summaries, every image was
done by exactly one of them (the other says ``another-run`` or ``skipped``), and no claim is left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg import atomic
from fcnseg.atomic import Owner, atomic_path, parse_owner, remove_stale_temps, this_owner
from fcnseg.cli import main
from fcnseg.host import claims
from fcnseg.host.claims import (
    Claim,
    Held,
    Holder,
    claim_path,
    remove_stale_claim,
    try_claim,
)
from tests.helpers.images import image
from tests.helpers.packages import tiny_package

ROOT = Path(__file__).resolve().parents[2]
HAS_PROC = atomic.process_start(os.getpid()) is not None
needs_proc = pytest.mark.skipif(not HAS_PROC, reason="needs /proc/<pid>/stat (Linux)")


def _plant(target: Path, owner: Owner | str, *, age: float = 0.0) -> Path:
    """A temporary of ``target`` named for ``owner`` (or with a raw middle part), ``age`` s old."""
    middle = owner.tag + ".k3x9q_2a" if isinstance(owner, Owner) else owner
    tmp = target.parent / f".{target.name}.{middle}.tmp"
    tmp.write_bytes(b"partial")
    if age:
        stamp = time.time() - age
        os.utime(tmp, (stamp, stamp))
    return tmp


def _dead_pid() -> int:
    """The pid of a child that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp*"))  # also group members (.tmp.png)


# --- unit: the rules -------------------------------------------------------------------------


def test_own_temporaries_name_this_process(tmp_path: Path) -> None:
    target = tmp_path / "mask.png"
    with atomic_path(target) as tmp:
        owner = parse_owner(tmp, target)
        assert owner == this_owner() and owner.pid == os.getpid()
        assert remove_stale_temps(target) == 0 and Path(tmp).exists()
    assert target.exists() and _temps(tmp_path) == []


@needs_proc
def test_live_process_with_its_start_time_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    me = this_owner()
    assert me.start == atomic.process_start(os.getpid()) > 0
    kept = _plant(target, me, age=10 * atomic.STALE_AGE_SECONDS)  # even when old: it is alive
    assert remove_stale_temps(target) == 0 and kept.exists()


def test_dead_pid_is_removed(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    me = this_owner()
    dead = _plant(target, Owner(me.host, _dead_pid(), me.start))  # fresh: age does not save it
    assert remove_stale_temps(target) == 1 and not dead.exists()


@needs_proc
def test_live_pid_with_another_start_time_is_removed(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    me = this_owner()
    reused = _plant(target, Owner(me.host, me.pid, me.start + 1))
    earlier = _plant(target, Owner(me.host, me.pid, me.start - 1))
    assert remove_stale_temps(target) == 2
    assert not reused.exists() and not earlier.exists()


def _other_hosts() -> list[str]:
    """Other pid spaces: another machine name; on Linux also this name with another boot (a
    board flashed from the same image) and with another pid namespace (a container)."""
    host = this_owner().host
    others = ["x" + host[:79]]
    parts = host.rsplit("_", 2)
    if len(parts) == 3 and HAS_PROC:
        name, boot, ns = parts
        others += [f"{name}_{'0' * 12 if boot != '0' * 12 else '1' * 12}_{ns}", f"{name}_{boot}_1"]
    return others


@pytest.mark.parametrize("other", _other_hosts())
def test_other_host_is_kept_until_the_age_bound(tmp_path: Path, other: str) -> None:
    target = tmp_path / "a.png"
    assert other != this_owner().host
    dead = _dead_pid()  # would be removed if it were this host's
    young = _plant(target, Owner(other, dead, 1), age=atomic.STALE_AGE_SECONDS - 60)
    old = _plant(target, Owner(other, dead + 1, 1), age=atomic.STALE_AGE_SECONDS + 60)
    assert remove_stale_temps(target) == 1
    assert young.exists() and not old.exists()
    # the bound is a parameter; ``now`` moves the clock instead of the file
    assert remove_stale_temps(target, now=time.time() + 120) == 1 and not young.exists()


def test_old_format_and_junk_follow_the_age_rule(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    young_old_format = _plant(target, "ab12cd_e")  # what mkstemp made before owners
    old_old_format = _plant(target, "zz99yy_x", age=atomic.STALE_AGE_SECONDS + 1)
    junk = ["", "-", "a-b-c.x", "vm-12-", "vm--1-2.abc", "vm-1-2", "v m-1-2.abc", "é-1-2.ab"]
    junk += ["vm-1-2.a.b", "vm-99999999999-2.abc", "vm-1-2." + "a" * 40, "x" * 81 + "-1-2.ab"]
    planted = [_plant(target, name) for name in junk]
    for tmp in [young_old_format, old_old_format, *planted]:
        assert parse_owner(tmp, target) is None, tmp.name
    assert parse_owner(tmp_path / ".b.png.vm-1-2.abc.tmp", target) is None  # another target
    assert parse_owner(tmp_path / ".a.png.vm-1-2.abc.tmp", target) == Owner("vm", 1, 2)
    assert remove_stale_temps(target) == 1 and not old_old_format.exists()
    assert young_old_format.exists() and all(p.exists() for p in planted)
    late = time.time() + atomic.STALE_AGE_SECONDS + 60
    assert remove_stale_temps(target, now=late) == 1 + len(planted)
    assert _temps(tmp_path) == []


def test_process_start_refuses_what_is_not_a_process() -> None:
    assert atomic.process_start(_dead_pid()) is None
    assert atomic.process_start(-1) is None
    assert atomic.owner_gone(Owner(this_owner().host, 0, 5)) is True  # pid 0: no process


def test_a_name_with_dots_and_brackets_is_matched_literally(tmp_path: Path) -> None:
    target = tmp_path / "img[1].v2.png"
    me = this_owner()
    dead = _plant(target, Owner(me.host, _dead_pid(), 1))
    neighbour = _plant(tmp_path / "img1.v2.png", Owner(me.host, _dead_pid(), 1))
    assert remove_stale_temps(target) == 1 and not dead.exists() and neighbour.exists()


# --- unit: claims --------------------------------------------------------------------------


def _plant_claim(target: Path, text: str, *, age: float = 0.0) -> Path:
    path = claim_path(target)
    path.write_text(text + "\n")
    if age:
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))
    return path


def test_a_claim_is_exclusive_and_released(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    mine = try_claim(target)
    assert isinstance(mine, Claim) and mine.path == tmp_path / ".a.png.claim"
    assert mine.path.read_text().strip() == this_owner().tag
    other = try_claim(target)  # this process is alive: its claim is held
    assert isinstance(other, Holder) and other.owner == this_owner()
    assert other.describe() == f"pid {os.getpid()}"
    assert remove_stale_claim(target) is False and mine.path.exists()
    mine.release()
    mine.release()  # idempotent
    assert not mine.path.exists() and isinstance(try_claim(target), Claim)


def test_held_claims_are_released_by_key_or_all_at_once(tmp_path: Path) -> None:
    held = Held()
    claims = {k: try_claim(tmp_path / f"{k}.png") for k in "abc"}
    for key, claim in claims.items():
        assert isinstance(claim, Claim)
        held.add(key, claim)
    held.release("a")
    held.release("a")  # nothing held under it any more
    assert [c.path.exists() for c in claims.values()] == [False, True, True]
    held.release_all()
    assert not list(tmp_path.iterdir())


def test_release_leaves_someone_elses_claim(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    mine = try_claim(target)
    assert isinstance(mine, Claim)
    mine.path.write_text("vm-1-2\n")  # taken over meanwhile (as if this run were judged gone)
    mine.release()
    assert mine.path.read_text() == "vm-1-2\n"


def test_a_dead_runs_claim_is_taken_over(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    me = this_owner()
    _plant_claim(target, Owner(me.host, _dead_pid(), me.start).tag)  # fresh: age does not save it
    mine = try_claim(target)
    assert isinstance(mine, Claim) and mine.path.read_text().strip() == me.tag
    assert not (tmp_path / ".a.png.claim.break").exists()


@pytest.mark.parametrize("other", _other_hosts()[:1])
def test_an_unknown_owner_is_judged_by_age(tmp_path: Path, other: str) -> None:
    target = tmp_path / "a.png"
    young = _plant_claim(target, Owner(other, 1, 1).tag, age=claims.CLAIM_STALE_SECONDS - 60)
    holder = try_claim(target)
    assert isinstance(holder, Holder) and holder.owner == Owner(other, 1, 1)
    assert holder.describe() == f"pid 1 on host {other}"
    assert remove_stale_claim(target) is False and young.exists()
    assert remove_stale_claim(target, now=time.time() + 120) is True and not young.exists()
    for text in ("", "junk"):  # being written, or not ours: the age rule too
        _plant_claim(target, text)
        assert isinstance(try_claim(target), Holder)
        late = time.time() + 2 * claims.CLAIM_STALE_SECONDS
        mine = try_claim(target, now=late)
        assert isinstance(mine, Claim)
        mine.release()


def test_a_break_in_progress_is_waited_for_and_a_dead_one_cleared(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    me = this_owner()
    stale = _plant_claim(target, Owner(me.host, _dead_pid(), me.start).tag)
    breaker = tmp_path / ".a.png.claim.break"
    breaker.write_text(me.tag)  # someone is breaking it right now
    assert isinstance(try_claim(target), Holder) and stale.exists() and breaker.exists()
    stamp = time.time() - claims.BREAK_AGE_SECONDS - 5  # ... or died doing so a while ago
    os.utime(breaker, (stamp, stamp))
    assert isinstance(try_claim(target), Claim) and not breaker.exists()


_RACE = """
import sys, time
from fcnseg.host.claims import Claim, try_claim
at = float(sys.argv[2])
while time.time() < at:
    pass
got = try_claim(sys.argv[1])
print("won" if isinstance(got, Claim) else "lost", flush=True)
sys.stdin.read()  # hold the claim until told to exit
"""


@pytest.mark.parametrize("planted", ["none", "dead"])
def test_many_processes_racing_for_one_claim_have_one_winner(tmp_path: Path, planted) -> None:
    """Eight processes try at the same instant, on a free claim or on a dead run's (which they
    must break): exactly one wins, every time."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for attempt in range(3):
        target = tmp_path / f"a{attempt}.png"
        if planted == "dead":
            me = this_owner()
            _plant_claim(target, Owner(me.host, _dead_pid(), me.start).tag)
        at = time.time() + 1.5
        racers = [
            subprocess.Popen([sys.executable, "-c", _RACE, str(target), str(at)], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for _ in range(8)
        ]  # fmt: skip
        said = [racer.stdout.readline().strip() for racer in racers]
        for racer in racers:
            racer.communicate(input="")
        assert sorted(said) == ["lost"] * 7 + ["won"], said
        assert not (tmp_path / f".a{attempt}.png.claim.break").exists()


# --- integration: two real runs on one folder ------------------------------------------------


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_package(tmp_path_factory.mktemp("pkg") / "tiny-pynq-z2")


def _write_ppm(path: Path, rgb: np.ndarray) -> None:
    h, w = rgb.shape[:2]
    path.write_bytes(f"P6\n{w} {h}\n255\n".encode() + rgb.tobytes())


def _command(package: Path, inputs: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "fcnseg.cli", "segment", str(inputs), "-o", str(out)] + [
        "--package",
        str(package),
        "--scores",
    ]


def _outputs(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def _each_done_once(summaries: list[dict], inputs: list[str]) -> list[int]:
    """Every input is ``done`` by exactly one run, the other run calls it ``another-run`` (or
    ``skipped``: done before it started); how many each run did."""
    done_by: dict[str, int] = {}
    for k, summary in enumerate(summaries):
        assert summary["stopped"] is None and not summary["interrupted"]
        assert sorted(Path(r["input"]).name for r in summary["images"]) == sorted(inputs)
        for record in summary["images"]:
            name = Path(record["input"]).name
            if record["status"] == "done":
                assert name not in done_by, f"{name} was segmented by both runs"
                done_by[name] = k
            else:
                assert record["status"] in ("another-run", "skipped"), record
    assert sorted(done_by) == sorted(inputs), "some image was done by neither run"
    return [list(done_by.values()).count(k) for k in range(len(summaries))]


def _race(package: Path, inputs: Path, tmp_path: Path, first: str) -> list[str]:
    """Run twice at once on one folder, with a live writer's and a dead writer's temporary
    planted for ``first`` (an output both runs clean before writing); check everything and
    return the runs' summaries (stdout)."""
    reference = tmp_path / "reference"
    assert main(_command(package, inputs, reference)[3:]) == 0
    expected = _outputs(reference)
    assert first in expected and len(expected) > 2

    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    try:
        me = this_owner()
        start = atomic.process_start(holder.pid) or 0
        live = _plant(out / first, Owner(me.host, holder.pid, start))
        dead = _plant(out / first, Owner(me.host, _dead_pid(), start))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        reports = [tmp_path / f"run{k}.json" for k in range(2)]
        runs = [
            subprocess.Popen(
                [*_command(package, inputs, out), "--json", str(report)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=ROOT,
            )
            for report in reports
        ]
        results = [run.communicate(timeout=600) for run in runs]
        for run, (stdout, stderr) in zip(runs, results, strict=True):
            assert run.returncode == 0, stderr
            assert "Traceback" not in stderr and "failed 0" in stdout, stdout + stderr
        summaries = [json.loads(report.read_text()) for report in reports]
        _each_done_once(summaries, sorted(p.name for p in inputs.iterdir()))
        assert not list(out.rglob("*.claim*")), "a claim was left behind"
        got = _outputs(out)
        assert got.keys() == expected.keys()
        for name, data in expected.items():
            assert got[name] == data, f"{name} differs from a single run's"
        for name in got:
            if name.endswith(".png") and name != "classes.json":
                with Image.open(out / name) as mask:
                    mask.load()
        if start:  # its owner is alive with this start time: neither run may touch it
            assert live.exists() and live.read_bytes() == b"partial"
            assert not dead.exists(), "the dead writer's temporary was not cleaned"
            assert _temps(out) == [live.name]
    finally:
        holder.communicate(input=b"")  # the holder exits
    if start:
        assert remove_stale_temps(out / first) == 1  # now its owner is gone
    else:  # no start times here: the age rule keeps both until the bound
        assert remove_stale_temps(out / first, now=time.time() + 2 * atomic.STALE_AGE_SECONDS) == 2
    assert _temps(out) == []
    return [stdout for stdout, _ in results]


def test_two_runs_many_small_images(package: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(20):
        Image.fromarray(image(40 + 3 * i, 56, seed=i)).save(inputs / f"img{i:02d}.png")
    _race(package, inputs, tmp_path, "img00.png")


def test_two_runs_large_image_in_strips(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Binary PPM is always segmented and written in strips (``Batch.streamed``); the in-process
    reference run records that both images really took that path."""
    from fcnseg.host.batch import Batch

    streamed: list[str] = []
    strips = Batch.strips

    def recording(self: Batch, job, record) -> None:
        streamed.append(Path(job.source).name)
        strips(self, job, record)

    monkeypatch.setattr(Batch, "strips", recording)
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write_ppm(inputs / "big.ppm", image(600, 480, seed=3))
    for k in range(2, 5):
        _write_ppm(inputs / f"big{k}.ppm", image(320, 400, seed=k))
    _race(package, inputs, tmp_path, "big.png")
    assert sorted(streamed) == ["big.ppm", "big2.ppm", "big3.ppm", "big4.ppm"]


def test_a_killed_runs_claims_are_taken_over_or_cleared(package: Path, tmp_path: Path) -> None:
    """A run killed outright leaves claims: on an image it had not finished (the next run takes
    it over and does the image) and on one whose mask it had just committed (the next run skips
    the image and removes the claim)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        Image.fromarray(image(30, 36, seed=i)).save(inputs / f"img{i}.png")
    out = tmp_path / "out"
    assert main(_command(package, inputs / "img0.png", out)[3:]) == 0
    me = this_owner()
    for name in ("img0.png", "img1.png"):
        _plant_claim(out / name, Owner(me.host, _dead_pid(), me.start).tag)
    report = tmp_path / "run.json"
    assert main([*_command(package, inputs, out)[3:], "--json", str(report)]) == 0
    statuses = {
        Path(r["input"]).name: r["status"] for r in json.loads(report.read_text())["images"]
    }
    assert statuses == {"img0.png": "skipped", "img1.png": "done", "img2.png": "done"}
    assert not list(out.glob(".*")), "claims or temporaries left"


def test_an_image_a_live_run_holds_is_left_to_it(package: Path, tmp_path: Path) -> None:
    """A claim whose owner is alive (a helper process standing in for another run): the image
    is not touched, and the summary says who has it; the rest is done; exit 0."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(2):
        Image.fromarray(image(30, 36, seed=i)).save(inputs / f"img{i}.png")
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    try:
        me = this_owner()
        tag = Owner(me.host, holder.pid, atomic.process_start(holder.pid) or 0).tag
        held = _plant_claim(out / "img1.png", tag)
        report = tmp_path / "run.json"
        assert main([*_command(package, inputs, out)[3:], "--json", str(report)]) == 0
        records = {Path(r["input"]).name: r for r in json.loads(report.read_text())["images"]}
        assert records["img0.png"]["status"] == "done"
        assert records["img1.png"]["status"] == "another-run"
        message = f"being segmented by another run (pid {holder.pid})"
        assert records["img1.png"]["message"] == message
        assert not (out / "img1.png").exists() and held.read_text().strip() == tag
    finally:
        holder.communicate(input=b"")
    assert main(_command(package, inputs, out)[3:]) == 0  # its owner gone: taken over and done
    assert (out / "img1.png").is_file() and not list(out.glob(".*"))


def test_with_overwrite_a_mask_written_since_the_start_is_another_runs(
    package: Path, tmp_path: Path
) -> None:
    """--overwrite redoes masks from before the run; one written after the run started (by a
    concurrent run, here dated ahead) counts as done by another run and is left alone."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(2):
        Image.fromarray(image(30, 36, seed=i)).save(inputs / f"img{i}.png")
    out = tmp_path / "out"
    assert main(_command(package, inputs, out)[3:]) == 0
    old, new = out / "img0.png", out / "img1.png"
    past, future = time.time() - 3600, time.time() + 3600
    os.utime(old, (past, past))
    new.write_bytes(b"another run's mask")
    os.utime(new, (future, future))
    report = tmp_path / "run.json"
    args = [*_command(package, inputs, out)[3:], "--overwrite", "--json", str(report)]
    assert main(args) == 0
    statuses = {
        Path(r["input"]).name: r["status"] for r in json.loads(report.read_text())["images"]
    }
    assert statuses == {"img0.png": "done", "img1.png": "another-run"}
    assert old.stat().st_mtime > past + 60 and new.read_bytes() == b"another run's mask"
