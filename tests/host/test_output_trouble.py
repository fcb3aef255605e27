"""Issue 16, part 3: output trouble is found up front, a disk that fills mid-run stops the batch
cleanly, and an image's outputs are committed together or not at all.

Where this process may mount (root, as in the sandbox and CI containers), the file systems are
real: a read-only tmpfs, a full one, and one that fills up during the batch (a filler file takes
most of it; removing it and re-running finishes the rest). Where it may not, those tests skip
with the reason, and the same rules are checked by raising ``ENOSPC`` from ``os.fsync`` (every
output is fsynced before it is renamed: :func:`fcnseg.atomic.atomic_open`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from fcnseg import atomic
from fcnseg.atomic import Owner, atomic_group, remove_stale_temps, this_owner
from fcnseg.cli import main
from fcnseg.host import output_folder
from fcnseg.host.output_folder import MIN_FREE_BYTES, disk_trouble, estimate_bytes
from tests.helpers.images import image
from tests.helpers.packages import tiny_package

ROOT = Path(__file__).resolve().parents[2]
#: the outputs of one image with --overlay-format png --scores, by suffix
SUFFIXES = (".png", "_overlay.png", "_scores.npz")


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_package(tmp_path_factory.mktemp("pkg") / "tiny-pynq-z2")


@contextlib.contextmanager
def tmpfs(where: Path, size_kb: int, *options: str) -> Iterator[Path]:
    """A real tmpfs of ``size_kb`` mounted at ``where``; the test skips if this process may not
    mount (not root, or no CAP_SYS_ADMIN)."""
    where.mkdir(parents=True, exist_ok=True)
    opts = ",".join([*options, f"size={size_kb}k"])
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root (a real full/read-only disk)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], check=False,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """A filler file taking all but about ``leave`` bytes of ``folder``'s file system."""
    filler = folder / "filler.bin"
    stat = os.statvfs(folder)
    size = max(0, stat.f_bavail * stat.f_frsize - leave)
    with open(filler, "wb") as handle:
        handle.write(b"\0" * size)
    return filler


def segment(*args: object) -> int:
    return main(["segment", *map(str, args)])


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(8):
        Image.fromarray(image(96, 128, seed=10 + i)).save(folder / f"i{i}.png")
    return folder


# --- unit: committing a set together -----------------------------------------------------------


def test_group_commits_every_member_the_last_one_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []
    replace = os.replace

    def recording(src, dst) -> None:
        order.append(Path(dst).name)
        replace(src, dst)

    with atomic_group(tmp_path / "a.png") as group:
        staged = [group.path(tmp_path / n) for n in ("a.png", "a_scores.npz", "a_overlay.jpg")]
        for path in staged:
            with atomic.atomic_open(path) as handle:  # written in place: no temp of a temp
                handle.write(path.name.encode())
        assert visible(tmp_path) == sorted(p.name for p in staged)  # only the temporaries
        for path, name in zip(staged, ("a.png", "a_scores.npz", "a_overlay.jpg"), strict=True):
            assert atomic.parse_owner(path, tmp_path / name) == this_owner()
            assert path.name.endswith(".tmp" + Path(name).suffix)  # writers pick formats by it
        monkeypatch.setattr(atomic.os, "replace", recording)
    assert order == ["a_scores.npz", "a_overlay.jpg", "a.png"]  # the mask last
    assert visible(tmp_path) == ["a.png", "a_overlay.jpg", "a_scores.npz"]
    assert (tmp_path / "a_overlay.jpg").read_bytes().startswith(b".a_overlay.jpg.")
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == atomic.file_mode()  # not mkstemp's


def test_group_failing_inside_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "a_overlay.jpg").write_bytes(b"old")  # an earlier run's file is kept
    with pytest.raises(ValueError, match="mask failed"), atomic_group(tmp_path / "a.png") as g:
        g.path(tmp_path / "a_overlay.jpg").write_bytes(b"new")
        raise ValueError("mask failed")
    assert visible(tmp_path) == ["a_overlay.jpg"]
    assert (tmp_path / "a_overlay.jpg").read_bytes() == b"old"


def test_group_whose_last_rename_fails_removes_what_it_renamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replace = os.replace

    def failing_for_the_mask(src, dst) -> None:
        if Path(dst).name == "a.png":
            raise OSError(errno.EIO, "I/O error")
        replace(src, dst)

    with pytest.raises(OSError, match="I/O error"), atomic_group(tmp_path / "a.png") as group:
        for name in ("a_scores.npz", "a.png"):
            group.path(tmp_path / name).write_bytes(b"x")
        monkeypatch.setattr(atomic.os, "replace", failing_for_the_mask)
    assert visible(tmp_path) == []  # the scores renamed before the mask went again


