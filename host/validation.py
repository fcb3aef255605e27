"""Semantic validation of a deployment package on load: a package cannot lie.

The sha256 of every file says a package arrived as written; it says nothing about whether what
was written is consistent — a package edited with care (hashes updated) or written by a buggy
tool would otherwise load and compute other scores, or fail deep inside the simulator with a
traceback. :func:`validate_package` therefore re-derives what the layers imply and compares it
with what the package declares, after the structural checks of :mod:`fcnseg.host.package`:

- **sizes** (:data:`MAX_TILE_SIDE` ...): claimed sizes are bounded before anything is allocated
  (the npz reader checks each member's ``.npy`` header against :data:`MAX_ARRAY_BYTES`);
- **the graph**: each kind's number of inputs, outputs and arrays, every tensor produced once;
- **attributes**: the ones the simulator computes with, of the right type and range;
- **arrays**: shapes per role, weights within ``weightDataType``, constants within their side's
  dtype, threshold rows of ``2^bits - 1`` steps, sorted, within the range the writer clips to;
- **datatypes**: each layer's input dtypes are its producers' output dtypes, and every tensor's
  *proven* integer range (propagated from the input dtype exactly as the simulator does it,
  :func:`fcnseg.host.sim.ranges.propagate`) lies within its declared dtype, every MVAU's
  accumulator within its ``accDataType`` — where it does not, the hardware would wrap and the
  simulator would not;
- **shapes**: every tensor's NHWC shape recomputed from the tile equals the declared one;
- **the tile**: a positive multiple of the net stride;
- **runtime-writable weights** (:func:`check_runtime_weights`, optional): each writable layer's
  recorded shape and datatype are its array's and its ``.dat`` holds exactly its words;
- **the receptive field** (:func:`receptive_field`), recomputed from the layers, equals the
  model card's (the host's tiling overlap is derived from it: a smaller claim breaks exactness);
  a card without one gets the layers' (:func:`fcnseg.host.package.load_package`).

Each violation is one :class:`UserError` line ``"{package}: {file}: layer {name!r}: {rule}"``.
numpy only (the host's import path).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcnseg.errors import UserError
from fcnseg.host.dtypes import is_integer_dtype, parse_dtype
from fcnseg.host.package import JSON_NAME, NPZ_NAME, RUNTIME_WEIGHTS_KEY
from fcnseg.host.sim.ranges import POOL_FUNCTIONS, Range, matmul_range, propagate

if TYPE_CHECKING:
    from fcnseg.host.card import ModelCard
    from fcnseg.host.package import Layer


#: Bounds on what a package may claim, checked before anything of that size is allocated. They
#: are far above any accelerator a Zynq holds (the shipped ones: tiles up to 512x1024, 128
#: channels, arrays under 1 MB) and low enough that a lie cannot exhaust a board's memory.
MAX_JSON_BYTES = 64 << 20  #: accelerator.json
#: every listed file together (sizes checked before any is hashed: a bitfile is ~20 MB)
MAX_PACKAGE_BYTES = 2 << 30
MAX_ARRAY_BYTES = 256 << 20  #: one accelerator.npz member's data
MAX_NPZ_BYTES = 1 << 30  #: all of them together
MAX_LAYERS = 4096
MAX_TILE_SIDE = 8192  #: pixels, either side of the tile
MAX_CHANNELS = 1 << 16  #: channels of any tensor
MAX_TENSOR_ELEMENTS = 1 << 28  #: elements of any tensor at the tile size
#: every proven range lies within +-2^62: the simulator computes in int64 and needs headroom
#: for the threshold windows (``hi + 1``, per-channel key offsets)
RANGE_LIMIT = 2**62
#: the receptive field is measured on 1-D images up to this long (larger fields are refused)
MAX_RF_IMAGE = 1 << 17

ELEMENTWISE = ("ElementwiseAdd", "ElementwiseSub", "ElementwiseMul", "ElementwiseMax")
#: array roles each kind may carry (which are required is the structural check's business)
ROLES: dict[str, tuple[str, ...]] = {
    "MVAU": ("weights", "thresholds"),
    "Thresholding": ("thresholds",),
    **{k: ("lhs", "rhs") for k in ELEMENTWISE},
}


class Refusal:
    """Builds the one-line refusals of one package: ``{root}: {file}: layer {name!r}: {rule}``."""

    def __init__(self, root: str | Path, file: str = JSON_NAME):
        self.root, self.file = str(root), file

    def __call__(self, rule: str, layer: str | None = None, file: str | None = None) -> UserError:
        where = f"{self.root}: {file or self.file}"
        return UserError(f"{where}: layer {layer!r}: {rule}" if layer else f"{where}: {rule}")

    def npz(self) -> Refusal:
        """The same package's refusals about its arrays (they name accelerator.npz)."""
        return Refusal(self.root, NPZ_NAME)


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def check_json_size(path: Path, root: str | Path) -> None:
    """Refuse an accelerator.json above :data:`MAX_JSON_BYTES` before it is read."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise Refusal(root)(f"{size} bytes, more than the {MAX_JSON_BYTES} a package may have")


def check_listed_sizes(sizes: Mapping[str, int], root: str | Path) -> None:
    """The listed files' sizes (bytes, from ``stat``) are bounded before any is hashed: a
    sparse 64 GiB file would otherwise be read for minutes before its sha256 mismatched."""
    total = sum(sizes.values())
    if total > MAX_PACKAGE_BYTES:
        rel, biggest = max(sizes.items(), key=lambda item: item[1])
        raise UserError(
            f"{root}: its listed files hold {total / 2**30:.1f} GiB ({rel}: "
            f"{biggest / 2**30:.1f} GiB); a package holds at most {MAX_PACKAGE_BYTES >> 30} GiB"
        )


def check_npy_header(key: str, shape: Any, dtype: np.dtype, stored: int, root: str | Path) -> int:
    """Check one npz member's claimed array (its ``.npy`` header) before its data is read.

    ``stored`` is the bytes the member holds after the header. Returns the data's byte count.
    Only integer arrays of bounded size whose data fills the member exactly are accepted, so a
    header claiming 2^40 elements is refused instead of allocated."""
    fail = Refusal(root)
    if dtype.hasobject or dtype.kind not in "iu":
        raise fail(f"array {key!r} is {dtype}, not integer", file=NPZ_NAME)
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise fail(f"array {key!r} has a malformed shape {shape!r}", file=NPZ_NAME)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise fail(
            f"array {key!r} claims {nbytes} bytes, more than {MAX_ARRAY_BYTES}", file=NPZ_NAME
        )
    if nbytes != stored:
        raise fail(f"array {key!r} claims {nbytes} bytes of data but holds {stored}", file=NPZ_NAME)
    return nbytes


def validate_package(
    meta: Mapping[str, Any], layers: Sequence[Layer], card: ModelCard, root: str | Path
) -> int:
    """Refuse (one-line :class:`UserError`) a package whose layers do not mean what it declares;
    return the receptive field of its layers (:func:`receptive_field`).

    Runs after the structural checks and the sha256 verification, on the loaded layers; the
    rule families below run in an order where each relies only on what the earlier ones
    established (attributes before shapes, shapes before ranges). A card without a receptive
    field is not refused (the loader gives it the layers'); one with another is."""
    fail = Refusal(root)
    try:
        field_px = _validate(meta["io"], layers, card, fail)
        if RUNTIME_WEIGHTS_KEY in meta:
            check_runtime_weights(meta[RUNTIME_WEIGHTS_KEY], layers, root)
        return field_px
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError) as e:
        # every rule checks the types it reads first; this is the net under a value no rule
        # foresaw (found by fuzzing): still one line, never a traceback
        raise fail(f"malformed ({type(e).__name__}: {e})") from None


