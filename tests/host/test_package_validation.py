"""Issue 16, part 1: a package cannot lie — every package is validated semantically on load.

Each case edits a valid package *consistently* (:mod:`tests.helpers.tamper` re-hashes it), so
only the validation of :mod:`fcnseg.host.validation` stands between the edit and a run. Each
must be refused by ``load_package`` and through the CLI with one line naming the package file,
the layer and the rule, exit 2, before any work (no output folder). The boundaries (weights at
their type's extremes, thresholds of exactly ``2^b - 1`` steps, a range exactly filling its
dtype, a tile of exactly the net stride) load; the shipped packages load, and their receptive
field recomputed from the layers is the card's.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.errors import UserError
from fcnseg.host.package import NPZ_NAME, Layer, load_package
from fcnseg.host.sim.engine import SimEngine
from fcnseg.host.sim.layers import OPS
from fcnseg.host.validation import MAX_TILE_SIDE, receptive_field
from tests.helpers.images import image
from tests.helpers.packages import tiny_package
from tests.helpers.tamper import (
    array_key,
    copy_package,
    npy_bytes,
    read_array,
    read_meta,
    segment_refuses,
    tamper,
    write_npz_member,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.parent for p in (ROOT / "host" / "packages").glob("*/accelerator.json"))


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_package(tmp_path_factory.mktemp("pkg") / "tiny")


@pytest.fixture()
def copy(package_dir: Path, tmp_path: Path) -> Path:
    return copy_package(package_dir, tmp_path / "copy")


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(image(20, 24)).save(path)
    return path


# ---- edits ---------------------------------------------------------------------------------


def _layer(meta: dict, name: str) -> dict:
    return next(e for e in meta["layers"] if e["name"] == name)


def _set_array(role: str, layer: str, make: Callable[[np.ndarray], np.ndarray]):
    def edit(pkg: Path) -> None:
        key = array_key(pkg, layer, role)
        tamper(pkg, arrays={key: make(read_array(pkg, key))})

    return edit


def _json(edit: Callable[[dict], None]):
    return lambda pkg: tamper(pkg, json_edit=edit)


def _attr(layer: str, **values):
    return _json(lambda meta: _layer(meta, layer)["attributes"].update(values))


def _scale(i: int, value: float):
    return _json(lambda meta: meta["io"]["output"]["scale"].__setitem__(i, value))


def _bias(i: int, value: float):
    return _json(lambda meta: meta["io"]["output"]["bias"].__setitem__(i, value))


def _card(**values):
    return _json(lambda meta: meta["model_card"].update(values))


def _out_dtype(dt: str, *, io_too: bool):
    def edit(meta: dict) -> None:
        _layer(meta, "score")["output_dtypes"] = [dt]
        if io_too:
            meta["io"]["output"]["dtype"] = dt

    return _json(edit)


def retile(meta: dict, t: int) -> None:
    """Set the toy package's tile to ``t`` x ``t`` with every declared shape consistent."""
    h = t // 2
    shapes = {
        "pad0": ([1, t, t, 3], [1, t + 2, t + 2, 3]),
        "swg0": ([1, t + 2, t + 2, 3], [1, t, t, 27]),
        "conv1": ([1, t, t, 27], [1, t, t, 4]),
        "swg1": ([1, t, t, 4], [1, h, h, 16]),
        "pool1": ([1, h, h, 16], [1, h, h, 4]),
        "score": ([1, h, h, 4], [1, h, h, 3]),
    }
    for name, (i, o) in shapes.items():
        _layer(meta, name)["input_shapes"], _layer(meta, name)["output_shapes"] = [i], [o]
    meta["io"]["input"]["shape"] = [1, t, t, 3]
    meta["io"]["output"]["shape"] = [1, h, h, 3]
    meta["model_card"]["tile"] = [t, t]


def _tile(t: int):
    return _json(lambda meta: retile(meta, t))


