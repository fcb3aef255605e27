"""fcnseg.atomic: outputs are replaced whole or not at all."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fcnseg import atomic
from fcnseg.atomic import atomic_open, atomic_path, atomic_write_text, replace_dir


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "mask.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert _siblings(tmp_path) == ["mask.png"]


def test_write_replaces_with_the_usual_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "card.json"
    atomic_write_text(target, "{}\n")
    assert target.read_text() == "{}\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_atomic_path_for_writers_that_take_a_name(tmp_path: Path) -> None:
    target = tmp_path / "weights.bin"
    with atomic_path(target) as tmp:
        assert Path(tmp).parent == tmp_path and not target.exists()
        Path(tmp).write_bytes(b"\x01\x02")
    assert target.read_bytes() == b"\x01\x02"
    assert _siblings(tmp_path) == ["weights.bin"]


def test_replace_dir_swaps_a_whole_folder(tmp_path: Path) -> None:
    target = tmp_path / "package"
    target.mkdir()
    (target / "stale.json").write_text("old")
    new = tmp_path / "new"
    new.mkdir()
    (new / "accelerator.json").write_text("new")
    replace_dir(new, target)
    assert _siblings(target) == ["accelerator.json"]
    assert _siblings(tmp_path) == ["package"]


def test_replace_dir_publishes_a_staged_folder_with_the_usual_mode(tmp_path: Path) -> None:
    """A folder staged with mkdtemp (0700) is published 0777 & ~umask, like ``mkdir``."""
    import stat
    import tempfile

    from fcnseg.atomic import process_umask

    new = Path(tempfile.mkdtemp(dir=tmp_path))
    assert stat.S_IMODE(new.stat().st_mode) == 0o700
    replace_dir(new, tmp_path / "package")
    assert stat.S_IMODE((tmp_path / "package").stat().st_mode) == 0o777 & ~process_umask()


def test_replace_dir_refuses_to_replace_a_file(tmp_path: Path) -> None:
    target = tmp_path / "package"
    target.write_text("not a folder")
    new = tmp_path / "new"
    new.mkdir()
    with pytest.raises(NotADirectoryError):
        replace_dir(new, target)
    assert target.read_text() == "not a folder"


#: 8 threads x 150 atomic writes (and plain files created in between, which see the live umask)
#: in a fresh interpreter with umask 027; the GIL switches threads every microsecond so that a
#: set-and-restore of the umask in one thread interleaves with the others.
THREADS_SCRIPT = """
import os, sys, threading
os.umask(0o027)
sys.setswitchinterval(1e-6)
from fcnseg import atomic
from fcnseg.atomic import atomic_open, atomic_write_text
folder = sys.argv[1]

def work(t):
    for i in range(150):
        atomic_write_text(os.path.join(folder, f"a{t}-{i}.txt"), "x")
        with atomic_open(os.path.join(folder, f"b{t}-{i}.bin")) as handle:
            handle.write(b"y")
        with open(os.path.join(folder, f"plain{t}-{i}"), "w"):
            pass

threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(oct(os.umask(0)))
"""


def test_concurrent_writes_keep_the_umask(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", THREADS_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=root,
        check=True,
    )
    assert result.stdout.strip() == oct(0o027)  # the umask the process started with
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert len(modes) == 8 * 150 * 3
    wrong = {name: oct(mode) for name, mode in modes.items() if mode != 0o640}
    assert not wrong, f"{len(wrong)} files with another mode, e.g. {sorted(wrong.items())[:3]}"


def test_umask_fallback_restores_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without /proc the umask is read by setting it: it must come back unchanged."""

    def no_proc(*args: object, **kwargs: object) -> None:
        raise OSError("no /proc here")

    monkeypatch.setattr(atomic, "open", no_proc, raising=False)
    before = os.umask(0o027)
    try:
        assert atomic._read_umask() == 0o027
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(before)