def _validate(
    io: Mapping[str, Any], layers: Sequence[Layer], card: ModelCard, fail: Refusal
) -> int:
    if len(layers) > MAX_LAYERS:
        raise fail(f"{len(layers)} layers, more than {MAX_LAYERS}")
    check_graph(layers, io, fail)
    for layer in layers:
        check_attributes(layer, fail)
    net_stride = check_tile(layers, io, fail)
    check_shapes(layers, io, fail)
    for layer in layers:
        check_arrays(layer, fail)
    check_dtypes(layers, io, fail)
    check_ranges(layers, io, fail)
    got = receptive_field(layers, io["input"]["name"], io["output"]["name"], net_stride)
    if got is None:
        raise fail(f"the layers' receptive field exceeds {MAX_RF_IMAGE // 8} px")
    rf = card.receptive_field
    if rf is not None and got != rf:
        raise fail(f"model_card receptive_field {rf} but the layers give {got}")
    return got


# --------------------------------------------------------------------------------------------
# Runtime-writable weights
# --------------------------------------------------------------------------------------------

#: the array each writable layer kind's memory holds
_RUNTIME_ROLE = {"MVAU": "weights", "Thresholding": "thresholds"}


def check_runtime_weights(
    record: Mapping[str, Any], layers: Sequence[Layer], root: str | Path
) -> None:
    """The writable layers of a ``runtime_weights`` record (structure checked by
    :func:`fcnseg.host.package.check_runtime_weights`) against the package: each layer's
    array has the recorded shape and its ``weightDataType`` is the recorded dtype (the memory
    is that wide), and its ``.dat`` file holds exactly the recorded number of words, each one
    32-bit hex word a line (what finn-plus-driver parses)."""
    by_name = {layer.name: layer for layer in layers}
    for entry in record["layers"]:
        name = entry["layer"]
        fail = Refusal(root, entry["file"])
        layer = by_name[name]
        arr = layer.arrays[_RUNTIME_ROLE[layer.kind]]
        if list(arr.shape) != list(entry["shape"]):
            raise fail(f"shape {list(entry['shape'])} but the package has {list(arr.shape)}", name)
        declared = layer.attributes.get("weightDataType")
        if declared != entry["dtype"]:
            raise fail(f"dtype {entry['dtype']} but the layer declares {declared}", name)
        path = Path(root) / entry["file"]
        if path.stat().st_size > 9 * entry["words"] + 16:
            raise fail(f"larger than {entry['words']} words", name)
        tokens = path.read_text(encoding="ascii", errors="replace").split()
        if len(tokens) != entry["words"]:
            raise fail(f"{len(tokens)} words, the layout says {entry['words']}", name)
        if not all(len(t) == 8 and all(c in "0123456789abcdefABCDEF" for c in t) for t in tokens):
            raise fail("a word is not 8 hex digits", name)


