"""Edit a deployment package *consistently*, as a careful (or hostile) user would.

:func:`tamper` changes accelerator.json and/or arrays of accelerator.npz, then re-hashes the
package: every listed file's sha256 in ``files`` and, in format version 2, the manifest digest
(``fcnseg.host.package.manifest_digest``). The hashes then vouch for the edit, so whatever
refuses it is the loader's semantic validation (:mod:`fcnseg.host.validation`), not a hash.

    tamper(pkg, json_edit=lambda meta: meta["io"]["output"]["scale"].__setitem__(0, -1.0))
    tamper(pkg, arrays={"002_conv1.weights": w + 100})
    tamper(pkg, layer_edit=("conv1", lambda layer: layer["attributes"].update(MW=5)))
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

import fcnseg.host.package as package_format
from fcnseg.host.package import JSON_NAME, NPZ_NAME, sha256_file

Meta = dict[str, Any]


def segment_refuses(args: list[str], capsys: Any, out: Path, *needles: str) -> str:
    """Run ``fcnseg segment ARGS -o OUT`` and check that it refused the package the way users
    are promised: exit 2, one ``fcnseg: error:`` line holding every needle, and no output
    folder (nothing was done first). Returns the line."""
    from fcnseg.cli import main

    code = main(["segment", *args, "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fcnseg: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists(), "work was done before the package was refused"
    return lines[0]


def copy_package(src: Path, dst: Path) -> Path:
    """A copy of the package folder ``src`` at ``dst`` (to tamper with)."""
    shutil.copytree(src, dst)
    return dst


def read_meta(package_dir: Path) -> Meta:
    return json.loads((package_dir / JSON_NAME).read_text())


def array_key(package_dir: Path, layer: str, role: str) -> str:
    """The npz key of ``layer``'s array ``role``."""
    for entry in read_meta(package_dir)["layers"]:
        if entry["name"] == layer:
            return entry["arrays"][role]
    raise KeyError(layer)


def read_array(package_dir: Path, key: str) -> np.ndarray:
    with np.load(package_dir / NPZ_NAME, allow_pickle=False) as npz:
        return npz[key]


def write_npz_member(package_dir: Path, key: str, raw: bytes) -> None:
    """Replace (or add) one npz member's raw bytes (a hand-made ``.npy``, header and all)."""
    path = package_dir / NPZ_NAME
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    members[f"{key}.npy"] = raw
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def tamper(
    package_dir: Path,
    *,
    json_edit: Callable[[Meta], Meta | None] | None = None,
    layer_edit: tuple[str, Callable[[dict[str, Any]], None]] | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Edit a package in place and re-hash it so its hashes vouch for the edit.

    ``json_edit(meta)`` edits the parsed accelerator.json in place (a dict it returns replaces
    it; any other return value is ignored, so ``lambda m: m[...].pop(k)`` works);
    ``layer_edit = (name, edit)`` edits one layer entry in place; ``arrays`` replaces (or adds)
    npz members by key, keeping the others byte for byte."""
    if arrays:
        for key, arr in arrays.items():
            write_npz_member(package_dir, key, npy_bytes(arr))
    meta = read_meta(package_dir)
    if layer_edit is not None:
        name, edit = layer_edit
        entries = [e for e in meta["layers"] if e["name"] == name]
        if len(entries) != 1:
            raise KeyError(f"no single layer {name!r}")
        edit(entries[0])
    if json_edit is not None:
        result = json_edit(meta)
        meta = result if isinstance(result, dict) else meta
    rehash(package_dir, meta)
    return package_dir


def rehash(package_dir: Path, meta: Meta | None = None) -> None:
    """Write ``meta`` (default: the package's own) with fresh ``files`` sha256s of the listed
    files and, where the format has one, a fresh manifest digest."""
    meta = read_meta(package_dir) if meta is None else meta
    if isinstance(meta.get("files"), dict):
        meta["files"] = {
            rel: sha256_file(package_dir / rel) if (package_dir / rel).is_file() else digest
            for rel, digest in meta["files"].items()
        }
    digest = getattr(package_format, "manifest_digest", None)
    key = getattr(package_format, "MANIFEST_KEY", "manifest_sha256")
    if digest is not None:
        meta[key] = digest(meta)
    (package_dir / JSON_NAME).write_text(json.dumps(meta, indent=1) + "\n")