def _huge_header(pkg: Path) -> None:
    """An npz member whose .npy header claims 2^40 int8 values (and holds none)."""
    key = array_key(pkg, "conv1", "weights")
    header = npy_bytes(np.zeros((1, 1), np.int8))[:-1]  # the (1, 1) header, no data
    header = header.replace(b"(1, 1)", b"(1099511627776, 1)")
    write_npz_member(pkg, key, header)
    tamper(pkg)


def _unsorted(t: np.ndarray) -> np.ndarray:
    t = t.copy()
    t[0, 0], t[0, -1] = t[0, -1], t[0, 0]
    return t


def _conv1_acc_hi(pkg: Path) -> int:
    w = read_array(pkg, array_key(pkg, "conv1", "weights")).astype(np.int64)
    return int(np.maximum(w * 0, w * 255).sum(axis=0).max())


def _threshold_beyond_clip(pkg: Path) -> None:
    key = array_key(pkg, "conv1", "thresholds")
    t = read_array(pkg, key).astype(np.int64)
    t[:, -1] = _conv1_acc_hi(pkg) + 2
    tamper(pkg, arrays={key: t})


#: (id, edit, words the refusal must contain)
CASES: list[tuple[str, Callable[[Path], None], tuple[str, ...]]] = [
    (
        "weights-outside-type",
        _set_array("weights", "conv1", lambda w: w.astype(np.int16) + 100),
        ("accelerator.npz", "'conv1'", "weightDataType"),
    ),
    (
        "weights-uint64-max",
        _set_array("weights", "score", lambda w: np.full(w.shape, 2**64 - 1, np.uint64)),
        ("accelerator.npz", "'score'", "beyond int64"),
    ),
    (
        "weights-above-2^45",
        _set_array("weights", "score", lambda w: w.astype(np.int64) << 46),
        ("'score'", "weightDataType"),
    ),
    (
        "weights-0d",
        _set_array("weights", "score", lambda w: np.array(0, np.int8)),
        ("'score'", "0-d"),
    ),
    (
        # zero weights make the accumulator 0: thresholds the writer would have clipped to
        # 0..1 betray it (a thresholds-free layer's zero weights are a valid package)
        "all-zero-weights",
        _set_array("weights", "conv1", lambda w: np.zeros_like(w)),
        ("'conv1'", "outside the input's range + 1 (0..1)"),
    ),
    (
        "more-threshold-steps",
        _set_array("thresholds", "conv1", lambda t: np.concatenate([t, t[:, -1:]], axis=1)),
        ("'conv1'", "16 threshold steps", "UINT4 outputs need 15"),
    ),
    (
        "fewer-threshold-steps",
        _set_array("thresholds", "conv1", lambda t: t[:, :-1]),
        ("'conv1'", "14 threshold steps"),
    ),
    (
        "zero-threshold-steps",
        _set_array("thresholds", "conv1", lambda t: t[:, :0]),
        ("'conv1'", "empty"),
    ),
    (
        "thresholds-unsorted",
        _set_array("thresholds", "conv1", _unsorted),
        ("'conv1'", "not sorted"),
    ),
    (
        "thresholds-3d",
        _set_array("thresholds", "conv1", lambda t: t[None]),
        ("'conv1'", "thresholds of shape"),
    ),
    ("thresholds-beyond-clip", _threshold_beyond_clip, ("'conv1'", "input's range + 1")),
    (
        "weights-transposed",
        _set_array("weights", "conv1", lambda w: w.T.copy()),
        ("'conv1'", "(MW, MH)"),
    ),
    ("npz-header-2^40", _huge_header, ("accelerator.npz", "claims 1099511627776 bytes")),
    ("scale-nan", _scale(0, math.nan), ("accelerator.json", "scale[0]", "positive")),
    ("scale-inf", _scale(1, math.inf), ("scale[1]",)),
    ("scale-zero", _scale(0, 0.0), ("scale[0]",)),
    ("scale-negative", _scale(2, -0.5), ("scale[2]",)),
    ("bias-inf", _bias(1, -math.inf), ("bias[1]", "finite")),
    ("bias-nan", _bias(0, math.nan), ("bias[0]",)),
    ("receptive-field-32", _card(receptive_field=32), ("receptive_field 32", "layers give 4")),
    ("receptive-field-5", _card(receptive_field=5), ("receptive_field 5",)),
    ("receptive-field-negative", _card(receptive_field=-3), ("receptive_field",)),
    (
        "output-int4-needs-more",
        _out_dtype("INT4", io_too=True),
        ("'score'", "outside its INT4", "wrap"),
    ),
    (
        "io-output-dtype-lies",
        _json(lambda meta: meta["io"]["output"].update(dtype="INT32")),
        ("output dtype INT32", "INT16"),
    ),
    ("layer-output-dtype-lies", _out_dtype("INT32", io_too=False), ("output dtype INT16", "INT32")),
    ("acc-type-too-narrow", _attr("score", accDataType="INT4"), ("'score'", "accumulator", "INT4")),
    (
        "weight-type-missing",
        _json(lambda meta: _layer(meta, "conv1")["attributes"].pop("weightDataType")),
        ("'conv1'", "weightDataType", "missing"),
    ),
    ("act-val-wrong", _attr("conv1", ActVal=1), ("'conv1'", "ActVal 1")),
    ("mw-wrong", _attr("score", MW=5), ("'score'", "MW")),
    ("stride-zero", _attr("swg1", Stride=[0, 0]), ("'swg1'", "Stride")),
    ("pool-function-float", _attr("pool1", Function="AvgPool"), ("'pool1'", "AvgPool")),
    (
        "input-dtype-mismatch",
        _json(lambda meta: _layer(meta, "swg1").update(input_dtypes=["UINT8"])),
        ("'swg1'", "reads 'a1' as UINT8", "UINT4"),
    ),
    (
        "declared-shape-wrong",
        _json(lambda meta: _layer(meta, "pool1").update(output_shapes=[[1, 4, 4, 5]])),
        ("'pool1'", "output_shapes"),
    ),
    ("tile-not-multiple", _tile(7), ("tile 7x7", "net stride 2")),
    ("tile-30016", _tile(30016), ("tile 30016x30016", str(MAX_TILE_SIDE))),
    ("tile-zero", _tile(0), ("tile",)),
    ("output-stride-zero", _card(output_stride=0), ("output_stride",)),
    ("output-stride-lies", _card(output_stride=4), ("output_stride 4",)),
]


