"""Issue 16, part 6: a fuzzer of deployment packages, run as a test.

Hypothesis mutates a valid package (:mod:`tests.helpers.package_fuzz`: array values, dtypes,
shapes and npz members; every JSON value, key and layer of accelerator.json; the files, the
generated-hardware archive and the verification record) and re-hashes it the way a hostile
user would (``files`` sha256 and the manifest digest). The property, for every mutation:

- **refused**: a :class:`~fcnseg.errors.UserError` of one line naming the package, raised
  before anything is computed (through the CLI: exit 2, exactly one stderr line
  ``fcnseg: error: ...``, no output folder); or
- **accepted**: the simulator computes exactly the unmutated package's integer scores on fixed
  inputs (zeros, all 255, tiles whose first convolution lands on its thresholds and one below,
  and an image larger than a tile, tiled and stitched), and the same labels unless the edit
  touched the output scale/bias. Mutations that give a valid package of another meaning (the
  helper's ``strict=False``) must only load and run cleanly, or be refused.

Never a traceback (any other exception fails), never a hang or a runaway allocation (each
example runs under a time bound and an address-space cap). Bases: the hand-made tiny package
and the checked-in FCN-8s from the flow (``tests/board/data/fcn8s-tiny``, with its hardware
archive). The default run draws a few hundred examples; the ``slow`` test many more.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fcnseg.cli import main
from fcnseg.host.package import HW_GRAPH_NAME, sha256_file
from tests.helpers import package_fuzz as fuzz
from tests.helpers.packages import tiny_package

# Damaged archives and images make libraries warn on the way to the outcome checked here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FUZZ = settings(
    max_examples=150,
    deadline=5000,  # ms per example (copy, edit, load, run): shared cores are slow, not this
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same examples every run (CI must be reproducible)
)
FUZZ_CLI = settings(FUZZ, max_examples=40)
FUZZ_MANY = settings(FUZZ, max_examples=1500)
#: seconds one example may take before it counts as a hang (the deadline reports slowness)
TIME_BOUND = 30

FCN8S_TINY = Path(__file__).resolve().parents[1] / "board" / "data" / "fcn8s-tiny"


@dataclass(frozen=True)
class Case:
    """A base package, the fixed inputs, and what the unmutated package computes on them."""

    base: fuzz.Base
    tiles: np.ndarray
    image: np.ndarray
    reference: fuzz.Outcome
    photo: Path  #: ``image`` as a PNG, for the CLI
    cli_mask: np.ndarray  #: the CLI's mask of ``photo`` with the unmutated package
    cli_scores: np.ndarray  #: and its integer scores (--scores)
    strips: Path  #: ``image`` as a PPM: the CLI segments PPM in strips (Segmenter.stream)

    def __repr__(self) -> str:  # hypothesis prints it with every failing example
        return f"Case({self.base!r})"

    def _repr_pretty_(self, printer, cycle: bool) -> None:  # hypothesis's printer
        printer.text(repr(self))


def _cli(package: Path, photo: Path, out: Path) -> int:
    """``fcnseg segment`` writing every output that carries the card's strings (class names in
    the mask's text chunk, classes.json, the legend, the --json summary) and the scores."""
    return main(
        ["segment", str(photo), "--package", str(package), "-o", str(out), "--scores"]
        + ["--overlay", "--legend", "--json", str(out.parent / "summary.json"), "--workers", "1"]
    )


def _cli_strips(package: Path, ppm: Path, out: Path) -> int:
    """``fcnseg segment`` of a PPM: the strip path (no option that needs the whole image)."""
    return main(["segment", str(ppm), "--package", str(package), "-o", str(out), "--scores"])


def _cli_outputs(out: Path, photo: Path) -> tuple[np.ndarray, np.ndarray]:
    with Image.open(out / f"{photo.stem}.png") as mask:
        labels = np.asarray(mask)
    with np.load(out / f"{photo.stem}_scores.npz", allow_pickle=False) as npz:
        return labels, npz["scores"]