# --------------------------------------------------------------------------------------------
# The graph and the attributes
# --------------------------------------------------------------------------------------------


def check_graph(layers: Sequence[Layer], io: Mapping[str, Any], fail: Refusal) -> None:
    """Each kind's inputs, outputs, dtypes lists and array roles; each tensor produced once.

    The simulator zips inputs with ranges and outputs with results: a count off by one would
    drop a tensor silently or raise deep inside a run."""
    produced = {io["input"]["name"]}
    for layer in layers:
        n_in, n_out, name = len(layer.inputs), len(layer.outputs), layer.name
        consts = [r for r in ("lhs", "rhs") if r in layer.arrays]
        expect_in = {"AddStreams": 2, **{k: 2 - len(consts) for k in ELEMENTWISE}}.get(
            layer.kind, 1
        )
        if expect_in == 0:
            raise fail(f"{layer.kind} has two constants and no stream", name)
        if n_in != expect_in:
            raise fail(f"{layer.kind} reads {n_in} streams, not {expect_in}", name)
        if layer.kind == "DuplicateStreams":
            if n_out < 2:
                raise fail(f"DuplicateStreams has {n_out} outputs, needs 2 or more", name)
        elif n_out != 1:
            raise fail(f"{layer.kind} writes {n_out} streams, not 1", name)
        if len(layer.input_dtypes) != n_in or len(layer.output_dtypes) != n_out:
            raise fail("input_dtypes/output_dtypes do not have one entry per stream", name)
        extra = sorted(set(layer.arrays) - set(ROLES.get(layer.kind, ())))
        if extra:
            raise fail(f"{layer.kind} has no array role {extra[0]!r}", name)
        for t in layer.outputs:
            if t in produced:
                raise fail(f"tensor {t!r} is produced twice", name)
            produced.add(t)


def _int(layer: Layer, key: str, fail: Refusal, default: int | None = None, lo: int = 0) -> int:
    value = layer.attributes.get(key, default)
    if value is None:
        raise fail(f"attribute {key!r} missing", layer.name)
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise fail(f"attribute {key!r} is {value!r}, not an integer >= {lo}", layer.name)
    return value


def _ints(layer: Layer, key: str, n: int, fail: Refusal, default: Any = None, lo: int = 1):
    value = layer.attributes.get(key, default)
    ok = isinstance(value, list | tuple) and len(value) == n
    if not ok or not all(not isinstance(v, bool) and isinstance(v, int) and v >= lo for v in value):
        raise fail(f"attribute {key!r} is {value!r}, not {n} integers >= {lo}", layer.name)
    return [int(v) for v in value]


