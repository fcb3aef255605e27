"""The deployment package: write -> load round trip, and refusal of damaged or foreign packages.

numpy-only: runs in the board environment too. The package here is hand-made (a 3x3 conv with
thresholds, a 2x2 max-pool and a 1x1 score conv), and the simulator runs it against a direct
numpy computation.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from fcnseg.errors import UserError
from fcnseg.host.package import (
    FORMAT_VERSION,
    HW_GRAPH_NAME,
    JSON_NAME,
    MANIFEST_KEY,
    NPZ_NAME,
    Layer,
    add_package_files,
    load_package,
    manifest_digest,
    parse_dtype,
    sha256_file,
    write_package,
)
from fcnseg.host.sim.engine import SimEngine
from tests.helpers.packages import C1, CARD, IO, NC, RNG, make_layers


@pytest.fixture()
def pkg_dir(tmp_path: Path) -> Path:
    return write_package(
        tmp_path / "toy-pynq-z2",
        model_card=CARD,
        io=IO,
        layers=make_layers(),
        estimates={"fps": 1.0},
        board="pynq-z2",
        hw_graph=b"not really onnx",
    )


def _reference(x: np.ndarray, layers) -> np.ndarray:
    """Direct loops: conv 3x3 same, thresholds, 2x2 max-pool, 1x1 conv."""
    w1 = layers[2].arrays["weights"].astype(np.int64).reshape(3, 3, 3, C1)
    t1 = layers[2].arrays["thresholds"].astype(np.int64)
    w2 = layers[5].arrays["weights"].astype(np.int64)
    n, h, w, _ = x.shape
    xp = np.pad(x.astype(np.int64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    acc = np.zeros((n, h, w, C1), dtype=np.int64)
    for i in range(3):
        for j in range(3):
            acc += np.einsum("nhwc,cd->nhwd", xp[:, i : i + h, j : j + w], w1[i, j])
    a = (acc[..., None] >= t1).sum(-1)
    m = a.reshape(n, h // 2, 2, w // 2, 2, C1).max(axis=(2, 4))
    return m @ w2


def test_round_trip(pkg_dir: Path):
    pkg = load_package(pkg_dir)
    assert pkg.meta["format_version"] == FORMAT_VERSION
    assert [layer.kind for layer in pkg.layers][:3] == [
        "FMPadding",
        "ConvolutionInputGenerator",
        "MVAU",
    ]
    assert pkg.layers[2].folding == {"PE": 2, "SIMD": 9}
    for a, b in zip(pkg.layers, make_layers(), strict=True):
        assert a.arrays.keys() == b.arrays.keys()
    assert pkg.layers[2].arrays["weights"].dtype == np.int8
    assert pkg.model_card["classes"] == ["a", "b", "c"]
    assert pkg.num_classes == NC and pkg.tile == (8, 8) and pkg.board == "pynq-z2"
    assert pkg.net_stride == 2 and pkg.output_stride == 2
    assert np.allclose(pkg.output_scale, [0.5, 0.25, 1.0])
    meta = json.loads((pkg_dir / JSON_NAME).read_text())
    assert set(meta["files"]) == {NPZ_NAME, HW_GRAPH_NAME}
    assert not [p for p in pkg_dir.parent.iterdir() if p.name.startswith(".")], "temp left over"


def test_sim_runs_package_any_size(pkg_dir: Path):
    pkg = load_package(pkg_dir)
    layers = list(pkg.layers)  # the reference uses the package's own arrays
    eng = SimEngine(pkg)
    assert (eng.net_stride, eng.output_stride) == (2, 2)
    for shape in [(1, 8, 8, 3), (3, 6, 10, 3), (2, 2, 4, 3)]:
        x = RNG.integers(0, 256, size=shape, dtype=np.uint8)
        y = eng.run(x)
        assert y.dtype == np.int64 and y.shape == (shape[0], shape[1] // 2, shape[2] // 2, NC)
        assert np.array_equal(y, _reference(x, layers))
    with pytest.raises(UserError, match="multiple of the net stride"):
        eng.run(np.zeros((1, 7, 8, 3), np.uint8))
    with pytest.raises(UserError, match="uint8"):
        eng.run(np.zeros((1, 8, 8, 3), np.float32))


def _refuses(path: Path, match: str):
    with pytest.raises(UserError, match=match) as exc:
        load_package(path)
    assert "\n" not in str(exc.value)


def test_refuses_changed_byte_in_npz(pkg_dir: Path):
    p = pkg_dir / NPZ_NAME
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    _refuses(pkg_dir, "accelerator.npz is damaged")


def test_refuses_missing_file(pkg_dir: Path):
    os.remove(pkg_dir / HW_GRAPH_NAME)
    _refuses(pkg_dir, "missing file hw_graph.onnx")
    _refuses(pkg_dir / "nope", "no such package")
    os.remove(pkg_dir / JSON_NAME)
    _refuses(pkg_dir, "no accelerator.json")


def _edit_json(pkg_dir: Path, edit, *, resign: bool = True) -> None:
    """Edit accelerator.json; ``resign`` records the edited json's manifest digest, as a
    consistent forger would, so the checks behind the digest are reached."""
    meta = json.loads((pkg_dir / JSON_NAME).read_text())
    edit(meta)
    if resign:
        meta[MANIFEST_KEY] = manifest_digest(meta)
    (pkg_dir / JSON_NAME).write_text(json.dumps(meta))


def test_refuses_newer_format(pkg_dir: Path):
    _edit_json(pkg_dir, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    _refuses(pkg_dir, "newer than this fcnseg supports")


def test_refuses_unknown_layer_kind(pkg_dir: Path):
    _edit_json(pkg_dir, lambda m: m["layers"][2].update(kind="VVAU_hls"))
    _refuses(pkg_dir, "unknown kind 'VVAU_hls'")


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda m: m.update(format="something-else"), "not an fcnseg deployment package"),
        (lambda m: m["files"].pop(NPZ_NAME), "does not list accelerator.npz"),
        (lambda m: m["io"]["output"].update(dtype="FLOAT32"), "output: datatype 'FLOAT32' is not"),
        (lambda m: m["io"]["output"].update(scale=[1.0]), "one per class"),
        (lambda m: m["layers"][2]["arrays"].update(weights="nope"), "not in accelerator.npz"),
        (lambda m: m["layers"][2]["arrays"].pop("weights"), "lacks array 'weights'"),
        (lambda m: m["layers"].reverse(), "before it is produced"),
        (lambda m: m["io"]["input"].update(layout="NCHW"), "not NHWC"),
        (lambda m: m.pop("layers"), "lacks 'layers'"),
        (lambda m: m["layers"][0].pop("inputs"), "malformed"),
        (lambda m: m["files"].update({"../escape": "00"}), "escapes the package"),
    ],
)
def test_refuses_mismatched_json(pkg_dir: Path, edit, match):
    _edit_json(pkg_dir, edit)
    _refuses(pkg_dir, match)


def test_refuses_garbage_json(pkg_dir: Path):
    (pkg_dir / JSON_NAME).write_text("{not json")
    _refuses(pkg_dir, "unreadable")


def test_write_refuses_float_arrays_and_keeps_old_package(pkg_dir: Path):
    layers = make_layers()
    bad = Layer(**{**vars(layers[5]), "arrays": {"weights": np.zeros((C1, NC), np.float32)}})
    with pytest.raises(UserError, match="not integer"):
        write_package(pkg_dir, model_card=CARD, io=IO, layers=layers[:5] + [bad])
    load_package(pkg_dir)  # the old one is untouched
    assert not [p for p in pkg_dir.parent.iterdir() if p.name.startswith(".")]


def test_overwrite_replaces_atomically(pkg_dir: Path):
    card = dict(CARD, name="toy2")
    write_package(pkg_dir, model_card=card, io=IO, layers=make_layers())
    pkg = load_package(pkg_dir)
    assert pkg.model_card["name"] == "toy2"
    assert not (pkg_dir / HW_GRAPH_NAME).exists()


@pytest.mark.parametrize(
    "name,rng",
    [
        ("UINT8", (0, 255)),
        ("INT4", (-8, 7)),
        ("UINT1", (0, 1)),
        ("BIPOLAR", (-1, 1)),
        ("INT32", (-(2**31), 2**31 - 1)),
    ],
)
def test_parse_dtype(name, rng):
    assert parse_dtype(name) == rng


@pytest.mark.parametrize("name", ["FLOAT32", "INT0", "uint8", "FIXED<8,4>", ""])
def test_parse_dtype_refuses(name):
    with pytest.raises(UserError):
        parse_dtype(name)


def test_extra_files_and_estimates(tmp_path: Path):
    bit = tmp_path / "top.bit"
    bit.write_bytes(b"\x00\x01bits")
    out = write_package(
        tmp_path / "pkg",
        model_card=CARD,
        io=IO,
        layers=make_layers(),
        estimates={"fps": np.float64(61.5), "report": tmp_path / "r.json", "n": np.int64(3)},
        extra_files={"bitfile/top.bit": bit},
    )
    pkg = load_package(out)
    assert pkg.file("bitfile/top.bit").read_bytes() == b"\x00\x01bits"
    assert "bitfile/top.bit" in pkg.meta["files"]
    assert pkg.estimates == {"fps": 61.5, "report": str(tmp_path / "r.json"), "n": 3}
    with pytest.raises(UserError, match="new relative path"):
        write_package(
            tmp_path / "bad",
            model_card=CARD,
            io=IO,
            layers=make_layers(),
            extra_files={"../x.bit": bit},
        )


# --------------------------------------------------------------------------------------------
# The manifest digest (format version 2): accelerator.json is covered like every other file
# --------------------------------------------------------------------------------------------

DIGEST_MISMATCH = (
    r": accelerator\.json was changed after it was written \(manifest sha256 mismatch\); "
    r"rebuild or re-upgrade the package$"
)


def test_written_digest_is_the_canonical_one(pkg_dir: Path):
    meta = json.loads((pkg_dir / JSON_NAME).read_text())
    assert meta["format_version"] == FORMAT_VERSION == 2
    assert meta[MANIFEST_KEY] == manifest_digest(meta)
    canonical = json.dumps(
        {k: v for k, v in meta.items() if k != MANIFEST_KEY},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=True,
    )
    assert meta[MANIFEST_KEY] == hashlib.sha256(canonical.encode()).hexdigest()
    assert load_package(pkg_dir).meta[MANIFEST_KEY] == meta[MANIFEST_KEY]


def test_digest_depends_on_content_not_layout(pkg_dir: Path):
    meta = json.loads((pkg_dir / JSON_NAME).read_text())
    shuffled = dict(reversed(list(meta.items())))
    (pkg_dir / JSON_NAME).write_text(json.dumps(shuffled, indent=7, ensure_ascii=True))
    load_package(pkg_dir)  # other key order, indentation and escaping: the same content
    assert manifest_digest({**meta, "board": "zcu104"}) != manifest_digest(meta)
    assert manifest_digest({**meta, MANIFEST_KEY: "0" * 64}) == manifest_digest(meta)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["io"]["output"]["scale"].__setitem__(0, float("nan")),
        lambda m: m["io"]["output"]["bias"].__setitem__(1, float("inf")),
        lambda m: m["model_card"].update(receptive_field=32),
        lambda m: m["layers"][2]["attributes"].update(MW=28),
        lambda m: m["files"].update({NPZ_NAME: "0" * 64}),
        lambda m: m.update(note="added"),
        lambda m: m.pop("estimates"),
        lambda m: m["model_card"]["classes"].__setitem__(0, "a\nb"),
    ],
)
def test_refuses_json_edited_without_its_digest(pkg_dir: Path, edit):
    """Each edit alone would load (or fail later, deeper); the digest stops it first."""
    _edit_json(pkg_dir, edit, resign=False)
    _refuses(pkg_dir, DIGEST_MISMATCH)


@pytest.mark.parametrize("resign", [False, True])
def test_refuses_text_that_is_not_unicode(pkg_dir: Path, resign: bool):
    """JSON can escape a lone surrogate, which no PNG chunk, classes.json or summary can hold
    (it was a UnicodeEncodeError traceback writing classes.json): refused as it is read,
    digest re-made or not."""
    _edit_json(
        pkg_dir, lambda m: m["model_card"]["classes"].__setitem__(0, "\ud800"), resign=resign
    )
    _refuses(pkg_dir, r"accelerator\.json: holds text that is not valid Unicode")


def test_refuses_npz_swapped_with_its_sha256_updated_but_not_the_digest(pkg_dir: Path, tmp_path):
    other = write_package(tmp_path / "other", model_card=CARD, io=IO, layers=make_layers())
    (pkg_dir / NPZ_NAME).write_bytes((other / NPZ_NAME).read_bytes())
    _edit_json(
        pkg_dir,
        lambda m: m["files"].update({NPZ_NAME: sha256_file(other / NPZ_NAME)}),
        resign=False,
    )
    _refuses(pkg_dir, DIGEST_MISMATCH)


@pytest.mark.parametrize("value", [None, 7, "abc", "A" * 64])
def test_refuses_missing_or_malformed_digest(pkg_dir: Path, value):
    _edit_json(
        pkg_dir,
        lambda m: m.pop(MANIFEST_KEY) if value is None else m.update({MANIFEST_KEY: value}),
        resign=False,
    )
    _refuses(pkg_dir, r"accelerator\.json has no manifest_sha256 \(a sha256 hex digest\)$")


def test_refuses_version_1_naming_the_upgrade(pkg_dir: Path):
    _edit_json(pkg_dir, lambda m: m.update(format_version=1))
    _refuses(
        pkg_dir,
        r"package format version 1 is older than this fcnseg reads \(2\); upgrade it with "
        rf"`fcnseg upgrade {pkg_dir}` \(keeps its bitfile, hardware and verification; needs "
        r"fcnseg\[compile\]\) or rebuild it$",
    )


@pytest.mark.parametrize("version", [0, True, "2"])
def test_refuses_unknown_older_or_non_integer_version(pkg_dir: Path, version):
    _edit_json(pkg_dir, lambda m: m.update(format_version=version))
    _refuses(pkg_dir, "not supported|no integer format_version")


def test_add_package_files_re_digests_and_refuses_an_edited_json(pkg_dir: Path):
    add_package_files(pkg_dir, {"notes/readme.txt": b"hello"})
    meta = json.loads((pkg_dir / JSON_NAME).read_text())
    assert "notes/readme.txt" in meta["files"] and meta[MANIFEST_KEY] == manifest_digest(meta)
    load_package(pkg_dir)
    _edit_json(pkg_dir, lambda m: m.update(board="zcu104"), resign=False)
    with pytest.raises(UserError, match=DIGEST_MISMATCH):
        add_package_files(pkg_dir, {"notes/more.txt": b"x"})  # never re-digests a forged json
    assert not (pkg_dir / "notes" / "more.txt").exists()


SHIPPED = sorted(
    p.parent
    for p in (Path(__file__).resolve().parents[2] / "host" / "packages").glob("*/accelerator.json")
)


@pytest.mark.parametrize("package", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_json_parse_dump_is_stable(package: Path):
    """The digest hashes the parsed json dumped again: for the shipped packages' floats
    (scales, estimates) parse -> dump -> parse -> dump gives the same text, and the recorded
    digest is the canonical one."""
    meta = json.loads((package / JSON_NAME).read_text())
    once = json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=True)
    assert json.dumps(json.loads(once), sort_keys=True, separators=(",", ":")) == once
    assert meta[MANIFEST_KEY] == manifest_digest(json.loads(once))
