"""Issue 16, part 2: two ``fcnseg segment`` runs on one output folder cannot step on each other.

Temporaries carry their owner (host, pid, start time; :mod:`fcnseg.atomic`) and the stale-temp
cleanup removes only those of writers that are gone, or of unknown writers past the age bound.

Unit tests decide each rule with planted names (this process, a reaped child, a reused pid, another
host, the old format, junk). The integration tests start two real ``python -m fcnseg.cli segment``
subprocesses on one folder at once -- 20 small images, and a binary PPM that is always written in
strips -- with a temporary planted for an output, owned by a live helper process: a run that
cleaned it would be deleting a live writer's file. The race between the two runs is real; what is
asserted is not timing-dependent: both exit 0, every output equals a single run's byte for byte,
the live writer's temporary survives both runs (and goes once its owner has exited), a dead
writer's goes, and nothing else is left.
"""

from __future__ import annotations

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
    return sorted(p.name for p in folder.rglob(".*.tmp"))


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
        runs = [
            subprocess.Popen(
                _command(package, inputs, out),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=ROOT,
            )
            for _ in range(2)
        ]
        results = [run.communicate(timeout=600) for run in runs]
        for run, (stdout, stderr) in zip(runs, results, strict=True):
            assert run.returncode == 0, stderr
            assert "Traceback" not in stderr and "failed 0" in stdout, stdout + stderr
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
    _write_ppm(inputs / "big2.ppm", image(320, 400, seed=4))
    _race(package, inputs, tmp_path, "big.png")
    assert sorted(streamed) == ["big.ppm", "big2.ppm"]