def _dtype_attr(layer: Layer, key: str, fail: Refusal) -> str:
    value = layer.attributes.get(key)
    if value is None:
        raise fail(f"attribute {key!r} missing (the datatype the hardware uses)", layer.name)
    if not is_integer_dtype(value):
        raise fail(f"attribute {key!r} is {value!r}, not an integer datatype", layer.name)
    return str(value)


def _flag(layer: Layer, key: str, fail: Refusal) -> int:
    value = _int(layer, key, fail, default=0)
    if value not in (0, 1):
        raise fail(f"attribute {key!r} is {value!r}, not 0 or 1", layer.name)
    return value


def check_attributes(layer: Layer, fail: Refusal) -> None:
    """The attributes the simulator computes with: present, typed, in range (per kind)."""
    for dt in (*layer.input_dtypes, *layer.output_dtypes):
        if not is_integer_dtype(dt):
            raise fail(f"datatype {dt!r} is not an integer datatype", layer.name)
    rule = _ATTRIBUTE_RULES.get(layer.kind)
    if rule is not None:
        rule(layer, fail)


def _mvau_attributes(layer: Layer, fail: Refusal) -> None:
    """MW, MH, ActVal, flags, and the declared weight and accumulator types (without them the
    weights and the accumulator cannot be checked against what the hardware holds)."""
    name = layer.name
    _int(layer, "MW", fail, lo=1), _int(layer, "MH", fail, lo=1)
    _int(layer, "ActVal", fail, default=0, lo=-RANGE_LIMIT)
    no_act = _flag(layer, "noActivation", fail)
    if _flag(layer, "binaryXnorMode", fail):
        raise fail("binaryXnorMode MVAUs are not supported", name)
    if layer.input_dtypes[0] == "BIPOLAR":
        raise fail("BIPOLAR-input MVAUs are not supported", name)
    _dtype_attr(layer, "weightDataType", fail)
    _dtype_attr(layer, "accDataType", fail)
    if no_act and "thresholds" in layer.arrays:
        raise fail("noActivation MVAU carries thresholds it would ignore", name)
    if not no_act and "thresholds" not in layer.arrays:
        raise fail("MVAU with activation has no thresholds", name)


def _window_attributes(layer: Layer, fail: Refusal) -> None:
    _ints(layer, "ConvKernelDim", 2, fail)
    _ints(layer, "Stride", 2, fail, default=[1, 1])
    _ints(layer, "Dilation", 2, fail, default=[1, 1])
    _flag(layer, "depthwise", fail)


def _padding_attributes(layer: Layer, fail: Refusal) -> None:
    _ints(layer, "Padding", 4, fail, lo=0)  # [top, left, bottom, right]


def _pool_attributes(layer: Layer, fail: Refusal) -> None:
    fn = layer.attributes.get("Function")
    if fn not in POOL_FUNCTIONS:
        raise fail(f"pool function {fn!r} is not one of {', '.join(POOL_FUNCTIONS)}", layer.name)
    _ints(layer, "KernelSize", 2, fail)


def _thresholding_attributes(layer: Layer, fail: Refusal) -> None:
    _int(layer, "NumChannels", fail, lo=1)
    _int(layer, "ActVal", fail, default=0, lo=-RANGE_LIMIT)
    _dtype_attr(layer, "weightDataType", fail)


def _upsample_attributes(layer: Layer, fail: Refusal) -> None:
    """Only the factor ``HO / HI`` is size-free, so it must be an integer."""
    hi, wi, ho, wo = (_int(layer, k, fail, lo=1) for k in ("HI", "WI", "HO", "WO"))
    if ho % hi or wo % wi:
        raise fail(f"upsampling {hi}x{wi} -> {ho}x{wo} is not by an integer factor", layer.name)


def _duplicate_attributes(layer: Layer, fail: Refusal) -> None:
    n = _int(layer, "NumOutputStreams", fail, default=len(layer.outputs), lo=1)
    if n != len(layer.outputs):
        raise fail(f"NumOutputStreams {n} but {len(layer.outputs)} outputs", layer.name)


def _elementwise_attributes(layer: Layer, fail: Refusal) -> None:
    for key in ("lhs_dtype", "rhs_dtype", "out_dtype"):
        _dtype_attr(layer, key, fail)


