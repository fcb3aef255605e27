"""``fcnseg upgrade``: a version-1 package becomes a version-2 one, keeping everything it carries.

The version-1 packages here are written the way the version-1 writer wrote them: the checked-in
packages with what version 2 added taken out again (no ``manifest_sha256``, format_version 1,
no declared ``weightDataType`` / ``lhs_dtype`` / ``rhs_dtype`` / ``out_dtype``; ``accDataType``
was already recorded). A Vivado build's files (bitfile, driver settings) are added as listed
files, since the upgrade exists to keep them.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from fcnseg.cli import main
from fcnseg.errors import UserError
from fcnseg.host.package import (
    HW_GRAPH_NAME,
    JSON_NAME,
    MANIFEST_KEY,
    NPZ_NAME,
    load_package,
    manifest_digest,
    read_for_upgrade,
    sha256_file,
)
from fcnseg.host.sim.engine import SimEngine
from fcnseg.hw.to_package import DECLARED_TYPES

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "board" / "data" / "fcn8s-tiny"
SHIPPED = ROOT / "host" / "packages" / "fcn8s-pynq-z2"
#: what version 1 did not record (accDataType it did)
NEW_IN_V2 = {"weightDataType", "lhs_dtype", "rhs_dtype", "out_dtype"}
VIVADO_FILES = {"bitfile/top.bit": b"\x00\x09\x0f\xf0bits", "driver/settings.json": b"{}\n"}


def as_version_1(src: Path, dst: Path, extra: dict[str, bytes] | None = None) -> Path:
    """A copy of the version-2 package ``src`` as the version-1 writer wrote it, with ``extra``
    files (package-relative name -> bytes) added and listed."""
    shutil.copytree(src, dst)
    meta = json.loads((dst / JSON_NAME).read_text())
    for key in (MANIFEST_KEY, "upgraded_from"):
        meta.pop(key, None)
    meta["format_version"] = 1
    for layer in meta["layers"]:
        layer["attributes"] = {k: v for k, v in layer["attributes"].items() if k not in NEW_IN_V2}
    for rel, data in (extra or {}).items():
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).write_bytes(data)
        meta["files"][rel] = sha256_file(dst / rel)
    (dst / JSON_NAME).write_text(json.dumps(meta, indent=1) + "\n")
    return dst


def edit_graph(package: Path, edit) -> None:
    """Edit the package's hw_graph.onnx (``edit(nodes by name)``) and re-record its sha256, as a
    version-1 package whose graph really was that way."""
    import onnx

    model = onnx.load(str(package / HW_GRAPH_NAME))
    edit({node.name: node for node in model.graph.node})
    onnx.save(model, str(package / HW_GRAPH_NAME))
    meta = json.loads((package / JSON_NAME).read_text())
    meta["files"][HW_GRAPH_NAME] = sha256_file(package / HW_GRAPH_NAME)
    (package / JSON_NAME).write_text(json.dumps(meta, indent=1) + "\n")


def drop_attribute(node, name: str) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)


def set_string_attribute(node, name: str, value: str) -> None:
    from onnx import helper

    drop_attribute(node, name)
    node.attribute.append(helper.make_attribute(name, value))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def upgrade(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["upgrade", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture()
def v1(tmp_path: Path) -> Path:
    return as_version_1(TINY, tmp_path / "pkgs" / "tiny-v1", VIVADO_FILES)


def test_upgraded_package_loads_with_the_same_layers_arrays_files_and_scores(v1, tmp_path, capsys):
    before = snapshot(v1)
    old_meta, old_layers = read_for_upgrade(v1)
    new = tmp_path / "pkgs" / "tiny-v2"
    code, out, err = upgrade(capsys, v1, "-o", new)
    assert (code, err) == (0, "")
    package = load_package(new)
    digest = package.meta[MANIFEST_KEY]
    assert out == (
        f"upgraded {v1} -> {new} (format version 1 -> 2); package sha256 {digest}; kept "
        "bitfile/top.bit, driver/settings.json, hardware.tar.xz\n"
    )
    assert digest == manifest_digest(package.meta)
    assert snapshot(v1) == before, "the version-1 package is left as it was"
    # every file carried over byte for byte; the npz holds the same arrays
    assert set(package.meta["files"]) == set(old_meta["files"])
    for rel in old_meta["files"]:
        if rel != NPZ_NAME:
            assert (new / rel).read_bytes() == (v1 / rel).read_bytes(), rel
    # the same layers, now with their declared types, which are the reference package's
    reference = load_package(TINY)
    assert [x.name for x in package.layers] == [x.name for x in old_layers]
    for got, old, ref in zip(package.layers, old_layers, reference.layers, strict=True):
        assert got.attributes == ref.attributes
        assert {k: v for k, v in got.attributes.items() if k not in NEW_IN_V2} == old.attributes
        for attr in DECLARED_TYPES.get(got.kind, ()):
            assert attr in got.attributes, (got.name, attr)
        assert got.arrays.keys() == old.arrays.keys()
        for role, array in got.arrays.items():
            assert array.dtype == old.arrays[role].dtype
            assert np.array_equal(array, old.arrays[role])
        assert (got.inputs, got.outputs, got.folding) == (old.inputs, old.outputs, old.folding)
    for key in ("model_card", "io", "estimates", "board", "created_by"):
        assert package.meta[key] == old_meta[key]
    assert package.meta["upgraded_from"] == {
        "format_version": 1,
        "created_by": old_meta["created_by"],
        "accelerator_json_sha256": sha256_file(v1 / JSON_NAME),
    }
    tile = np.random.default_rng(3).integers(0, 256, size=(2, *package.tile, 3), dtype=np.uint8)
    assert np.array_equal(SimEngine(package).run(tile), SimEngine(reference).run(tile))
    # fcnseg info names the package by the same digest
    assert main(["info", str(new), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["accelerator"]["package_sha256"] == digest


def test_in_place_upgrade_replaces_the_folder_and_leaves_no_temporaries(v1, capsys):
    code, out, err = upgrade(capsys, v1)
    assert (code, err) == (0, "") and " in place (format version 1 -> 2)" in out
    assert load_package(v1).meta["format_version"] == 2
    assert sorted(p.name for p in v1.parent.iterdir()) == [v1.name]
    code, _, err = upgrade(capsys, v1)
    assert code == 2 and err == f"fcnseg: error: {v1}: already package format version 2\n"


def test_a_shipped_package_keeps_its_verification_and_hardware(tmp_path, capsys):
    v1 = as_version_1(SHIPPED, tmp_path / "shipped-v1")
    new = tmp_path / "shipped-v2"
    code, out, _ = upgrade(capsys, v1, "-o", new)
    assert code == 0 and out.endswith("kept hardware.tar.xz, verification.json\n")
    package, shipped = load_package(new), load_package(SHIPPED)
    assert package.verification == shipped.verification and package.hardware == shipped.hardware
    assert package.meta["layers"] == shipped.meta["layers"]


def _refused(capsys, v1: Path, match: str, *args: str) -> None:
    """The upgrade exits 2 with one line matching ``match``, leaving ``v1`` and its folder as
    they were (no output folder, no temporaries)."""
    before, siblings = snapshot(v1), sorted(p.name for p in v1.parent.iterdir())
    code, out, err = upgrade(capsys, v1, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("fcnseg: error: "), err
    assert match in err, err
    assert snapshot(v1) == before
    assert sorted(p.name for p in v1.parent.iterdir()) == siblings


def test_refuses_a_graph_that_lacks_a_declared_type(v1, capsys):
    edit_graph(v1, lambda nodes: drop_attribute(nodes["MVAU_0"], "weightDataType"))
    _refused(
        capsys,
        v1,
        f"{v1}: {HW_GRAPH_NAME}: layer MVAU_0 (MVAU): declared type weightDataType is unset, "
        "not an integer datatype",
        "-o",
        str(v1.parent / "new"),
    )


def test_refuses_a_graph_whose_type_is_not_an_integer(v1, capsys):
    edit_graph(
        v1, lambda nodes: set_string_attribute(nodes["ElementwiseAdd_0"], "rhs_dtype", "FLOAT32")
    )
    _refused(
        capsys, v1, "layer ElementwiseAdd_0 (ElementwiseAdd): declared type rhs_dtype is 'FLOAT32'"
    )


def test_unrounded_thresholds_get_the_type_finns_rounding_gives(v1, tmp_path, capsys):
    """A graph finn has not rounded yet declares FLOAT32 thresholds; on an INT32 input finn's
    RoundAndClipThresholds would declare INT33, as the reference package records."""
    edit_graph(
        v1,
        lambda nodes: set_string_attribute(nodes["Thresholding_0"], "weightDataType", "FLOAT32"),
    )
    code, _, err = upgrade(capsys, v1, "-o", tmp_path / "new")
    assert (code, err) == (0, "")
    layer = next(x for x in load_package(tmp_path / "new").layers if x.kind == "Thresholding")
    assert layer.input_dtypes == ("INT32",) and layer.attributes["weightDataType"] == "INT33"


def test_refuses_a_graph_that_lacks_the_node(v1, capsys):
    edit_graph(v1, lambda nodes: setattr(nodes["MVAU_3"], "name", "MVAU_renamed"))
    _refused(capsys, v1, f"{v1}: layer 'MVAU_3' is not a node of {HW_GRAPH_NAME}")


def test_refuses_a_graph_that_disagrees_with_the_json(v1, capsys):
    edit_graph(v1, lambda nodes: set_string_attribute(nodes["MVAU_1"], "accDataType", "INT31"))
    _refused(
        capsys,
        v1,
        f"layer 'MVAU_1': accDataType 'INT32' in {JSON_NAME} but 'INT31' in {HW_GRAPH_NAME}",
    )


def test_refuses_a_result_the_current_checks_refuse(v1, capsys):
    """The graph says MVAU_0's weights are INT2; they are not: the upgraded package would be
    refused on load, so nothing is replaced and the message names the old package."""
    edit_graph(v1, lambda nodes: set_string_attribute(nodes["MVAU_0"], "weightDataType", "INT2"))
    before = snapshot(v1)
    code, out, err = upgrade(capsys, v1)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"fcnseg: error: not upgraded, the result would be refused: {v1}: ")
    assert "MVAU_0" in err and "INT2" in err and ".upgrade-" not in err, err
    assert snapshot(v1) == before
    assert sorted(p.name for p in v1.parent.iterdir()) == [v1.name]


def test_in_place_upgrade_of_the_current_folder(v1, capsys, monkeypatch):
    monkeypatch.chdir(v1)
    code, out, err = upgrade(capsys, ".")
    assert (code, err) == (0, "") and out.startswith("upgraded . in place")
    assert load_package(v1).meta["format_version"] == 2
    assert sorted(p.name for p in v1.parent.iterdir()) == [v1.name]


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", [NPZ_NAME, HW_GRAPH_NAME, "hardware.tar.xz", "bitfile/top.bit"])
def test_refuses_a_damaged_package_and_leaves_it_untouched(v1, capsys, name):
    _flip_byte(v1 / name)
    _refused(capsys, v1, f"{v1}: {name} is damaged (sha256 mismatch)")
    _refused(capsys, v1, f"{v1}: {name} is damaged (sha256 mismatch)", "-o", str(v1.parent / "new"))


def test_refuses_an_edited_json_field_it_cannot_read(v1, capsys):
    meta = json.loads((v1 / JSON_NAME).read_text())
    meta["layers"][2]["arrays"]["weights"] = "nope"
    (v1 / JSON_NAME).write_text(json.dumps(meta))
    _refused(capsys, v1, "not in accelerator.npz")


def test_refuses_a_file_the_package_does_not_list(v1, capsys):
    (v1 / "notes.txt").write_text("mine")
    _refused(capsys, v1, f"{v1}: notes.txt is not part of the package (not listed in {JSON_NAME})")


def test_refuses_an_existing_output_folder(v1, capsys):
    taken = v1.parent / "taken"
    taken.mkdir()
    _refused(capsys, v1, f"{taken} exists; give a new folder", "-o", str(taken))


def test_refuses_a_newer_or_foreign_package(v1, capsys):
    meta = json.loads((v1 / JSON_NAME).read_text())
    (v1 / JSON_NAME).write_text(json.dumps({**meta, "format_version": 3}))
    _refused(capsys, v1, "package format version 3 is newer than this fcnseg supports")
    (v1 / JSON_NAME).write_text(json.dumps({**meta, "format": "other"}))
    _refused(capsys, v1, "not an fcnseg deployment package")


# --------------------------------------------------------------------------------------------
# The writer: the declared types come from the graph, and a package is not written without them
# --------------------------------------------------------------------------------------------


def _build_from_graph(graph: Path, out: Path) -> Path:
    from fcnseg.hw.to_package import build_package

    meta = json.loads((TINY / JSON_NAME).read_text())
    return build_package(
        graph,
        out,
        model_card=meta["model_card"],
        output_scale=meta["io"]["output"]["scale"],
        output_bias=meta["io"]["output"]["bias"],
    )


def test_the_writer_on_the_fixtures_graph_gives_the_upgraded_fixtures_layers(tmp_path):
    """The checked-in fixture was upgraded; writing its own graph anew gives the same layers
    (with the same declared types) and arrays: upgrade and writer read the types alike."""
    written = load_package(_build_from_graph(TINY / HW_GRAPH_NAME, tmp_path / "pkg"))
    fixture = load_package(TINY)
    assert written.meta["layers"] == fixture.meta["layers"]
    for a, b in zip(written.layers, fixture.layers, strict=True):
        assert a.arrays.keys() == b.arrays.keys()
        assert all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)


@pytest.mark.parametrize(
    "node,attr,value,state",
    [
        ("MVAU_2", "weightDataType", None, "unset"),
        ("Thresholding_0", "weightDataType", None, "unset"),
        ("ElementwiseAdd_1", "rhs_dtype", "FIXED<8,4>", "'FIXED<8,4>'"),
    ],
)
def test_the_writer_refuses_a_layer_without_an_integer_declared_type(
    tmp_path, node, attr, value, state
):
    import onnx

    shutil.copy(TINY / HW_GRAPH_NAME, tmp_path / HW_GRAPH_NAME)
    model = onnx.load(str(tmp_path / HW_GRAPH_NAME))
    target = next(n for n in model.graph.node if n.name == node)
    if value is None:
        drop_attribute(target, attr)
    else:
        set_string_attribute(target, attr, value)
    onnx.save(model, str(tmp_path / HW_GRAPH_NAME))
    kind = node.rsplit("_", 1)[0]
    with pytest.raises(
        UserError, match=rf"^layer {node} \({kind}\): declared type {attr} is {re.escape(state)}, "
    ):
        _build_from_graph(tmp_path / HW_GRAPH_NAME, tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()
