"""Inputs that are links, loops, pipes or unreadable: each one line naming it, the rest done,
and no scan that hangs (issue 16, part 4).

Permission tests need a user whom permissions stop: root reads everything, so as root they run
``collect_inputs`` in a child process as ``nobody`` (``setpriv``), and are skipped only when
that is impossible.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from fcnseg.cli import main
from fcnseg.host.inputs import InputError, collect_inputs
from tests.helpers.images import image
from tests.helpers.packages import tiny_package


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image(9, 11)).save(path)
    return path


@pytest.fixture()
def bounded() -> Iterator[None]:
    """Fail (not hang) if a scan runs away: SIGALRM after 30 s."""

    def expired(_signum: int, _frame: object) -> None:
        raise TimeoutError("the scan did not finish in 30 s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(30)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _collect(*items: Path | str, **options: object) -> tuple[list[str], list[str]]:
    jobs, errors = collect_inputs(tuple(str(i) for i in items), **options)
    assert all(isinstance(e, InputError) and str(e) == f"{e.path}: {e.reason}" for e in errors)
    assert all("\n" not in e for e in errors)
    return [str(j.stem) for j in jobs], list(errors)


def test_a_symlink_loop_as_input(tmp_path: Path) -> None:
    (tmp_path / "self").symlink_to("self")
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    stems, errors = _collect(tmp_path / "self", tmp_path / "a", tmp_path / "self" / "x.png")
    assert stems == []
    assert errors == [
        f"{tmp_path}/self: symbolic link loop",
        f"{tmp_path}/a: symbolic link loop",
        f"{tmp_path}/self/x.png: symbolic link loop",
    ]


def test_a_broken_link_names_its_target(tmp_path: Path) -> None:
    (tmp_path / "x.png").symlink_to("gone/y.png")
    stems, errors = _collect(tmp_path / "x.png")
    assert stems == [] and errors == [f"{tmp_path}/x.png: broken symbolic link (to gone/y.png)"]
    # ... and a name that is neither a path nor a pattern that matches stays what it was
    assert _collect(tmp_path / "nothing*.png")[1] == [
        f"{tmp_path}/nothing*.png: no such file or folder, and no file matches it"
    ]


def test_a_folder_scan_reports_loops_and_goes_on(tmp_path: Path, bounded: None) -> None:
    folder = tmp_path / "in"
    _png(folder / "a.png")
    _png(folder / "sub" / "b.png")
    (folder / "sub" / "up").symlink_to("..")  # back to a folder that contains it
    (folder / "here").symlink_to(".")
    (folder / "self").symlink_to("self")  # the OS's own loop (ELOOP)
    (folder / "dead.png").symlink_to("nowhere.png")
    (folder / "dead-notes").symlink_to("nowhere.txt")  # not an image name: not an input
    stems, errors = _collect(folder)
    assert stems == ["a", "sub/b"]
    assert errors == [
        f"{folder}/dead.png: broken symbolic link (to nowhere.png)",
        f"{folder}/here: symbolic link loop (to ., a folder that contains it)",
        f"{folder}/self: symbolic link loop",
        f"{folder}/sub/up: symbolic link loop (to .., a folder that contains it)",
    ]
    # only the broken image is a lost input; the loops are notes (every image was scanned)
    assert [line.note for line in errors] == [False, True, True, True]


def test_a_loop_inside_a_scanned_folder_is_a_note_not_a_failure(
    tmp_path: Path, package_dir: Path, bounded: None, capsys
) -> None:
    folder = tmp_path / "in"
    _png(folder / "a.png")
    (folder / "latest").symlink_to(".")
    out = tmp_path / "out"
    code = main(["segment", str(folder), "--package", str(package_dir), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"fcnseg: note: {folder}/latest: symbolic link loop" in err
    assert (out / "a.png").is_file()


def test_linked_folders_are_followed_and_listed_once(tmp_path: Path, bounded: None) -> None:
    """A tree of links that doubles at every level (2**24 paths) is walked folder by folder."""
    other = tmp_path / "other"
    _png(other / "c.png")
    folder = tmp_path / "in"
    _png(folder / "a.png")
    (folder / "linked").symlink_to(other)
    levels = tmp_path / "levels"
    for k in range(24):
        (levels / f"l{k}").mkdir(parents=True)
    for k in range(23):
        for name in ("x", "y"):
            (levels / f"l{k}" / name).symlink_to(levels / f"l{k + 1}")
    _png(levels / "l23" / "deep.png")
    (folder / "levels").symlink_to(levels / "l0")
    start = time.perf_counter()
    stems, errors = _collect(folder)
    assert time.perf_counter() - start < 10
    assert errors == []
    assert stems == ["a", "levels/" + "x/" * 23 + "deep", "linked/c"]


def test_recursive_globs_do_not_follow_links_forever(tmp_path: Path, bounded: None) -> None:
    """Python's glob('**', recursive=True) would walk 2**40 paths here (two links to '.')."""
    folder = tmp_path / "in"
    _png(folder / "a.png")
    _png(folder / "sub" / "b.png")
    _png(folder / ".hidden" / "h.png")
    (folder / "l1").symlink_to(".")
    (folder / "l2").symlink_to(".")
    stems, errors = _collect(f"{folder}/**/*.png")
    assert stems == ["a", "b"]  # a hidden folder is not entered by **, as glob does
    assert errors == []  # the looping links match no *.png: not reported
    stems, errors = _collect(f"{folder}/**")
    assert stems == ["a", "b"]
    assert errors == [
        f"{folder}/l1: symbolic link loop (to ., a folder that contains it)",
        f"{folder}/l2: symbolic link loop (to ., a folder that contains it)",
    ]


