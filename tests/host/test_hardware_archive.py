"""``hardware.tar.xz``: deterministic packing, safe unpacking, one-time materialisation."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from fcnseg.errors import UserError
from fcnseg.host import hardware


def _folder(root: Path) -> Path:
    (root / "MVAU_hls_0").mkdir(parents=True)
    (root / "graph.json").write_text('{"format": "fcnseg-hardware"}\n')
    (root / "MVAU_hls_0" / "execute_MVAU_hls.cpp").write_text("int main() { return 0; }\n")
    return root


def _tar(members: list[tarfile.TarInfo], data: bytes = b"x") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buffer.getvalue()


def test_pack_is_deterministic_and_round_trips(tmp_path):
    src = _folder(tmp_path / "a")
    first = hardware.pack(src)
    (src / "graph.json").touch()  # a newer mtime changes nothing
    assert hardware.pack(src) == first
    archive = tmp_path / "hardware.tar.xz"
    archive.write_bytes(first)
    assert hardware.read_member(archive, "hardware/graph.json") == (src / "graph.json").read_bytes()
    assert hardware.read_member(archive, "hardware/none.json") is None
    out = hardware.extract(archive, tmp_path / "out")
    assert (out / "MVAU_hls_0" / "execute_MVAU_hls.cpp").read_text().startswith("int main")


def test_materialize_unpacks_once(tmp_path):
    archive = tmp_path / "hardware.tar.xz"
    archive.write_bytes(hardware.pack(_folder(tmp_path / "a")))
    first = hardware.materialize(archive, tmp_path / "cache")
    marker = first / "graph.json"
    stamp = marker.stat().st_mtime_ns
    again = hardware.materialize(archive, tmp_path / "cache")
    assert again == first and marker.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [first.parent.name]


def _link(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return info


@pytest.mark.parametrize(
    "member,match",
    [
        (tarfile.TarInfo("hardware/../../escape.txt"), "outside hardware/"),
        (tarfile.TarInfo("/abs/hardware.txt"), "outside hardware/"),
        (tarfile.TarInfo("other/file.txt"), "outside hardware/"),
        (_link("hardware/link"), "not a regular file"),
    ],
)
def test_extract_refuses_unsafe_members(tmp_path, member, match):
    archive = tmp_path / "hardware.tar.xz"
    member.size = 1 if member.isfile() else 0
    archive.write_bytes(_tar([member]))
    with pytest.raises(UserError, match=match):
        hardware.extract(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_a_damaged_archive_is_one_line(tmp_path):
    archive = tmp_path / "hardware.tar.xz"
    archive.write_bytes(hardware.pack(_folder(tmp_path / "a"))[:40])
    with pytest.raises(UserError) as err:
        hardware.extract(archive, tmp_path / "out")
    assert "\n" not in str(err.value)