@pytest.fixture(scope="module", params=["tiny", "fcn8s-tiny"])
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    folder = tmp_path_factory.mktemp(f"base-{request.param}")
    src = tiny_package(folder / "tiny") if request.param == "tiny" else FCN8S_TINY
    base = fuzz.Base.read(src)
    tiles, image = fuzz.fixed_inputs(base)
    reference = fuzz.run_package(base.copy_to(folder / "reference"), tiles, image)
    assert reference.refusal is None, f"the unmutated package is refused: {reference.refusal}"
    photo = folder / "photo.png"
    Image.fromarray(image).save(photo)
    assert _cli(folder / "reference", photo, folder / "out") == 0
    mask, scores = _cli_outputs(folder / "out", photo)
    strips = folder / "strips.ppm"
    Image.fromarray(image).save(strips)
    assert _cli_strips(folder / "reference", strips, folder / "strips") == 0
    assert np.array_equal(_cli_outputs(folder / "strips", strips)[1], scores), "strips differ"
    return Case(base, tiles, image, reference, photo, mask, scores, strips)


def _fresh(case: Case, scratch: Path, mutation: fuzz.Mutation) -> Path:
    """A new copy of the base in ``scratch`` with ``mutation`` applied (hypothesis runs every
    example of a test in one ``tmp_path``: the previous example's copy is removed first)."""
    for old in ("pkg", "out", "strips"):
        shutil.rmtree(scratch / old, ignore_errors=True)
    root = case.base.copy_to(scratch / "pkg")
    mutation.apply(root)
    return root


def _assert_refusal(message: str, root: Path, mutation: fuzz.Mutation) -> None:
    assert message.strip() and "\n" not in message, f"{mutation}: not one line: {message!r}"
    assert str(root) in message, f"{mutation}: the refusal does not name the package: {message}"


def check_mutation(case: Case, scratch: Path, mutation: fuzz.Mutation) -> None:
    """The property, through the Python API (load_package, the simulator, the Segmenter)."""
    root = _fresh(case, scratch, mutation)
    with fuzz.bounded(TIME_BOUND):
        got = fuzz.run_package(root, case.tiles, case.image)
    if got.refusal is not None:
        _assert_refusal(got.refusal, root, mutation)
        return
    if not mutation.strict:
        return  # a valid package of another meaning: it loaded and ran, which is all it owes
    for what, mine, theirs in zip(
        ("tile", "stitched image"), got.scores, case.reference.scores, strict=True
    ):
        assert mine.shape == theirs.shape and np.array_equal(mine, theirs), (
            f"{mutation}: accepted, but its {what} scores differ from the unmutated package's"
        )
    if not mutation.rescales:
        assert np.array_equal(got.labels, case.reference.labels), f"{mutation}: other labels"


def check_cli(case: Case, scratch: Path, mutation: fuzz.Mutation, capsys) -> None:
    """The property through ``fcnseg segment``: exit 2 with one line and no output, or exit 0
    with the unmutated package's mask and scores, whole (PNG) and in strips (PPM)."""
    root = _fresh(case, scratch, mutation)
    out = scratch / "out"
    capsys.readouterr()
    with fuzz.bounded(TIME_BOUND):
        code = _cli(root, case.photo, out)
    err = capsys.readouterr().err
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("fcnseg: error: "), f"{mutation}: {err}"
        assert str(root) in lines[0], f"{mutation}: the refusal does not name the package"
        assert not out.exists(), f"{mutation}: output written before the refusal"
        return
    assert code == 0, f"{mutation}: exit {code}: {err}"
    strips = scratch / "strips"
    with fuzz.bounded(TIME_BOUND):
        code = _cli_strips(root, case.strips, strips)
    assert code == 0, f"{mutation}: accepted, but the strip path exits {code}"
    if mutation.strict:
        for where, photo in ((out, case.photo), (strips, case.strips)):
            mask, scores = _cli_outputs(where, photo)
            assert np.array_equal(scores, case.cli_scores), f"{mutation}: other scores ({photo})"
            if not mutation.rescales:
                assert np.array_equal(mask, case.cli_mask), f"{mutation}: other mask ({photo})"


@FUZZ
@given(data=st.data())
def test_mutated_package_is_refused_or_scores_the_same(case, tmp_path, data) -> None:
    check_mutation(case, tmp_path, data.draw(fuzz.package_mutations(case.base), "mutation"))


@FUZZ_CLI
@given(data=st.data())
def test_mutated_package_through_the_cli(case, tmp_path, capsys, data) -> None:
    check_cli(case, tmp_path, data.draw(fuzz.package_mutations(case.base), "mutation"), capsys)


@pytest.mark.slow
@FUZZ_MANY
@given(data=st.data())
def test_many_mutated_packages(case, tmp_path, data) -> None:
    check_mutation(case, tmp_path, data.draw(fuzz.package_mutations(case.base), "mutation"))