_ATTRIBUTE_RULES: dict[str, Callable[[Layer, Refusal], None]] = {
    "MVAU": _mvau_attributes,
    "ConvolutionInputGenerator": _window_attributes,
    "FMPadding": _padding_attributes,
    "Pool": _pool_attributes,
    "Thresholding": _thresholding_attributes,
    "UpsampleNearestNeighbour": _upsample_attributes,
    "DuplicateStreams": _duplicate_attributes,
    **{k: _elementwise_attributes for k in ELEMENTWISE},
}


# --------------------------------------------------------------------------------------------
# Tile and shapes
# --------------------------------------------------------------------------------------------


def check_tile(layers: Sequence[Layer], io: Mapping[str, Any], fail: Refusal) -> int:
    """The tile: N = 1, sides within :data:`MAX_TILE_SIDE`, multiples of the net stride (the
    simulator and the fabric need every pool to see whole windows). Returns the net stride."""
    from fcnseg.host.package import layer_strides

    shape = [int(v) for v in io["input"]["shape"]]
    if shape[0] != 1:
        raise fail(f"input shape {shape}: batch {shape[0]}, not 1")
    h, w = shape[1:3]
    if min(h, w) < 1 or max(h, w) > MAX_TILE_SIDE:
        raise fail(f"tile {h}x{w} is outside 1..{MAX_TILE_SIDE} px per side")
    try:
        net, _ = layer_strides(layers, io["input"]["name"], io["output"]["name"])
    except UserError as e:
        raise fail(str(e)) from None
    if h % net or w % net:
        raise fail(f"tile {h}x{w} is not a multiple of the net stride {net}")
    return net


Shape = tuple[int, ...]


