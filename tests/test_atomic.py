"""fcnseg.atomic: outputs are replaced whole or not at all."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

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


def test_replace_dir_refuses_to_replace_a_file(tmp_path: Path) -> None:
    target = tmp_path / "package"
    target.write_text("not a folder")
    new = tmp_path / "new"
    new.mkdir()
    with pytest.raises(NotADirectoryError):
        replace_dir(new, target)
    assert target.read_text() == "not a folder"