@pytest.mark.parametrize("edit,needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_load_refuses(copy: Path, edit, needles) -> None:
    edit(copy)
    with pytest.raises(UserError) as e:
        load_package(copy)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(copy)), msg
    for needle in needles:
        assert needle in msg, msg


@pytest.mark.parametrize("edit,needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cli_refuses(copy: Path, photo: Path, tmp_path: Path, capsys, edit, needles) -> None:
    edit(copy)
    segment_refuses([str(photo), "--package", str(copy)], capsys, tmp_path / "out", *needles)


# ---- boundaries ----------------------------------------------------------------------------


def _scores(pkg: Path) -> np.ndarray:
    x = np.random.default_rng(0).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    return SimEngine(load_package(pkg)).run(x)


def test_untouched_and_rehashed_package_loads(copy: Path) -> None:
    before = _scores(copy)
    tamper(copy)  # a re-hash alone changes nothing
    assert np.array_equal(_scores(copy), before)


@pytest.mark.parametrize("value,ok", [(-8, True), (7, True), (-9, False), (8, False)])
def test_weights_at_their_type_extremes(copy: Path, value: int, ok: bool) -> None:
    key = array_key(copy, "conv1", "weights")
    w = read_array(copy, key).astype(np.int16)
    w[0, 0] = value
    tamper(copy, arrays={key: w})
    if ok:
        load_package(copy)
    else:
        with pytest.raises(UserError, match=f"values {min(value, int(w.min()))}"):
            load_package(copy)


def _narrow_conv1(bits: int, steps: int):
    """conv1 writes UINT{bits} with ``steps`` thresholds per channel; the chain after follows."""

    def edit(pkg: Path) -> None:
        key = array_key(pkg, "conv1", "thresholds")
        t = np.sort(read_array(pkg, key)[:, :steps], axis=1)
        dt = f"UINT{bits}"

        def retype(meta: dict) -> None:
            _layer(meta, "conv1")["output_dtypes"] = [dt]
            for name in ("swg1", "pool1"):
                _layer(meta, name).update(input_dtypes=[dt], output_dtypes=[dt])
            _layer(meta, "score")["input_dtypes"] = [dt]

        tamper(pkg, arrays={key: t}, json_edit=retype)

    return edit


def test_threshold_steps_exactly_two_to_the_bits_minus_one(copy: Path, tmp_path: Path) -> None:
    _narrow_conv1(3, 7)(copy)
    load_package(copy)
    other = copy_package(copy, tmp_path / "eight")
    key = array_key(other, "conv1", "thresholds")
    t = read_array(other, key)
    tamper(other, arrays={key: np.concatenate([t, t[:, -1:]], axis=1)})
    with pytest.raises(UserError, match="8 threshold steps per channel; UINT3 outputs need 7"):
        load_package(other)


@pytest.mark.parametrize("last,ok", [(4, True), (5, False)])
def test_range_exactly_filling_its_dtype(copy: Path, last: int, ok: bool) -> None:
    """score: UINT4 inputs times a column [5, 4, 4, last] gives 0..255 = UINT8 (last 4), or
    0..270 (last 5), which UINT8 cannot hold."""
    key = array_key(copy, "score", "weights")
    w = np.tile(np.array([[5], [4], [4], [last]], np.int8), (1, 3))

    def retype(meta: dict) -> None:
        score = _layer(meta, "score")
        score["output_dtypes"] = ["UINT8"]
        score["attributes"].update(accDataType="UINT8")
        meta["io"]["output"]["dtype"] = "UINT8"

    tamper(copy, arrays={key: w}, json_edit=retype)
    if ok:
        assert int(_scores(copy).max()) <= 255
    else:
        with pytest.raises(UserError, match="0..270, outside its UINT8"):
            load_package(copy)


def test_tile_exactly_the_net_stride(copy: Path) -> None:
    _tile(2)(copy)
    pkg = load_package(copy)
    assert pkg.tile == (2, 2) and pkg.net_stride == 2


def test_tile_of_the_bound_is_refused_by_size_not_allocated(copy: Path) -> None:
    """A tile within the side bound whose tensors exceed the element bound."""
    _tile(MAX_TILE_SIDE)(copy)
    with pytest.raises(UserError, match="exceeds the size bounds"):
        load_package(copy)


# ---- Elementwise constants -----------------------------------------------------------------


def _with_add(folder: Path, const: np.ndarray, rhs_dtype: str = "INT4") -> Path:
    """The toy package with an ElementwiseAdd of a per-class constant after the score."""
    from fcnseg.host.package import write_package
    from tests.helpers.packages import CARD, IO, make_layers

    layers = make_layers()
    score = layers[-1]
    layers[-1] = Layer(**{**vars(score), "outputs": ("s",)})
    add = Layer(
        "ElementwiseAdd",
        "bias",
        ("s",),
        ("y",),
        {"lhs_dtype": "INT16", "rhs_dtype": rhs_dtype, "out_dtype": "INT16"},
        ("INT16",),
        ("INT16",),
        ((1, 4, 4, 3),),
        ((1, 4, 4, 3),),
        arrays={"rhs": const},
    )
    return write_package(folder, model_card=CARD, io=IO, layers=[*layers, add])


@pytest.mark.parametrize(
    "const,ok,needle",
    [
        (np.array([[[[-8, 7, 0]]]], np.int8), True, ""),
        (np.array([-8, 7, 0], np.int8), True, ""),
        (np.array([[[[-9, 7, 0]]]], np.int8), False, "rhs constants values -9..7 are outside INT4"),
        (np.array([[[[1, 8, 0]]]], np.int8), False, "outside INT4"),
        (np.ones((1, 4, 4, 3), np.int8), False, "not per channel"),
    ],
)
def test_elementwise_constants(tmp_path: Path, const, ok: bool, needle: str) -> None:
    pkg = _with_add(tmp_path / "add", const)
    if ok:
        load_package(pkg)
        return
    with pytest.raises(UserError) as e:
        load_package(pkg)
    assert NPZ_NAME in str(e.value) and "'bias'" in str(e.value) and needle in str(e.value)


def test_elementwise_declared_types_must_match_streams(tmp_path: Path) -> None:
    pkg = _with_add(tmp_path / "add", np.array([1, 2, 3], np.int8))
    tamper(pkg, layer_edit=("bias", lambda e: e["attributes"].update(lhs_dtype="INT8")))
    with pytest.raises(UserError, match="lhs stream is not its lhs_dtype INT8"):
        load_package(pkg)


# ---- the simulator's int64 path (weights above 2^45 that a package may legitimately have) ----


def test_thresholded_mvau_with_int64_accumulators_is_exact() -> None:
    """Partial sums past 2^53 run the GEMM in int64; the thresholds then count exactly (this
    raised ``KeyError: dtype('int64')`` in the threshold fit)."""
    rng = np.random.default_rng(3)
    w = rng.integers(-(2**46), 2**46, size=(6, 3), dtype=np.int64)
    x = rng.integers(0, 256, size=(50, 6), dtype=np.int64)
    acc = x @ w
    t = np.sort(rng.choice(acc.ravel(), size=(3, 15)), axis=1)
    layer = Layer(
        "MVAU",
        "big",
        ("x",),
        ("y",),
        {"MW": 6, "MH": 3, "ActVal": 0},
        ("UINT8",),
        ("UINT4",),
        arrays={"weights": w, "thresholds": t},
    )
    op = OPS["MVAU"](layer, [(0, 255)])
    assert op.gemm == np.dtype(np.int64)
    expect = (acc[:, :, None] >= t[None]).sum(axis=-1)
    assert np.array_equal(op(x.astype(np.uint8))[0], expect)


# ---- receptive field -----------------------------------------------------------------------


@pytest.mark.parametrize("pkg", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_packages_load_and_their_receptive_field_is_the_layers(pkg: Path) -> None:
    p = load_package(pkg)
    rf = receptive_field(p.layers, p.input["name"], p.output["name"], p.net_stride)
    # the FCN-8s backbone's 182 px; the unpadded classifier's window (224 px) exactly
    expected = p.card.window if p.card.task == "classification" else 182
    assert rf == p.card.receptive_field == expected


def _fcn_layers(cfg) -> tuple[list[Layer], str]:
    """The HW layers finn makes of a quantize model, as far as the receptive field sees them:
    pad + window + MVAU per conv, window + pool per pool, 1x1 score convs, nearest x2, adds."""
    from fcnseg.quantize.models.common import backbone_table

    layers: list[Layer] = []

    def add(kind: str, ins: list[str], attrs: dict, n_out: int = 1) -> list[str]:
        name = f"{kind}_{len(layers)}"
        outs = [f"{name}_out{i}" for i in range(n_out)]
        layers.append(Layer(kind, name, tuple(ins), tuple(outs), attrs, (), ()))
        return outs

    def conv(t: str, k: int) -> str:
        if k > 1:
            (t,) = add("FMPadding", [t], {"Padding": [k // 2] * 4})
            (t,) = add("ConvolutionInputGenerator", [t], {"ConvKernelDim": [k, k]})
        return add("MVAU", [t], {})[0]

    t, taps = "x", {}
    for name, *_ in backbone_table(cfg):
        if name.startswith("pool"):
            (t,) = add(
                "ConvolutionInputGenerator", [t], {"ConvKernelDim": [2, 2], "Stride": [2, 2]}
            )
            (t,) = add("Pool", [t], {"Function": "MaxPool", "KernelSize": [2, 2]})
            taps[name] = t
        else:
            t = conv(t, 3)
    t = conv(conv(conv(t, cfg.head_kernel), 1), 1)  # fc6, fc7, score_fr
    for pool in {"fcn32s": [], "fcn16s": ["pool4"], "fcn8s": ["pool4", "pool3"]}[cfg.arch]:
        (t,) = add("UpsampleNearestNeighbour", [t], {"HI": 1, "WI": 1, "HO": 2, "WO": 2})
        (t,) = add("ElementwiseAdd", [t, conv(taps[pool], 1)], {})
    return layers, t


@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s"])
@pytest.mark.parametrize("head_kernel", [1, 3, 7])
def test_receptive_field_equals_the_model_cards(arch: str, head_kernel: int) -> None:
    """The layer-based measure equals the card's (quantize/models/common.py) for every arch."""
    pytest.importorskip("torch")
    from fcnseg.quantize.models import ModelConfig
    from fcnseg.quantize.models.common import receptive_field as card_field

    cfg = ModelConfig(arch=arch, num_classes=3, head_kernel=head_kernel)
    layers, out = _fcn_layers(cfg)
    assert receptive_field(layers, "x", out, 32) == card_field(cfg)


def test_receptive_field_of_the_toy_package(package_dir: Path) -> None:
    """pad 1 + 3x3 window: 3 px; a 2x2/2 pool adds one more: 4 (the card says so)."""
    p = load_package(package_dir)
    assert receptive_field(p.layers, "x", "y", 2) == 4 == p.card.receptive_field
    meta = json.loads((package_dir / "accelerator.json").read_text())
    assert meta["model_card"]["receptive_field"] == 4


@pytest.mark.parametrize("shift", [20, 40])
def test_huge_weights_of_a_declared_wide_type_simulate_exactly(copy: Path, shift: int) -> None:
    """conv1's weights and thresholds times 2^shift, declared INT48 / INT64: a valid package
    whose accumulators pass 2^53 (shift 40: the int64 GEMM); every count, hence every score,
    is the original's."""
    before = _scores(copy)
    wkey, tkey = array_key(copy, "conv1", "weights"), array_key(copy, "conv1", "thresholds")
    w = read_array(copy, wkey).astype(np.int64) << shift
    t = read_array(copy, tkey).astype(np.int64) << shift
    types = {"weightDataType": "INT48", "accDataType": "INT64"}
    tamper(
        copy,
        arrays={wkey: w, tkey: t},
        layer_edit=("conv1", lambda e: e["attributes"].update(types)),
    )
    engine = SimEngine(load_package(copy))
    conv1 = next(op for op, _, _ in engine.steps if op.layer.name == "conv1")
    assert conv1.mvau.gemm == np.dtype(np.int64 if shift == 40 else np.float64)
    assert np.array_equal(_scores(copy), before)


def test_threshold_windows_beyond_int64_keys_count_exactly() -> None:
    """Thresholds spread over more than 2^62 per channel: the shifted-key search would overflow,
    so each channel is searched on its own."""
    from fcnseg.host.sim.layers import ThresholdCounter

    big = 2**61
    t = np.array([[-big, 0, big], [-big + 5, 1, big - 5], [-3, 2, big]], np.int64)
    counter = ThresholdCounter(t, 3, (-(2**62), 2**62), bias=0)
    assert counter.rows is not None
    x = np.array([[-big, 0, big], [-big + 4, 1, 2], [big, big, -4]], np.int64)
    expect = (x[:, :, None] >= t[None]).sum(axis=-1)
    assert np.array_equal(counter(x), expect)


# ---- bounded reading -----------------------------------------------------------------------


def test_npz_member_with_object_dtype_is_refused_unread(copy: Path) -> None:
    key = array_key(copy, "conv1", "weights")
    raw = npy_bytes(np.zeros((2, 2), np.int8)).replace(b"'|i1'", b"'|O' ")
    write_npz_member(copy, key, raw)
    tamper(copy)
    with pytest.raises(UserError, match="is object, not integer"):
        load_package(copy)


def test_npz_member_shorter_than_its_header_claims(copy: Path) -> None:
    key = array_key(copy, "conv1", "weights")
    write_npz_member(copy, key, npy_bytes(read_array(copy, key))[:-5])
    tamper(copy)
    with pytest.raises(UserError, match="holds"):
        load_package(copy)


def test_npz_member_not_an_npy(copy: Path) -> None:
    with zipfile.ZipFile(copy / NPZ_NAME, "a") as zf:
        zf.writestr("notes.txt", b"hello")
    tamper(copy)
    with pytest.raises(UserError, match="'notes.txt' is not one .npy array"):
        load_package(copy)


def test_oversized_accelerator_json_is_refused_unread(copy: Path, monkeypatch) -> None:
    import fcnseg.host.validation as validation

    monkeypatch.setattr(validation, "MAX_JSON_BYTES", 1000)
    with pytest.raises(UserError, match="more than the 1000 a package may have"):
        load_package(copy)


def test_a_card_without_receptive_field_gets_the_layers(copy: Path) -> None:
    """Unknown to the card is not a lie: the loaded card carries the layers' field, so the
    tiling overlap (and the stitched scores) are those of the complete package."""
    tamper(copy, json_edit=lambda meta: meta["model_card"].pop("receptive_field"))
    pkg = load_package(copy)
    assert "receptive_field" not in pkg.model_card
    assert pkg.card.receptive_field == 4 and pkg.geometry.receptive_field == 4


def test_listed_files_are_bounded_by_size_before_any_is_hashed(copy: Path, monkeypatch) -> None:
    """A listed file of 64 GiB (sparse: no disk used) is refused by its size at once, not
    hashed for minutes before its sha256 mismatches."""
    import fcnseg.host.package as package_format

    with open(copy / package_format.NPZ_NAME, "r+b") as f:
        f.truncate(64 << 30)

    def no_hashing(path: object) -> str:
        raise AssertionError(f"{path} was hashed before the sizes were checked")

    monkeypatch.setattr(package_format, "sha256_file", no_hashing)
    with pytest.raises(UserError, match=r"listed files hold 64\.0 GiB \(accelerator\.npz"):
        load_package(copy)


def test_the_layers_must_be_the_kinds_of_the_hardware_the_package_carries(tmp_path: Path) -> None:
    """A skip join retyped from Add to Max in accelerator.json, hashes re-made: a valid layer
    list that computes other scores than the generated hardware, refused by the kinds."""
    fixture = ROOT / "tests" / "board" / "data" / "fcn8s-tiny"
    pkg = copy_package(fixture, tmp_path / "pkg")
    name = next(e["name"] for e in read_meta(pkg)["layers"] if e["kind"] == "ElementwiseAdd")
    tamper(pkg, layer_edit=(name, lambda entry: entry.update(kind="ElementwiseMax")))
    with pytest.raises(UserError, match=r"hardware\.tar\.xz: the hardware has \d ElementwiseAdd"):
        load_package(pkg)
    load_package(fixture)  # the untouched package's kinds are its hardware's