def test_group_without_its_last_member_commits_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="a.png was not written"):
        with atomic_group(tmp_path / "a.png") as group:
            group.path(tmp_path / "a_scores.npz").write_bytes(b"x")
    assert visible(tmp_path) == []


def test_a_dead_writers_group_member_is_a_stale_temporary(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    me = this_owner()
    dead = tmp_path / f".a_overlay.jpg.{Owner(me.host, child.pid, me.start).tag}.k3x9q_2a.tmp.jpg"
    live = tmp_path / f".a_overlay.jpg.{me.tag}.z9z9z9z9.tmp.jpg"
    other = tmp_path / f".a_overlay.jpg.{Owner(me.host, child.pid, me.start).tag}.k3x9.tmp.png"
    for path in (dead, live, other):
        path.write_bytes(b"partial")
    assert remove_stale_temps(tmp_path / "a_overlay.jpg") == 1
    assert not dead.exists() and live.exists()
    assert other.exists()  # not a name this module gives a temporary of a_overlay.jpg


# --- unit: what the up-front check needs, what stops a batch -----------------------------------


def test_estimate_counts_the_largest_image_with_a_floor() -> None:
    small = estimate_bytes([(10, 10)], overlay=None, scores=False, stride=2, classes=3)
    assert small == MIN_FREE_BYTES
    big = [(20000, 30000), (100, 100)]
    mask = estimate_bytes(big, overlay=None, scores=False, stride=32, classes=21)
    assert mask == int(20000 * 30000 * output_folder.MASK_BYTES_PER_PIXEL) > MIN_FREE_BYTES
    scores = estimate_bytes(big, overlay=None, scores=True, stride=32, classes=21)
    assert scores - mask == 625 * 938 * 21 * 4  # int32 cells, rounded up
    jpeg = estimate_bytes(big, overlay="jpeg", scores=False, stride=32, classes=21)
    png = estimate_bytes(big, overlay="png", scores=False, stride=32, classes=21)
    assert mask < jpeg < png


def test_disk_trouble_follows_the_cause() -> None:
    assert disk_trouble(OSError(errno.ENOSPC, "No space left on device")) == "disk full"
    assert disk_trouble(OSError(errno.EROFS, "Read-only file system")) == "read-only file system"
    assert disk_trouble(OSError(errno.EDQUOT, "Disk quota exceeded")) == "disk quota exceeded"
    assert disk_trouble(OSError(errno.EACCES, "Permission denied")) is None
    assert disk_trouble(ValueError("not an image")) is None and disk_trouble(None) is None
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("encoder failed") from inner
    except RuntimeError as outer:
        assert disk_trouble(outer) == "disk full"


# --- the up-front check, on real file systems --------------------------------------------------


def test_read_only_file_system_is_one_line(package: Path, inputs: Path, tmp_path: Path, capsys):
    before = {p.name: p.read_bytes() for p in inputs.iterdir()}
    with tmpfs(tmp_path / "ro", 512, "ro") as ro:
        report = tmp_path / "run.json"
        for out in (ro, ro / "new" / "deeper"):  # an existing folder, and one to be made
            code = segment(inputs, "--package", package, "-o", out, "--json", report)
            line = one_error_line(capsys.readouterr().err)
            assert code == 2 and line.startswith(f"fcnseg: error: {out}: ")
            assert "read-only file system" in line
        assert visible(ro) == [] and not report.exists()  # nothing written, no summary either
    assert {p.name: p.read_bytes() for p in inputs.iterdir()} == before  # no image touched


def test_full_file_system_is_one_line(package: Path, inputs: Path, tmp_path: Path, capsys):
    with tmpfs(tmp_path / "full", 1024) as disk:
        filler = fill(disk, 0)
        out = disk / "out"
        assert segment(inputs, "--package", package, "-o", out) == 2
        line = one_error_line(capsys.readouterr().err)
        assert line.startswith(f"fcnseg: error: {out}: ") and "need ~4 MB" in line, line
        assert "disk full" in line or "MB free" in line
        assert visible(disk) == ["filler.bin"]  # the folder this check made went again
        filler.unlink()
        fill(disk, 512 * 1024)  # room for the probe, not for the first image's outputs
        assert segment(inputs, "--package", package, "-o", out, "--scores") == 2
        line = one_error_line(capsys.readouterr().err)
        assert line.startswith(f"fcnseg: error: {out}: not enough space (0.") and "~4 MB" in line
        assert visible(disk) == ["filler.bin"]


def test_not_writable_folder_is_one_line(package: Path, tmp_path: Path) -> None:
    """As root, a mode-555 folder is writable: the command then runs as ``nobody``."""
    as_nobody: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: a mode 555 folder stays writable")
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        probe = [*as_nobody, sys.executable, "-c", "import fcnseg.host.cli"]
        if subprocess.run(probe, capture_output=True, cwd=ROOT, env=env, check=False).returncode:
            pytest.skip("this interpreter cannot run as nobody (it lives under a private folder)")
    base = Path(tempfile.mkdtemp(prefix="fcnseg-ro-"))  # readable by nobody, unlike tmp_path
    try:
        base.chmod(0o755)
        pkg = base / "pkg"
        shutil.copytree(package, pkg)
        Image.fromarray(image(20, 24)).save(base / "a.png")
        for path in (pkg, *pkg.rglob("*"), base / "a.png"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        out = base / "out"
        out.mkdir(mode=0o555)
        out.chmod(0o555)
        command = [*as_nobody, sys.executable, "-m", "fcnseg.cli", "segment", str(base / "a.png")]
        done = subprocess.run(
            [*command, "--package", str(pkg), "-o", str(out)],
            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=False, timeout=300,
        )  # fmt: skip
        line = one_error_line(done.stderr)
        assert done.returncode == 2
        assert line == f"fcnseg: error: {out}: cannot write here (not writable)"
        assert visible(out) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_an_output_that_is_a_file_is_one_line(package: Path, inputs: Path, tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("a file")
    assert segment(inputs, "--package", package, "-o", out) == 2
    assert one_error_line(capsys.readouterr().err) == f"fcnseg: error: {out}: is not a folder"


def test_the_probe_leaves_nothing_and_cleans_a_dead_probe(
    package: Path, inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    me = this_owner()
    crashed = out / f".{output_folder.PROBE}.{Owner(me.host, child.pid, me.start).tag}.ab12.tmp"
    crashed.write_bytes(b"fcnseg\n")
    assert segment(inputs / "i0.png", "--package", package, "-o", out) == 0
    assert visible(out) == ["classes.json", "i0.png"]


# --- a disk that fills up during the batch -----------------------------------------------------


def _reference(package: Path, inputs: Path, tmp_path: Path, extra: list[str]) -> dict[str, bytes]:
    ref = tmp_path / "reference"
    assert segment(inputs, "--package", package, "-o", ref, *extra) == 0
    return {p.name: p.read_bytes() for p in ref.iterdir()}


def _check_stopped(
    out: Path, report: Path, err: str, names: list[str], suffixes, reason: str = "disk full"
) -> int:
    """The batch stopped cleanly: one line naming an image and the disk, complete sets only,
    nothing hidden left, the summary saying what was and was not done; returns images done."""
    line = one_error_line(err)
    assert reason in line and "batch stopped" in line, line
    summary = json.loads(report.read_text())
    assert summary["stopped"] == reason
    records = {Path(r["input"]).stem: r for r in summary["images"]}
    statuses = {stem: r["status"] for stem, r in records.items()}
    failed = [stem for stem, status in statuses.items() if status == "failed"]
    assert len(failed) == 1 and f"{failed[0]}." in line  # the line names the image
    assert reason in records[failed[0]]["message"]
    assert set(statuses.values()) <= {"done", "failed", "not-attempted"}
    for record in records.values():
        if record["status"] == "not-attempted":
            assert record["message"] == f"not attempted: {reason}"
    files = set(visible(out))
    assert not [f for f in files if f.startswith(".")], files  # no temporaries, no claims
    for stem in names:
        present = {stem + s in files for s in suffixes}
        assert len(present) == 1, f"{stem}: a partial set {sorted(files)}"  # all or nothing
        assert (True in present) == (statuses[stem] == "done"), stem
    done = sum(status == "done" for status in statuses.values())
    assert 0 < done < len(names), statuses
    return done


@pytest.mark.parametrize("how", ["whole", "strips"])
def test_disk_filling_mid_run_stops_cleanly_and_a_rerun_finishes(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, how: str
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    names = [f"i{i}" for i in range(8)]
    for i, name in enumerate(names):
        rgb = image(96, 128, seed=20 + i)
        if how == "whole":
            Image.fromarray(rgb).save(folder / f"{name}.png")
        else:  # binary PPM: segmented and written in strips
            (folder / f"{name}.ppm").write_bytes(b"P6\n128 96\n255\n" + rgb.tobytes())
    extra = ["--overlay-format", "png", "--overlay", "--scores"] if how == "whole" else ["--scores"]
    suffixes = SUFFIXES if how == "whole" else (".png", "_scores.npz")
    expected = _reference(package, folder, tmp_path, extra)
    capsys.readouterr()
    monkeypatch.setattr(output_folder, "MIN_FREE_BYTES", 32 * 1024)
    with tmpfs(tmp_path / "disk", 1024) as disk:
        out, report = disk / "out", tmp_path / "run.json"
        filler = fill(disk, 150 * 1024)  # two or three images' outputs
        code = segment(folder, "--package", package, "-o", out, *extra, "--json", report)
        captured = capsys.readouterr()
        assert code == 1, captured.err
        done = _check_stopped(out, report, captured.err, names, suffixes)
        filler.unlink()
        assert segment(folder, "--package", package, "-o", out, *extra) == 0
        assert f"skipped {done}" in capsys.readouterr().out
        got = {p.name: p.read_bytes() for p in out.iterdir()}
    assert got == expected  # everything, equal to an undisturbed run's


@pytest.mark.parametrize(
    ("code", "reason", "fix"),
    [
        (errno.ENOSPC, "disk full", "make room"),
        (errno.EDQUOT, "disk quota exceeded", "make room"),
        (errno.EROFS, "read-only file system", "make it writable"),
    ],
)
def test_disk_full_without_a_mount(
    package: Path,
    inputs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
    code: int,
    reason: str,
    fix: str,
) -> None:
    """The same rules where nothing can be mounted: ``os.fsync`` raises ENOSPC (or EDQUOT, or
    EROFS: a file system remounted read-only) for files of the output folder from the 9th on
    (the probe, ``classes.json``, then three per image)."""
    extra = ["--overlay-format", "png", "--overlay", "--scores"]
    expected = _reference(package, inputs, tmp_path, extra)
    capsys.readouterr()
    out, report = tmp_path / "out", tmp_path / "run.json"
    calls, fsync = [], os.fsync

    def full_after_some(fd: int) -> None:
        with contextlib.suppress(OSError):  # only the output folder fills up, not the report's
            if not os.readlink(f"/proc/self/fd/{fd}").startswith(str(out)):
                return fsync(fd)
        calls.append(fd)
        if len(calls) > 8:
            raise OSError(code, os.strerror(code))
        return fsync(fd)

    monkeypatch.setattr(os, "fsync", full_after_some)
    status = segment(inputs, "--package", package, "-o", out, *extra, "--workers", "1",
                     "--json", report)  # fmt: skip
    captured = capsys.readouterr()
    assert status == 1, captured.err
    monkeypatch.setattr(os, "fsync", fsync)
    names = [f"i{i}" for i in range(8)]
    done = _check_stopped(out, report, captured.err, names, SUFFIXES, reason)
    assert done == 2  # probe, classes.json, then three fsyncs per image
    assert f"5 image(s) not attempted; {fix} and run the same command again" in captured.err
    assert segment(inputs, "--package", package, "-o", out, *extra) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == expected


# --- an image's outputs together ---------------------------------------------------------------


def test_a_failing_mask_leaves_none_of_its_images_outputs(
    package: Path, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Before issue 16 an image whose mask failed kept its overlay and scores (and a re-run
    skipped nothing, but a reader saw a partial set)."""
    from fcnseg.host import images

    save_mask = images.save_mask

    def failing_for_i3(path, labels, *args, **kwargs) -> None:
        if Path(path).name.startswith(".i3.png."):  # its temporary, renamed by the group
            raise ValueError("the mask could not be encoded")
        save_mask(path, labels, *args, **kwargs)

    monkeypatch.setattr(images, "save_mask", failing_for_i3)
    out = tmp_path / "out"
    assert segment(inputs, "--package", package, "-o", out, "--overlay", "--scores") == 1
    err = capsys.readouterr().err
    assert "i3.png: ValueError: the mask could not be encoded" in err
    files = visible(out)
    assert not [f for f in files if f.startswith("i3")] and not [f for f in files if f[0] == "."]
    assert {
        f"i{i}{s}" for i in (0, 1, 2, 4) for s in (".png", "_overlay.jpg", "_scores.npz")
    } <= set(files)