# ------------------------------------------------------------------- known cases, run every time
# The table of tampered packages, and what the fuzzer found on the way (each was a
# traceback, a refusal not naming the package, or other scores accepted): kept as named cases
# so they run on every test run, not only when the random draw finds them again.


def _first_mvau(base: fuzz.Base) -> tuple[dict, str, np.ndarray]:
    entry = next(e for e in base.meta["layers"] if e["kind"] == "MVAU")
    key = entry["arrays"]["weights"]
    return entry, key, base.arrays[key]


def _first_mvau_index(base: fuzz.Base) -> int:
    return next(i for i, e in enumerate(base.meta["layers"]) if e["kind"] == "MVAU")


def _weight(base: fuzz.Base, value: int, dtype: str = "int64") -> fuzz.Mutation:
    _, key, w = _first_mvau(base)
    new = w.astype(dtype)
    new[0, 0] = value
    return fuzz.array_edit(base, key, new, f"element (0, 0) = {value} ({dtype})")


def _thresholds(base: fuzz.Base, how: str) -> fuzz.Mutation:
    entry, _, _ = _first_mvau(base)
    key = entry["arrays"]["thresholds"]
    t = base.arrays[key]
    new = {"+1": np.concatenate([t, t[:, -1:]], axis=1), "-1": t[:, :-1], "0": t[:, :0]}[how]
    return fuzz.array_edit(base, key, new, f"steps {how}")


def _type_bound(base: fuzz.Base, beyond: int) -> fuzz.Mutation:
    entry, _, _ = _first_mvau(base)
    hi = fuzz.parse_dtype(entry["attributes"]["weightDataType"])[1]
    return _weight(base, hi + beyond)


def _set(path: tuple, value, **kw) -> fuzz.Mutation:
    return fuzz.json_edit(f"{path} = {value!r}", fuzz.set_value(path, value), **kw)


def _dtypes_of_layer(i: int, value) -> fuzz.Mutation:
    return _set(("layers", i, "output_dtypes"), value)


def _archive_flip(base: fuzz.Base) -> fuzz.Mutation:
    def edit(root: Path) -> None:
        path = root / fuzz.HARDWARE_ARCHIVE
        if not path.exists():  # a package without one: a damaged one, listed
            path.write_bytes(b"\xfd7zXZ\x00" + bytes(range(256)) * 8)
            fuzz.rehash(root, listed=[fuzz.HARDWARE_ARCHIVE])
            return
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x5A
        path.write_bytes(bytes(data))
        fuzz.rehash(root)

    return fuzz.Mutation(f"{fuzz.HARDWARE_ARCHIVE}: a byte flipped mid-stream, re-hashed", edit)


def _remove(path: tuple) -> fuzz.Mutation:
    def edit(meta):
        del fuzz.get_value(meta, path[:-1])[path[-1]]
        return meta

    return fuzz.json_edit(f"{path} removed", edit)