def test_glob_matches_that_lead_nowhere_are_reported(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    (tmp_path / "b.png").symlink_to("missing.png")
    stems, errors = _collect(tmp_path / "*.png")
    assert stems == ["a"]
    assert errors == [f"{tmp_path}/b.png: broken symbolic link (to missing.png)"]


def test_a_pipe_is_refused_without_opening_it(tmp_path: Path, bounded: None) -> None:
    fifo = tmp_path / "p.png"
    os.mkfifo(fifo)
    _png(tmp_path / "in" / "a.png")
    os.mkfifo(tmp_path / "in" / "q.png")  # in a folder: only regular files are images
    stems, errors = _collect(fifo, tmp_path / "in")
    assert stems == ["a"] and errors == [f"{fifo}: not a file or folder (a pipe)"]


def test_the_output_folder_is_skipped_through_links(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _png(folder / "a.png")
    _png(folder / "out" / "a.png")  # a mask of an earlier run
    (folder / "masks").symlink_to("out")
    stems, errors = _collect(folder, exclude=folder / "out")
    assert stems == ["a"] and errors == []


# --- permissions -------------------------------------------------------------------------------

_AS_NOBODY = textwrap.dedent(
    """
    import json, sys
    from fcnseg.host.inputs import collect_inputs
    jobs, errors = collect_inputs(tuple(sys.argv[1:]))
    loads = []
    for job in jobs:
        try:
            job.load(1 << 20)
            loads.append("ok")
        except Exception as error:
            loads.append(f"{type(error).__name__}: {error}")
    print(json.dumps({"stems": [str(j.stem) for j in jobs], "loads": loads,
                      "errors": [[e.path, e.reason, str(e)] for e in errors]}))
    """
)


@pytest.fixture()
def shared_tmp() -> Iterator[Path]:
    """A folder another user can enter (pytest's tmp_path is root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="fcnseg-perm-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for root, dirs, _ in os.walk(folder):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
        shutil.rmtree(folder)


def _as_unprivileged(*items: Path) -> dict:
    """``collect_inputs(items)`` (and each job's decode) as a user whom permissions stop."""
    drop: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: permissions stop no one here")
        drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        probe = subprocess.run(
            [*drop, sys.executable, "-c", "import fcnseg.host.inputs"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if probe.returncode != 0:  # e.g. an interpreter installed under /root
            reason = (probe.stderr.strip().splitlines() or ["?"])[-1]
            pytest.skip(f"nobody cannot run {sys.executable} here: {reason}")
    command = [*drop, sys.executable, "-c", _AS_NOBODY, *map(str, items)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_unreadable_folders_and_files(shared_tmp: Path) -> None:
    locked = shared_tmp / "locked"
    _png(locked / "a.png")
    folder = shared_tmp / "in"
    _png(folder / "b.png")
    _png(folder / "sub" / "c.png")
    _png(folder / "closed" / "d.png")
    unreadable = _png(folder / "e.png")
    listable = shared_tmp / "listable"  # may be listed, not entered
    _png(listable / "f.png")
    unreadable.chmod(0o000)
    for path in (locked, folder / "closed"):
        path.chmod(0o000)
    listable.chmod(0o444)
    result = _as_unprivileged(
        locked, locked / "a.png", f"{locked}/*.png", folder, listable, unreadable
    )
    assert result["errors"] == [
        [str(locked), "permission denied", f"{locked}: permission denied"],
        [str(locked / "a.png"), "permission denied", f"{locked}/a.png: permission denied"],
        [f"{locked}/*.png", "permission denied", f"{locked}/*.png: permission denied"],
        [str(folder / "closed"), "permission denied", f"{folder}/closed: permission denied"],
        [str(listable), "permission denied", f"{listable}: permission denied"],
    ]
    # the readable images of the scanned folder are found; the unreadable file is a job that
    # fails as one line when decoded (given twice: by the scan and by name, one job)
    assert result["stems"] == ["b", "e", "sub/c"]
    assert result["loads"] == ["ok", f"UserError: {unreadable}: permission denied", "ok"]


# --- fcnseg segment ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_package(tmp_path_factory.mktemp("pkg") / "tiny-pynq-z2")


def test_segment_reports_bad_inputs_and_does_the_rest(
    package_dir: Path, tmp_path: Path, capsys
) -> None:
    good = _png(tmp_path / "good.png")
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    dead = tmp_path / "dead.png"
    dead.symlink_to("gone.png")
    out, summary = tmp_path / "out", tmp_path / "s.json"
    args = ["segment", str(loop), str(good), str(dead), "--package", str(package_dir)]
    assert main([*args, "-o", str(out), "--json", str(summary)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("fcnseg: ")]
    assert f"fcnseg: {loop}: symbolic link loop" in lines
    assert f"fcnseg: {dead}: broken symbolic link (to gone.png)" in lines
    assert (out / "good.png").is_file()
    records = {r["input"]: r for r in json.loads(summary.read_text())["images"]}
    assert records[str(loop)]["message"] == f"{loop}: symbolic link loop"
    assert records[str(dead)]["message"] == f"{dead}: broken symbolic link (to gone.png)"
    assert records[str(loop)]["status"] == records[str(dead)]["status"] != "skipped"
    assert records[str(good)]["frames"] == {"used": [0], "of": 1}