def _out_shapes(layer: Layer, ins: list[Shape], fail: Refusal) -> list[Shape]:
    """The NHWC output shapes of one layer from its input shapes (the simulator's size rules)."""
    a, name, x = layer.attributes, layer.name, ins[0]
    n, h, w, c = x
    kind = layer.kind
    if kind == "FMPadding":
        top, left, bottom, right = (int(v) for v in a["Padding"])
        return [(n, h + top + bottom, w + left + right, c)]
    if kind == "ConvolutionInputGenerator":
        (kh, kw), (sh, sw) = a["ConvKernelDim"], a.get("Stride", [1, 1])
        dh, dw = a.get("Dilation", [1, 1])
        oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
        if oh < 1 or ow < 1:
            raise fail(f"input {h}x{w} is smaller than its {kh}x{kw} window", name)
        return [(n, oh, ow, kh * kw * c)]
    if kind == "Pool":
        k2 = int(a["KernelSize"][0]) * int(a["KernelSize"][1])
        if c % k2:
            raise fail(f"{c} window values are not a multiple of the pool's {k2}", name)
        return [(n, h, w, c // k2)]
    if kind == "MVAU":
        if c != int(a["MW"]):
            raise fail(f"input has {c} channels but MW is {a['MW']}", name)
        return [(n, h, w, int(a["MH"]))]
    if kind == "Thresholding" and c != int(a["NumChannels"]):
        raise fail(f"input has {c} channels but NumChannels is {a['NumChannels']}", name)
    if kind == "UpsampleNearestNeighbour":
        return [(n, h * (int(a["HO"]) // int(a["HI"])), w * (int(a["WO"]) // int(a["WI"])), c)]
    if len(ins) == 2 and ins[0] != ins[1]:
        raise fail(f"operands {list(ins[0])} and {list(ins[1])} differ in shape", name)
    return [x] * len(layer.outputs)


def check_shapes(layers: Sequence[Layer], io: Mapping[str, Any], fail: Refusal) -> None:
    """Every tensor's NHWC shape, recomputed from the tile through the layers, equals the
    declared one (each layer's input/output shapes, the io output's), within the bounds."""
    shapes: dict[str, Shape] = {io["input"]["name"]: tuple(int(v) for v in io["input"]["shape"])}
    for layer in layers:
        ins = [shapes[t] for t in layer.inputs]
        declared_in = [tuple(s) for s in layer.input_shapes]
        if declared_in != ins:
            raise fail(
                f"input_shapes {_lists(declared_in)} but the tile gives {_lists(ins)}", layer.name
            )
        outs = _out_shapes(layer, ins, fail)
        declared_out = [tuple(s) for s in layer.output_shapes]
        if declared_out != outs:
            raise fail(
                f"output_shapes {_lists(declared_out)} but the tile gives {_lists(outs)}",
                layer.name,
            )
        for t, s in zip(layer.outputs, outs, strict=True):
            if s[-1] > MAX_CHANNELS or math.prod(s) > MAX_TENSOR_ELEMENTS:
                raise fail(f"tensor {t!r} of shape {list(s)} exceeds the size bounds", layer.name)
            shapes[t] = s
    out = io["output"]
    got = shapes[out["name"]]
    if tuple(int(v) for v in out["shape"]) != got:
        raise fail(f"output shape {list(out['shape'])} but the layers give {list(got)}")


def _lists(shapes: Sequence[Shape]) -> list[list[int]]:
    return [list(s) for s in shapes]


# --------------------------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------------------------


def _values_within(arr: np.ndarray, dtype: str) -> str | None:
    """Why ``arr`` is not within the integer datatype ``dtype`` (None if it is). BIPOLAR holds
    -1 and +1 only: a 0 would be sent as a -1 by the hardware's one-bit encoding."""
    lo, hi = parse_dtype(dtype)
    amin, amax = int(arr.min()), int(arr.max())
    if amin < lo or amax > hi:
        return f"values {amin}..{amax} are outside {dtype} ({lo}..{hi})"
    if dtype == "BIPOLAR" and (arr == 0).any():
        return "BIPOLAR values must be -1 or +1, found 0"
    return None


def expected_steps(odt: str) -> int:
    """Thresholds per channel a multi-threshold into ``odt`` has: one per step between its
    values, ``2^bits - 1`` for INTn/UINTn (TERNARY 2; BIPOLAR 1: a count of 0 or 1)."""
    if odt == "BIPOLAR":
        return 1
    lo, hi = parse_dtype(odt)
    return hi - lo


def expected_act_val(odt: str) -> int:
    """finn's ActVal for outputs of ``odt``: the type's minimum (0 for unsigned, BIPOLAR 0:
    its count maps to ``2 c - 1`` instead)."""
    return 0 if odt == "BIPOLAR" else parse_dtype(odt)[0]


def check_thresholds(
    layer: Layer, channels: int, clip: Range, extra: tuple[str, Range] | None, fail: Refusal
) -> None:
    """One layer's threshold array: (channels or 1, steps) with the output dtype's steps,
    ActVal consistent with it, rows sorted, values within ``clip`` = ``[lo, hi + 1]`` of the
    input (what the writer clips to; outside it a threshold changes no count) and within
    ``extra`` = ``(what, [lo, hi])`` (the type the hardware stores thresholds in)."""
    t, name = layer.arrays["thresholds"], layer.name
    odt = layer.output_dtypes[0]
    if t.ndim != 2 or t.shape[0] not in (1, channels):
        raise fail(f"thresholds of shape {list(t.shape)} are not ({channels} or 1, steps)", name)
    steps = expected_steps(odt)
    if t.shape[1] != steps:
        raise fail(f"{t.shape[1]} threshold steps per channel; {odt} outputs need {steps}", name)
    act = int(layer.attributes.get("ActVal", 0))
    if act != expected_act_val(odt):
        raise fail(f"ActVal {act} does not fit {odt} outputs (needs {expected_act_val(odt)})", name)
    num_steps = layer.attributes.get("numSteps")
    if num_steps is not None and num_steps != steps:
        raise fail(f"numSteps {num_steps} but the thresholds have {steps} steps", name)
    if (np.diff(t.astype(np.int64), axis=1) < 0).any():
        raise fail("thresholds are not sorted (non-decreasing) per channel", name)
    tmin, tmax = int(t.min()), int(t.max())
    if tmin < clip[0] or tmax > clip[1] + 1:
        raise fail(
            f"thresholds {tmin}..{tmax} are outside the input's range + 1 "
            f"({clip[0]}..{clip[1] + 1})",
            name,
        )
    if extra is not None:
        what, (lo, hi) = extra
        if tmin < lo or tmax > hi:
            raise fail(f"thresholds {tmin}..{tmax} are outside {what} ({lo}..{hi})", name)


def check_arrays(layer: Layer, fail: Refusal) -> None:
    """Each array of a layer against the role's shape and the layer's declared datatypes."""
    name, a, fail = layer.name, layer.attributes, fail.npz()
    for role, arr in layer.arrays.items():
        if arr.ndim == 0 or arr.size == 0:
            raise fail(f"array {role!r} of shape {list(arr.shape)} is empty or 0-d", name)
        if arr.dtype == np.uint64 and int(arr.max()) > np.iinfo(np.int64).max:
            raise fail(f"array {role!r} holds values beyond int64", name)
    if layer.kind == "MVAU":
        _check_mvau_arrays(layer, fail)
    elif layer.kind == "Thresholding":
        wdt = str(a["weightDataType"])
        extra = (f"weightDataType {wdt}", parse_dtype(wdt))
        clip = parse_dtype(layer.input_dtypes[0])
        check_thresholds(layer, int(a["NumChannels"]), clip, extra, fail)
    elif layer.kind in ELEMENTWISE:
        _check_constants(layer, fail)


def _check_mvau_arrays(layer: Layer, fail: Refusal) -> None:
    a, name = layer.attributes, layer.name
    w = layer.arrays["weights"]
    mw, mh = int(a["MW"]), int(a["MH"])
    if w.shape != (mw, mh):
        raise fail(f"weights of shape {list(w.shape)} are not (MW, MH) = ({mw}, {mh})", name)
    wdt = str(a["weightDataType"])
    why = _values_within(w, wdt)
    if why:
        raise fail(f"weights {why} (weightDataType)", name)
    if "thresholds" in layer.arrays:
        clip, _ = matmul_range(parse_dtype(layer.input_dtypes[0]), w)
        adt = str(a["accDataType"])
        alo, ahi = parse_dtype(adt)
        extra = (f"accDataType {adt} + 1", (alo, ahi + 1))
        check_thresholds(layer, mh, clip, extra, fail)


def _check_constants(layer: Layer, fail: Refusal) -> None:
    """Elementwise constants: within their side's dtype, and size-free (every axis but the
    channels 1), so they broadcast against the stream at any input size the simulator runs."""
    for side in ("lhs", "rhs"):
        if side not in layer.arrays:
            continue
        c = layer.arrays[side]
        if c.ndim > 4 or any(d != 1 for d in c.shape[:-1]):
            raise fail(f"{side} constants of shape {list(c.shape)} are not per channel", layer.name)
        dt = str(layer.attributes[f"{side}_dtype"])
        why = _values_within(c, dt)
        if why:
            raise fail(f"{side} constants {why} ({side}_dtype)", layer.name)


# --------------------------------------------------------------------------------------------
# Datatypes and proven ranges
# --------------------------------------------------------------------------------------------


def check_dtypes(layers: Sequence[Layer], io: Mapping[str, Any], fail: Refusal) -> None:
    """The input is UINT8 (raw pixels); each layer reads its streams in the dtypes their
    producers write (a mismatch means the hardware reinterprets bits); an Elementwise layer's
    stream sides and output are its declared ``lhs_dtype``/``rhs_dtype``/``out_dtype``; the
    output port has its producer's dtype."""
    in_dt = io["input"]["dtype"]
    if in_dt != "UINT8":
        raise fail(f"input dtype {in_dt} is not UINT8 (the accelerator reads raw pixels)")
    dtypes = {io["input"]["name"]: in_dt}
    for layer in layers:
        for t, dt in zip(layer.inputs, layer.input_dtypes, strict=True):
            if dtypes[t] != dt:
                raise fail(f"reads {t!r} as {dt} but it is written as {dtypes[t]}", layer.name)
        if layer.kind in ELEMENTWISE:
            streams = iter(layer.input_dtypes)
            for side in ("lhs", "rhs"):
                want = str(layer.attributes[f"{side}_dtype"])
                if side not in layer.arrays and next(streams) != want:
                    raise fail(f"{side} stream is not its {side}_dtype {want}", layer.name)
            if layer.output_dtypes[0] != layer.attributes["out_dtype"]:
                raise fail(
                    f"output dtype is not its out_dtype {layer.attributes['out_dtype']}", layer.name
                )
        dtypes.update(zip(layer.outputs, layer.output_dtypes, strict=True))
    out = io["output"]
    if dtypes[out["name"]] != out["dtype"]:
        raise fail(f"output dtype {out['dtype']} but its layer writes {dtypes[out['name']]}")


def check_ranges(layers: Sequence[Layer], io: Mapping[str, Any], fail: Refusal) -> None:
    """Every tensor's proven range within its declared dtype, every MVAU's accumulator within
    its accDataType: the ranges the simulator computes with (:func:`propagate`) are then the
    values the hardware's fixed-width streams hold, so neither wraps where the other does not
    (the simulator's ``output_may_wrap``/``acc_may_wrap`` cannot happen in a loaded package)."""
    ranges, per_layer = propagate(layers, io["input"]["name"], parse_dtype(io["input"]["dtype"]))
    for layer in layers:
        proven = per_layer[layer.name]
        checks: list[tuple[str, Range, str]] = [
            (f"output {t!r}", r, dt)
            for t, r, dt in zip(layer.outputs, proven.outputs, layer.output_dtypes, strict=True)
        ]
        if proven.acc is not None:
            checks.append(("accumulator", proven.acc, str(layer.attributes["accDataType"])))
        for what, (lo, hi), dt in checks:
            if lo < -RANGE_LIMIT or hi > RANGE_LIMIT:
                raise fail(f"{what} reaches {lo}..{hi}, beyond the simulator's int64", layer.name)
            dlo, dhi = parse_dtype(dt)
            if lo < dlo or hi > dhi:
                raise fail(
                    f"{what} takes values {lo}..{hi}, outside its {dt} ({dlo}..{dhi}); "
                    "the hardware would wrap",
                    layer.name,
                )


# --------------------------------------------------------------------------------------------
# Receptive field
# --------------------------------------------------------------------------------------------

_EMPTY = 1 << 40  #: lo of a cell that depends on no input pixel (padding); its hi is -_EMPTY


def receptive_field(
    layers: Sequence[Layer], input_name: str, output_name: str, net_stride: int
) -> int | None:
    """Pixels per axis one output cell depends on, derived from the layers alone.

    The same measure as the model card's (``fcnseg.quantize.models.common.receptive_field``):
    interval propagation along one axis of a long 1-D image — every cell carries the
    ``[lo, hi]`` input pixels it depends on; padding cells depend on none; a window cell
    ``j`` (kernel ``k``, stride ``s``, dilation ``d``) is the union of cells ``j s + i d``;
    nearest upsampling by ``f`` repeats each cell ``f`` times; a sum of two streams is the
    union; pools, MVAUs, thresholds and data movers keep the cells' intervals — and the result
    is the widest interval among the output cells of the image's middle half (with nearest
    upsampling the intervals depend on a cell's phase). The image grows until the field is at
    most an eighth of it, so no middle cell sees the border; both axes are measured and the
    larger is returned. None if it does not fit :data:`MAX_RF_IMAGE`.
    """
    best = 0
    for axis in (0, 1):
        n = net_stride * 64
        while True:
            rf = _field_1d(layers, input_name, output_name, axis, n)
            if rf * 8 <= n:
                break
            n *= 4
            if n > MAX_RF_IMAGE:
                return None
        best = max(best, rf)
    return best


def _field_1d(layers: Sequence[Layer], input_name: str, output_name: str, axis: int, n: int) -> int:
    Cells = tuple[np.ndarray, np.ndarray]
    cells: dict[str, Cells] = {input_name: (np.arange(n), np.arange(n))}
    for layer in layers:
        lo, hi = cells[layer.inputs[0]]
        a = layer.attributes
        if layer.kind == "FMPadding":
            pad = [int(v) for v in a["Padding"]]
            before, after = pad[axis], pad[axis + 2]
            lo = np.pad(lo, (before, after), constant_values=_EMPTY)
            hi = np.pad(hi, (before, after), constant_values=-_EMPTY)
        elif layer.kind == "ConvolutionInputGenerator":
            k = int(a["ConvKernelDim"][axis])
            s = int(a.get("Stride", [1, 1])[axis])
            d = int(a.get("Dilation", [1, 1])[axis])
            m = (len(lo) - d * (k - 1) - 1) // s + 1
            lo = np.min([lo[i * d : i * d + s * (m - 1) + 1 : s] for i in range(k)], axis=0)
            hi = np.max([hi[i * d : i * d + s * (m - 1) + 1 : s] for i in range(k)], axis=0)
        elif layer.kind == "UpsampleNearestNeighbour":
            f = int(a["HO"]) // int(a["HI"]) if axis == 0 else int(a["WO"]) // int(a["WI"])
            lo, hi = np.repeat(lo, f), np.repeat(hi, f)
        elif len(layer.inputs) == 2:
            lo2, hi2 = cells[layer.inputs[1]]
            lo, hi = np.minimum(lo, lo2), np.maximum(hi, hi2)
        for t in layer.outputs:
            cells[t] = (lo, hi)
    lo, hi = cells[output_name]
    middle = slice(len(lo) // 4, 3 * len(lo) // 4)
    width = hi[middle] - lo[middle] + 1
    width = width[width > 0]
    return int(width.max()) if width.size else 0