KNOWN: dict[str, Callable[[fuzz.Base], fuzz.Mutation]] = {
    "weight one beyond its type": lambda b: _type_bound(b, 1),
    "weight at its type's max (valid)": lambda b: _type_bound(b, 0),
    "uint64-max weight": lambda b: _weight(b, fuzz.UINT64_MAX, "uint64"),
    "weight above 2^45": lambda b: _weight(b, 2**45 + 1),
    "0-d weights": lambda b: fuzz.array_edit(
        b, _first_mvau(b)[1], np.array(7, dtype=np.int8), "0-d"
    ),
    "all-zero weights (valid)": lambda b: fuzz.array_edit(
        b, _first_mvau(b)[1], _first_mvau(b)[2] * 0, "zeros"
    ),
    "one threshold step more": lambda b: _thresholds(b, "+1"),
    "one threshold step fewer": lambda b: _thresholds(b, "-1"),
    "no threshold steps": lambda b: _thresholds(b, "0"),
    "NaN scale": lambda b: _set(("io", "output", "scale", 0), float("nan"), rescales=True),
    "inf bias": lambda b: _set(("io", "output", "bias", 0), float("inf"), rescales=True),
    "zero scale": lambda b: _set(("io", "output", "scale", 0), 0.0, rescales=True),
    "scale 1e300 (valid)": lambda b: _set(("io", "output", "scale", 0), 1e300, rescales=True),
    "scale 1e-300 (valid)": lambda b: _set(("io", "output", "scale", 0), 1e-300, rescales=True),
    "bias -1e300 (valid)": lambda b: _set(("io", "output", "bias", 0), -1e300, rescales=True),
    "receptive field 32": lambda b: _set(("model_card", "receptive_field"), 32),
    "receptive field -1": lambda b: _set(("model_card", "receptive_field"), -1),
    "receptive field removed": lambda b: (
        _remove(("model_card", "receptive_field"))
        if "receptive_field" in b.meta["model_card"]
        else _set(("model_card", "zz"), 1)
    ),
    "output dtype INT4": lambda b: _set(("io", "output", "dtype"), "INT4"),
    "output stride 0": lambda b: _set(("model_card", "output_stride"), 0),
    "tile 250x250": lambda b: fuzz.tile_edit(250, 250),
    "tile 0x0": lambda b: fuzz.tile_edit(0, 0),
    "tile 30016x30016": lambda b: fuzz.tile_edit(30016, 30016),
    "json nested 100000 deep": lambda b: fuzz.Mutation(
        "nested", fuzz.JSON_DAMAGE["nested 100000 deep"]
    ),
    "json object 100000 deep": lambda b: fuzz.Mutation(
        "object", fuzz.JSON_DAMAGE["an object 100000 deep"]
    ),
    "npz strong encryption flag": lambda b: fuzz.zip_header_edit("flags: strong encryption"),
    "npz compression method 99": lambda b: fuzz.zip_header_edit("compression method 99"),
    "npz version 25.5": lambda b: fuzz.zip_header_edit("version needed 25.5"),
    "hardware archive damaged, re-hashed": _archive_flip,
    "output dtype not a dtype": lambda b: _dtypes_of_layer(1, ["x"]),
    "output dtypes a string": lambda b: _dtypes_of_layer(1, "Pool"),
    "class name a lone surrogate": lambda b: _set(("model_card", "classes", 0), "\ud800"),
    "class name with a newline": lambda b: _set(("model_card", "classes", 0), "a\nb"),
    "layer name a lone surrogate": lambda b: _set(("layers", 1, "name"), "\ud800"),
    "the first MVAU retyped to UINT8 (valid)": lambda b: fuzz.retype(b, _first_mvau_index(b), 8),
    "the first MVAU retyped to UINT16 (65535 steps)": lambda b: fuzz.retype(
        b, _first_mvau_index(b), 16
    ),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_case(case, tmp_path, name) -> None:
    check_mutation(case, tmp_path, KNOWN[name](case.base))


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_case_through_the_cli(case, tmp_path, capsys, name) -> None:
    check_cli(case, tmp_path, KNOWN[name](case.base), capsys)


# ------------------------------------------------------------------------- the fuzzer's own parts


def test_rehash_keeps_an_unedited_package_valid(case, tmp_path) -> None:
    """Re-hashing alone changes nothing a loader could object to: same scores."""
    check_mutation(case, tmp_path, fuzz.Mutation("re-hashed only", fuzz.rehash))
    root = tmp_path / "pkg"
    assert fuzz.read_meta(root) == fuzz.with_manifest(fuzz.read_meta(root))


def test_rehash_records_an_edited_npz(case, tmp_path) -> None:
    """After an npz edit and :func:`rehash`, the loader sees the edit, not a sha256 mismatch."""
    root = case.base.copy_to(tmp_path / "pkg")
    arrays = fuzz.read_arrays(root)
    arrays["zzz_extra"] = np.zeros(3, dtype=np.int8)
    fuzz.write_arrays(root, arrays)
    fuzz.rehash(root)
    got = fuzz.run_package(root, case.tiles, case.image)
    assert got.refusal is None or "sha256" not in got.refusal, got.refusal
    assert fuzz.read_meta(root)["files"][fuzz.NPZ_NAME] == sha256_file(root / fuzz.NPZ_NAME)


def test_boundary_tiles_hit_thresholds(case) -> None:
    """The boundary tiles put the first convolution's accumulator exactly on its thresholds."""
    pad, swg, mvau = case.base.meta["layers"][:3]
    w = case.base.arrays[mvau["arrays"]["weights"]].astype(np.int64)
    t = case.base.arrays[mvau["arrays"]["thresholds"]].astype(np.int64)
    p, k = pad["attributes"]["Padding"][0], swg["attributes"]["ConvKernelDim"][0]
    tiles = fuzz.boundary_tiles(case.base)
    padded = np.pad(tiles.astype(np.int64), ((0, 0), (p, p), (p, p), (0, 0)))
    n, h, wd, c = padded.shape
    patches = np.stack(
        [
            padded[:, y : y + k, x : x + k].reshape(n, -1)
            for y in range(h - k + 1)
            for x in range(wd - k + 1)
        ]
    )
    acc = patches @ w  # (positions, tiles, channels)
    hits = sum(int(np.isin(acc[..., ch], t[min(ch, len(t) - 1)]).sum()) for ch in range(w.shape[1]))
    assert hits >= 8, f"only {hits} accumulators on a threshold"


def _weights_entry(declared: str | None) -> dict:
    attrs = {"MW": 2, "MH": 2} | ({} if declared is None else {"weightDataType": declared})
    return {"kind": "MVAU", "attributes": attrs, "input_dtypes": ["UINT4"]}


@pytest.mark.parametrize(
    ("values", "declared", "legal"),
    [
        ([[-8, 7], [0, 1]], "INT4", True),  # the type's extremes
        ([[-9, 7], [0, 1]], "INT4", False),  # one below
        ([[-8, 8], [0, 1]], "INT4", False),  # one above
        ([[0, 0], [0, 0]], "INT4", True),  # valid, another meaning: not strict
        ([[0, 1], [2, 3]], None, False),  # no declared type: a v2 loader must refuse it
    ],
)
def test_array_legal_weights(values, declared, legal) -> None:
    old = np.array([[1, 2], [3, 4]], dtype=np.int8)
    new = np.array(values, dtype=np.int8)
    assert fuzz.array_legal(_weights_entry(declared), "weights", new, old) is legal


def test_array_legal_thresholds_order_shape_and_bounds() -> None:
    entry = {"kind": "Thresholding", "attributes": {}, "input_dtypes": ["INT8"]}
    old = np.array([[-3, 0, 5], [1, 2, 3]], dtype=np.int16)
    legal = [[-128, 0, 128], [1, 1, 1]]  # [lo, hi + 1] of the input, ties allowed
    assert fuzz.array_legal(entry, "thresholds", np.array(legal, dtype=np.int16), old)
    assert fuzz.array_legal(entry, "thresholds", old[:1], old)  # one row for every channel
    two = {**entry, "attributes": {"NumChannels": 2}}
    assert fuzz.array_legal(two, "thresholds", old, old[:1])  # and back: one row per channel
    assert not fuzz.array_legal(two, "thresholds", old[[0, 1, 1]], old)  # 3 rows, 2 channels
    assert not fuzz.array_legal(entry, "thresholds", old[:, ::-1], old)  # not monotone
    assert not fuzz.array_legal(entry, "thresholds", old + 126, old)  # 131 > hi + 1
    assert not fuzz.array_legal(entry, "thresholds", old[:, :2], old)  # a step missing
    assert not fuzz.array_legal(entry, "thresholds", old.astype(np.float32), old)
    assert fuzz.same_values(old[:1].repeat(2, axis=0)[:1], old[:1])
    assert not fuzz.same_values(old[:1], old)


def test_the_verification_template_is_well_formed() -> None:
    """The fuzzer damages a valid record one value at a time: the template itself must pass."""
    from fcnseg.host.package import check_verification

    record = fuzz.valid_verification()
    assert check_verification(record, "t") is record


def test_bounded_stops_hangs_and_runaway_allocations() -> None:
    """The guards every example runs under: a hang raises, an allocation past the cap raises
    MemoryError, and both are lifted afterwards."""
    with pytest.raises(fuzz.Hang), fuzz.bounded(0.2):
        time.sleep(5)
    with pytest.raises(MemoryError), fuzz.bounded(10, memory=64 << 20):
        np.ones(1 << 28)  # 2 GiB
    assert np.ones(1 << 25).sum() == 1 << 25  # 256 MiB: the cap is gone


@pytest.mark.slow  # until the loader bounds file sizes, this hashes for TIME_BOUND seconds
def test_huge_listed_file_is_refused_in_bounded_time(case, tmp_path) -> None:
    """A listed file of 64 GiB (sparse: no disk used) must be refused by its size, not hashed
    for minutes (measured before a bound: 16 s for 4 GiB on these cores)."""

    def edit(root: Path) -> None:
        path = root / HW_GRAPH_NAME
        with open(path, "r+b") as f:
            f.truncate(64 << 30)
        if path.stat().st_blocks * 512 >= 1 << 30:
            pytest.skip("this file system does not keep files sparse")

    check_mutation(case, tmp_path, fuzz.Mutation("hw_graph.onnx of 64 GiB, hashes stale", edit))
