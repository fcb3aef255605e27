"""Mutations of a valid deployment package, and the oracle the package fuzzer checks them with.

Used by ``tests/host/test_package_fuzz.py`` (issue 16, part 6). A hostile user edits a package
and re-hashes it consistently: :func:`rehash` (:func:`tests.helpers.tamper.rehash`) rewrites the
``files`` sha256 of accelerator.json and, where the format has one (format version 2), its
manifest digest (``fcnseg.host.package.manifest_digest``, looked up with ``getattr``). What must
then refuse an edit is the loader's validation, not the hashes. A few mutations leave the hashes
stale on purpose: those the hashes alone must refuse.

A :class:`Mutation` is one edit (arrays, JSON values, files) with a label saying exactly what it
did and a ``strict`` flag:

- **strict**: the edit makes the package invalid, or does not change what it computes. The
  loader must refuse it with one line, or compute the unmutated package's integer scores.
- **not strict**: the edit gives a *valid* package of another meaning (a weight moved inside its
  declared type, a Pool's function swapped for another integer one, an input wired to another
  tensor of the same shape and type). Since a re-hashed package carries no proof of its origin,
  the loader may accept it and score differently; it must still refuse with one line or run.

Which array values are legal is decided here (:func:`array_legal`, from the layer's declared
types and the format's rules), not by asking the loader under test. Rules of thumb for the
classification: ``strict`` unless the result is demonstrably a valid package; a mutation this
module cannot classify is strict.

The last section runs a package the way the property needs it (:func:`run_package`, under
:func:`bounded` time and memory) on fixed inputs (:func:`fixed_inputs`), including tiles whose
first convolution lands exactly on its thresholds (:func:`boundary_tiles`).
"""

from __future__ import annotations

import io
import json
import math
import os
import resource
import shutil
import signal
import tarfile
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

import fcnseg.host.package as package_format
from fcnseg.host.package import (
    HARDWARE_ARCHIVE,
    HARDWARE_GRAPH_NAME,
    JSON_NAME,
    NPZ_NAME,
    VERIFICATION_NAME,
    parse_dtype,
)
from tests.helpers import tamper

#: accelerator.json's manifest digest key (format version 2); absent from version-1 packages
MANIFEST_KEY = getattr(package_format, "MANIFEST_KEY", "manifest_sha256")
#: keys of accelerator.json that :func:`rehash` rewrites (JSON mutations leave them to it)
HASH_KEYS = ("files", MANIFEST_KEY)
INT64 = (-(2**63), 2**63 - 1)
UINT64_MAX = 2**64 - 1
#: Pool functions the format's simulator computes on integers (fcnseg.host.sim.layers.Pool)
POOL_FUNCTIONS = ("MaxPool", "AccPool", "QuantAvgPool")
#: layer kinds that compute one integer op of two operands, element by element
ELEMENTWISE = ("ElementwiseAdd", "ElementwiseSub", "ElementwiseMul", "ElementwiseMax", "AddStreams")
COMMUTATIVE = ("ElementwiseAdd", "ElementwiseMul", "ElementwiseMax", "AddStreams")


# --------------------------------------------------------------------------------------------
# Rewriting a package consistently
# --------------------------------------------------------------------------------------------


def read_meta(root: Path) -> Any:
    return json.loads((root / JSON_NAME).read_text())


def with_manifest(meta: Any) -> Any:
    """``meta`` with its manifest digest recomputed, if the format has one (else unchanged)."""
    digest = getattr(package_format, "manifest_digest", None)
    if digest is None or not isinstance(meta, dict):
        return meta
    body = {k: v for k, v in meta.items() if k != MANIFEST_KEY}
    return {**body, MANIFEST_KEY: digest(body)}


def write_meta(root: Path, meta: Any, *, manifest: bool = True) -> None:
    """Write accelerator.json (NaN/inf as JSON's extensions, as a hand edit would)."""
    data = with_manifest(meta) if manifest else meta
    (root / JSON_NAME).write_text(json.dumps(data, indent=1) + "\n")


def rehash(root: Path, *, listed: Sequence[str] = ()) -> None:
    """Record the current sha256 of every listed file that exists (plus the new ``listed``
    ones), then the manifest digest: what a hostile user does after editing a package
    (:func:`tests.helpers.tamper.rehash`)."""
    meta = read_meta(root)
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
        write_meta(root, meta)
        return
    for rel in listed:
        meta["files"].setdefault(rel, "")
    tamper.rehash(root, meta)


def read_arrays(root: Path) -> dict[str, np.ndarray]:
    with np.load(root / NPZ_NAME, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def write_arrays(root: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Rewrite accelerator.npz with ``arrays`` (object arrays pickled, as ``np.savez`` does)."""
    with open(root / NPZ_NAME, "wb") as f:
        np.savez(f, **arrays)


# --------------------------------------------------------------------------------------------
# The base package, and what makes an array legal
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    """A valid package to mutate (its folder is only ever copied, never written)."""

    path: Path
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    def __repr__(self) -> str:  # hypothesis prints it with every strategy: keep it short
        return f"Base({str(self.path)!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis's printer
        printer.text(repr(self))

    @classmethod
    def read(cls, path: Path) -> Base:
        return cls(Path(path), read_meta(path), read_arrays(path))

    def copy_to(self, dst: Path) -> Path:
        shutil.copytree(self.path, dst, symlinks=True)
        return dst

    def owners(self) -> dict[str, tuple[dict[str, Any], str]]:
        """npz key -> (its layer's JSON entry, the array's role)."""
        return {
            key: (entry, role)
            for entry in self.meta["layers"]
            for role, key in entry["arrays"].items()
        }

    def tensors(self) -> dict[str, tuple[int, tuple[int, ...] | None, str]]:
        """Tensor name -> (index of its producing layer, -1 for the input; declared shape, None
        where the layer declares none; dtype)."""
        spec = self.meta["io"]["input"]
        out = {spec["name"]: (-1, tuple(spec["shape"]), spec["dtype"])}
        for i, entry in enumerate(self.meta["layers"]):
            shapes = [tuple(s) for s in entry.get("output_shapes") or []]
            shapes += [None] * (len(entry["outputs"]) - len(shapes))
            for name, shape, dt in zip(
                entry["outputs"], shapes, entry["output_dtypes"], strict=True
            ):
                out[name] = (i, shape, dt)
        return out


def role_bounds(entry: Mapping[str, Any], role: str) -> tuple[int, int] | None:
    """The values an array of ``role`` may hold by the layer's declared types, or None when the
    layer declares no type for it (a version-2 package must: the loader refuses it).

    MVAU weights: ``weightDataType``. Thresholds are counted against the accumulator (MVAU,
    ``accDataType``, finn's default INT32 when unset) or the input (Thresholding; within its
    ``weightDataType`` too if declared), clipped by the writer to ``[lo, hi + 1]``: a threshold
    beyond that is never one a package can hold. Elementwise constants: ``lhs_dtype`` /
    ``rhs_dtype``.
    """
    attrs = entry.get("attributes", {})
    kind = entry.get("kind")

    def declared(name: str) -> tuple[int, int] | None:
        return parse_dtype(attrs[name]) if isinstance(attrs.get(name), str) else None

    if kind == "MVAU" and role == "weights":
        return declared("weightDataType")
    if kind == "MVAU" and role == "thresholds":
        lo, hi = declared("accDataType") or parse_dtype("INT32")
        return lo, hi + 1
    if kind == "Thresholding" and role == "thresholds":
        lo, hi = parse_dtype(entry["input_dtypes"][0])
        wt = declared("weightDataType")
        return (lo, hi + 1) if wt is None else (max(lo, wt[0]), min(hi + 1, wt[1]))
    if kind in ELEMENTWISE and role in ("lhs", "rhs"):
        return declared(f"{role}_dtype")
    return None


def _ints(a: np.ndarray) -> list:
    """Exact Python integers of an integer array (uint64 and int64 extremes included)."""
    return np.asarray(a).tolist()


def array_legal(entry: Mapping[str, Any], role: str, new: np.ndarray, old: np.ndarray) -> bool:
    """Whether ``new`` may replace the valid ``old`` as ``role`` of the layer ``entry``.

    Integer dtype; the same shape, or for thresholds one row per channel or one row shared by
    every channel (the format's two threshold shapes, channels = MH or NumChannels); values
    within :func:`role_bounds`; thresholds non-decreasing along each row.
    """
    if new.dtype.kind not in "iu":
        return False
    if role == "thresholds":
        attrs = entry.get("attributes", {})
        channels = attrs.get("MH" if entry.get("kind") == "MVAU" else "NumChannels")
        rows = {1, channels if isinstance(channels, int) else old.shape[0]}
        shape_ok = new.ndim == 2 and new.shape[0] in rows and new.shape[1] == old.shape[1]
    else:
        shape_ok = new.shape == old.shape
    if not shape_ok or new.size == 0:
        return False
    bounds = role_bounds(entry, role)
    if bounds is None:
        return False
    values = _ints(new.ravel())
    if min(values) < bounds[0] or max(values) > bounds[1]:
        return False
    if role == "thresholds":
        rows = _ints(new)
        return all(a <= b for row in rows for a, b in zip(row, row[1:], strict=False))
    return True


def same_values(new: np.ndarray, old: np.ndarray) -> bool:
    """``new`` means ``old`` (equal integers, a one-row ``new`` broadcast over ``old``'s rows)."""
    if new.dtype.kind not in "iu" or new.ndim != old.ndim:
        return False
    try:
        wide = np.broadcast_to(new, old.shape)
    except ValueError:
        return False
    return _ints(wide) == _ints(old)


# --------------------------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutation:
    """One edit of a package copy; ``apply(root)`` performs it (re-hashing where it says so)."""

    label: str
    apply: Callable[[Path], None] = field(repr=False)
    strict: bool = True
    #: the edit touches io.output scale/bias: logits and labels may differ, integer scores not
    rescales: bool = False

    def __repr__(self) -> str:
        return f"Mutation({self.label!r}, strict={self.strict})"


def _fits(values: list, dtype: np.dtype) -> bool:
    info = np.iinfo(dtype)
    return all(info.min <= v <= info.max for v in values)


def _store(values: np.ndarray | list, like: np.ndarray) -> np.ndarray:
    """Integers in ``like``'s dtype if they fit, else int64, else uint64 (negatives wrap there,
    as they would for a user writing ``astype(np.uint64)``)."""
    flat = _ints(np.asarray(values, dtype=object).ravel())
    shape = np.shape(values)
    for dt in (like.dtype, np.dtype(np.int64)):
        if _fits(flat, dt):
            return np.array(flat, dtype=dt).reshape(shape)
    wrapped = [v % 2**64 for v in flat]
    return np.array(wrapped, dtype=np.uint64).reshape(shape)


def array_edit(
    base: Base, key: str, new: np.ndarray | None, label: str, rehashed: bool = True
) -> Mutation:
    """A Mutation replacing (``new``) or removing (None) one npz member, classified by
    :func:`array_legal` (strict unless the new array is valid and means something else)."""
    entry, role = base.owners().get(key, (None, None))
    old = base.arrays[key]
    if new is None or entry is None:
        strict = True
    else:
        strict = not array_legal(entry, role, new, old) or same_values(new, old)

    def apply(root: Path) -> None:
        arrays = read_arrays(root)
        if new is None:
            del arrays[key]
        else:
            arrays[key] = new
        write_arrays(root, arrays)
        if rehashed:
            rehash(root)

    where = f"{NPZ_NAME}:{key}" + ("" if entry is None else f" ({entry['name']} {role})")
    return Mutation(f"{where}: {label}" + ("" if rehashed else ", hashes stale"), apply, strict)


def _value_targets(old: np.ndarray, flat_index: int, bounds: tuple[int, int] | None) -> list[int]:
    """Values for one element: the declared bounds and one beyond, its neighbours and negation,
    powers past float64's exact integers and int32, the int64 and uint64 extremes."""
    v = int(old.flat[flat_index])
    lo, hi = bounds if bounds is not None else (int(old.min()), int(old.max()))
    targets = [lo, hi, lo - 1, hi + 1, 0, -v, v + 1, v - 1, 2**45, -(2**45), 2**31]
    return [*targets, INT64[0], INT64[1], UINT64_MAX]


@st.composite
def array_mutations(draw: st.DrawFn, base: Base) -> Mutation:
    """Values (single elements to the declared bounds and one beyond, int64/uint64 extremes,
    all zeros, sign flips, reversed rows), dtypes, shapes, and npz members removed, renamed,
    added."""
    owners = base.owners()
    key = draw(st.sampled_from(sorted(owners)))
    entry, role = owners[key]
    old = base.arrays[key]
    kind = draw(st.sampled_from(["value", "fill", "dtype", "shape", "member"]))
    if kind == "value":
        i = draw(st.integers(0, old.size - 1))
        target = draw(st.sampled_from(_value_targets(old, i, role_bounds(entry, role))))
        values = np.asarray(old, dtype=object).copy()
        values.flat[i] = target
        idx = tuple(int(j) for j in np.unravel_index(i, old.shape))
        return array_edit(base, key, _store(values, old), f"element {idx} = {target}")
    if kind == "fill":
        how = draw(
            st.sampled_from(
                ["zeros", "negated", "reversed rows", "rolled rows", "max", "type min", "type max"]
            )
        )
        ints = np.asarray(old, dtype=object)
        lo, hi = role_bounds(entry, role) or (int(old.min()), int(old.max()))
        new = {
            "type min": lambda: ints * 0 + lo,
            "type max": lambda: ints * 0 + hi,
            "zeros": lambda: ints * 0,
            "negated": lambda: -ints,
            "reversed rows": lambda: ints[..., ::-1],
            "rolled rows": lambda: np.roll(ints, 1, axis=0),
            "max": lambda: ints * 0 + int(old.max()),
        }[how]()
        return array_edit(base, key, _store(new, old), how)
    if kind == "dtype":
        dt = draw(
            st.sampled_from(
                ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
                + ["float32", "float64", "bool", "complex64", "U4", "S4"]
            )
        )
        with np.errstate(all="ignore"):
            new = old.astype(dt)
        return array_edit(base, key, new, f"dtype {old.dtype} -> {dt}")
    if kind == "shape":
        how, new = draw(st.sampled_from(sorted(_reshaped(old).items())))
        return array_edit(base, key, new, f"shape {old.shape} -> {new.shape} ({how})")
    how = draw(
        st.sampled_from(["removed", "renamed", "stale", "extra", "extra pickled", "npy", "twice"])
    )
    if how == "npy":
        header = draw(st.sampled_from(sorted(NPY_HEADERS)))
        return npy_header_edit(base, key, header)
    if how == "removed":
        return array_edit(base, key, None, "member removed")
    if how == "stale":  # edited without updating the hashes: the sha256 check refuses it
        return array_edit(base, key, old * 0, "all zeros", rehashed=False)
    return _member_edit(key, how)


def _reshaped(old: np.ndarray) -> dict[str, np.ndarray]:
    """The shape mutations of a 2-D array (the format's arrays all are)."""
    a = np.asarray(old)
    out = {
        "0-d": np.array(a.flat[0], dtype=a.dtype),
        "1-d": a.ravel(),
        "3-d": a[None],
        "empty": a[:0],
    }
    if a.ndim == 2:
        out |= {
            "transposed": np.ascontiguousarray(a.T),
            "extra row": np.concatenate([a, a[-1:]]),
            "missing row": a[:-1],
            "extra step": np.concatenate([a, a[:, -1:]], axis=1),
            "missing step": a[:, :-1],
            "first row only": a[:1],
            "refactored": a.reshape(a.shape[1], a.shape[0]),
        }
    return out


#: .npy members written by hand: headers claiming what the data is not, or the same values
#: in another layout (Fortran order, big-endian: same numbers, so strict means equal scores)
NPY_HEADERS = ("huge shape", "object descr", "short data", "fortran order", "big-endian")


def npy_header_edit(base: Base, key: str, how: str) -> Mutation:
    """One npz member replaced by a hand-made .npy (:data:`NPY_HEADERS`), re-hashed."""
    old = np.asarray(base.arrays[key])
    if how in ("fortran order", "big-endian"):
        arr = (
            np.asfortranarray(old)
            if how == "fortran order"
            else old.astype(old.dtype.newbyteorder(">"))
        )
        raw = tamper.npy_bytes(arr)
    else:
        shape = {"huge shape": (2**40,), "short data": old.shape}.get(how, old.shape)
        descr = "|O" if how == "object descr" else np.lib.format.dtype_to_descr(old.dtype)
        header = {"descr": descr, "fortran_order": False, "shape": shape}
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, header)
        raw = buf.getvalue() + old.tobytes()[: 4 if how == "short data" else 64]

    def edit(root: Path) -> None:
        tamper.write_npz_member(root, key, raw)
        rehash(root)

    return Mutation(f"{NPZ_NAME}:{key}: .npy with {how}", edit, True)


def _member_edit(key: str, how: str) -> Mutation:
    """npz membership: ``key`` renamed or stored twice, an unreferenced or a pickled member
    added (all strict: refused, or ignored with the same scores)."""

    def apply(root: Path) -> None:
        arrays = read_arrays(root)
        if how == "twice":  # a second zip entry of the same name, other values: ambiguous
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # zipfile warns of the duplicate name
                with zipfile.ZipFile(root / NPZ_NAME, "a") as zf:
                    zf.writestr(f"{key}.npy", tamper.npy_bytes(arrays[key] * 0))
            rehash(root)
            return
        if how == "renamed":
            arrays[key + "x"] = arrays.pop(key)
        elif how == "extra":
            arrays["zzz_unreferenced"] = np.arange(6, dtype=np.int8).reshape(2, 3)
        else:  # an object array: np.savez pickles it; a pickle-free loader must refuse it
            arrays["zzz_pickled"] = np.array([{"a": 1}, None], dtype=object)
        write_arrays(root, arrays)
        rehash(root)

    return Mutation(f"{NPZ_NAME}:{key}: member {how}", apply, True)


# JSON ------------------------------------------------------------------------------------------

JsonPath = tuple  # a path into the JSON: keys and indices


def json_paths(data: Any, prefix: JsonPath = ()) -> Iterator[JsonPath]:
    """Every path of ``data`` (containers and leaves), hash keys excluded at the top."""
    if isinstance(data, dict):
        for k, v in data.items():
            if prefix or k not in HASH_KEYS:
                yield (*prefix, k)
                yield from json_paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield (*prefix, i)
            yield from json_paths(v, (*prefix, i))


def get_value(data: Any, path: JsonPath) -> Any:
    """The value at ``path`` of parsed JSON."""
    for k in path:
        data = data[k]
    return data


def strings_of(data: Any) -> list[str]:
    """Every string value of ``data`` (dtype names, kinds, tensor names...), sorted."""
    found: set[str] = set()

    def walk(d: Any) -> None:
        if isinstance(d, dict):
            for v in d.values():
                walk(v)
        elif isinstance(d, list):
            for v in d:
                walk(v)
        elif isinstance(d, str):
            found.add(d)

    walk(data)
    return sorted(found)


#: type-confusing replacements for any JSON value
CONFUSERS: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    1,
    -1,
    2,
    2**31,
    2**63,
    2**64,
    -(2**63) - 1,
    10**30,
    0.5,
    -0.0,
    1e308,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "x",
    "UINT8",
    "INT4",
    "INT64",
    "FLOAT32",
    "BIPOLAR",
    "a\nb",  # a newline: a message naming it must still be one line
    "\ud800",  # a lone surrogate (JSON allows it; UTF-8 encoders refuse it)
    "\x00",
    "\u202e",  # right-to-left override
    "x" * 5000,
    [],
    [0],
    [1, 1],
    {},
    {"x": 1},
)


def _near(value: Any) -> list[Any]:
    """Replacements close to ``value``: its neighbours, its sign flipped, its type changed."""
    if isinstance(value, bool):
        return [not value, int(value)]
    if isinstance(value, int):
        return [value + 1, value - 1, -value, 2 * value, float(value), value + 0.5, str(value)]
    if isinstance(value, float):
        return [value * 2, -value, value / 1e30, value * 1e300, int(value), str(value)]
    if isinstance(value, list) and value:
        return [value[:-1], [*value, value[-1]], value[::-1], value * 2, value[0]]
    return []


def json_edit(
    label: str, edit: Callable[[Any], Any], *, strict: bool = True, rescales: bool = False
) -> Mutation:
    """A Mutation applying ``edit`` to the parsed accelerator.json, then the manifest digest."""

    def apply(root: Path) -> None:
        write_meta(root, edit(read_meta(root)))

    return Mutation(f"{JSON_NAME}: {label}", apply, strict, rescales)


def set_value(path: JsonPath, value: Any) -> Callable[[Any], Any]:
    """An edit of parsed JSON setting the value at ``path`` (the root for ``()``)."""

    def edit(meta: Any) -> Any:
        if not path:
            return value
        get_value(meta, path[:-1])[path[-1]] = value
        return meta

    return edit


def _legal_value_change(base: Base, path: JsonPath, new: Any) -> bool:
    """A JSON value change that gives another valid package (not strict, see the module doc)."""
    old = get_value(base.meta, path)
    if new == old and type(new) is type(old):
        return False
    if path[0] != "layers" or len(path) < 3:
        return False
    entry = base.meta["layers"][path[1]]
    if path[2:] == ("kind",):
        return old in ELEMENTWISE and new in ELEMENTWISE
    if path[2:] == ("attributes", "Function"):
        return new in POOL_FUNCTIONS
    if path[2] == "inputs" and len(path) == 4:
        return _same_tensor_type(base, path[1], old, new, entry)
    return False


def _same_tensor_type(base: Base, layer: int, old: Any, new: Any, entry: Mapping) -> bool:
    """Wiring ``new`` where the layer read ``old``: valid if ``new`` is produced before the
    layer with the same declared shape and datatype (then the graph computes something else)."""
    tensors = base.tensors()
    if not isinstance(new, str) or new not in tensors:
        return False
    before = tensors[new][0] < layer
    return before and tensors[new][1:] == tensors[old][1:] and new not in entry["outputs"]


@st.composite
def json_mutations(draw: st.DrawFn, base: Base) -> Mutation:
    """A value replaced (type-confusing or nearby), a key removed or added, layers reordered,
    duplicated or removed, tensor names swapped, or an edit left un-hashed."""
    kind = draw(st.sampled_from(["replace"] * 3 + ["remove", "add", "layers", "tile"]))
    paths = sorted(json_paths(base.meta), key=repr)
    if kind == "layers":
        return draw(_layer_list_edit(base))
    if kind == "tile":
        return draw(_tile_edit())
    if kind == "add":
        dicts = [()] + [p for p in paths if isinstance(get_value(base.meta, p), dict)]
        path = draw(st.sampled_from(dicts))
        name = draw(st.sampled_from(["zz_unknown", "receptive_field", "net_stride", "tile"]))
        value = draw(st.sampled_from([1, 6, 32, -1, 0, 10**9, None, "x", [8, 8]]))
        target = get_value(base.meta, path)
        if name in target:
            name = "zz_unknown"
        return json_edit(
            f"{_show(path)} gains {name!r}: {value!r}", set_value((*path, name), value)
        )
    if kind == "remove":
        path = draw(_path_by_section([p for p in paths if isinstance(p[-1], str)]))

        def remove(meta: Any, path: JsonPath = path) -> Any:
            del get_value(meta, path[:-1])[path[-1]]
            return meta

        rescales = path[:2] == ("io", "output")
        return json_edit(f"{_show(path)} removed", remove, rescales=rescales)
    path = draw(_path_by_section(paths))
    old = get_value(base.meta, path)
    pool = [*_near(old), *CONFUSERS, *strings_of(base.meta)]
    new = draw(st.sampled_from(pool))
    if draw(st.booleans()) and path[:1] == ("layers",) and path[-1] in ("inputs", "outputs"):
        new = list(reversed(old)) if isinstance(old, list) else new  # a layer's tensors swapped
    strict = not _legal_value_change(base, path, new)
    if path[-1] == "inputs" and isinstance(new, list) and sorted(new) == sorted(old):
        entry = base.meta["layers"][path[1]]
        strict = entry["kind"] in COMMUTATIVE or new == old
    rescales = path[:2] == ("io", "output")
    label = f"{_show(path)} {old!r} -> {new!r}"
    if draw(st.integers(0, 9)) == 0:  # an edit without a new manifest digest
        return Mutation(f"{JSON_NAME}: {label}, manifest stale", _stale(set_value(path, new)), True)
    return json_edit(label, set_value(path, new), strict=strict, rescales=rescales)


def _path_by_section(paths: Sequence[JsonPath]) -> st.SearchStrategy[JsonPath]:
    """A path, its top-level section drawn first: the model card and io (a few dozen values
    that steer tiling and dequantization) are drawn as often as the layers (thousands)."""
    sections: dict[str, list[JsonPath]] = {}
    for p in paths:
        key = p[0] if p[0] in ("model_card", "io", "layers") else "other"
        sections.setdefault(key, []).append(p)
    return st.sampled_from(sorted(sections)).flatmap(lambda k: st.sampled_from(sections[k]))


@st.composite
def _tile_edit(draw: st.DrawFn) -> Mutation:
    side = st.sampled_from([0, 1, 250, 30016, 2**31, 32, 64, 96])
    return tile_edit(draw(side), draw(side))


def tile_edit(h: int, w: int) -> Mutation:
    """The tile changed consistently in the card and the input shape (the layers' declared
    shapes left at the old one): not a multiple of the stride, empty, or huge."""

    def edit(meta: Any) -> Any:
        meta["model_card"]["tile"] = [h, w]
        meta["io"]["input"]["shape"][1:3] = [h, w]
        return meta

    return json_edit(f"tile and input shape -> {h}x{w}", edit)


def _stale(edit: Callable[[Any], Any]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        write_meta(root, edit(read_meta(root)), manifest=False)

    return apply


def _show(path: JsonPath) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".") or "/"


@st.composite
def _layer_list_edit(draw: st.DrawFn, base: Base) -> Mutation:
    layers = base.meta["layers"]
    n = len(layers)
    how = draw(
        st.sampled_from(
            ["swap", "duplicate", "remove", "rename tensor", "rewire", "op", "fifo", "arrays"]
        )
    )
    i = draw(st.integers(0, n - 1))
    j = draw(st.integers(0, n - 1))
    if how == "fifo":  # a pass-through layer inserted after layer i: the same graph
        return _fifo_edit(base, i)
    if how == "arrays":  # two layers' arrays of one role exchanged
        pairs = sorted(
            (a, b)
            for a in base.owners()
            for b in base.owners()
            if a < b and base.owners()[a][1] == base.owners()[b][1]
        )
        if pairs:
            return _swap_arrays(base, *draw(st.sampled_from(pairs)))
        how = "swap"
    if how == "rewire":  # one input of a layer read from another tensor
        k = draw(st.integers(0, len(layers[i]["inputs"]) - 1))
        new = draw(st.sampled_from(sorted(base.tensors())))
        path = ("layers", i, "inputs", k)
        old = get_value(base.meta, path)
        label = f"{_show(path)} {old!r} -> {new!r}"
        return json_edit(
            label, set_value(path, new), strict=not _legal_value_change(base, path, new)
        )
    if how == "op":  # another elementwise op, or another pool function
        ops = [(p, ELEMENTWISE) for p in _paths_to(base, "kind", ELEMENTWISE)]
        ops += [(p, POOL_FUNCTIONS) for p in _paths_to(base, "Function", POOL_FUNCTIONS)]
        if ops:
            path, choices = draw(st.sampled_from(ops))
            new = draw(st.sampled_from(choices))
            label = f"{_show(path)} {get_value(base.meta, path)!r} -> {new!r}"
            strict = not _legal_value_change(base, path, new)
            return json_edit(label, set_value(path, new), strict=strict)
        how = "swap"
    if how == "rename tensor":  # one tensor renamed everywhere: the same graph
        tensors = sorted(base.tensors())
        name = draw(st.sampled_from(tensors))
        return json_edit(f"tensor {name!r} renamed everywhere", _rename_tensor(name, "t~" + name))

    def edit(meta: Any) -> Any:
        ls = meta["layers"]
        if how == "swap":
            ls[i], ls[j] = ls[j], ls[i]
        elif how == "duplicate":
            ls.insert(j, json.loads(json.dumps(ls[i])))
        else:
            del ls[i]
        return meta

    what = {"swap": f"layers {i} and {j} swapped", "duplicate": f"layer {i} copied to {j}"}
    return json_edit(what.get(how, f"layer {i} removed"), edit)


def _fifo_edit(base: Base, i: int) -> Mutation:
    """A StreamingFIFO (an identity in the format) inserted after layer ``i``, its consumers
    rewired to read the FIFO's output: the same computation."""
    entry = base.meta["layers"][i]
    t = entry["outputs"][0]

    def edit(meta: Any) -> Any:
        fifo = json.loads(json.dumps(entry))
        fifo.update(kind="StreamingFIFO", name=f"fifo_{i}", inputs=[t], outputs=[t + "~fifo"])
        fifo.update(attributes={"depth": 2}, folding={}, arrays={})
        fifo.update(
            input_dtypes=entry["output_dtypes"][:1], output_dtypes=entry["output_dtypes"][:1]
        )
        shapes = entry.get("output_shapes") or []
        fifo.update(input_shapes=shapes[:1], output_shapes=shapes[:1])
        for other in meta["layers"]:
            other["inputs"] = [t + "~fifo" if x == t else x for x in other["inputs"]]
        if meta["io"]["output"]["name"] == t:
            meta["io"]["output"]["name"] = t + "~fifo"
        meta["layers"].insert(i + 1, fifo)
        return meta

    return json_edit(f"a StreamingFIFO after {entry['name']!r}", edit)


def _swap_arrays(base: Base, a: str, b: str) -> Mutation:
    """Layers ``a`` and ``b``'s arrays of one role exchanged (by their npz keys in the JSON).
    Not strict when each array is valid for the other layer: a valid package, other weights."""
    owners = base.owners()
    (ea, role), (eb, _) = owners[a], owners[b]
    new_a, new_b = base.arrays[b], base.arrays[a]
    legal = array_legal(ea, role, new_a, base.arrays[a]) and array_legal(
        eb, role, new_b, base.arrays[b]
    )
    same = same_values(new_a, base.arrays[a]) and same_values(new_b, base.arrays[b])

    def edit(meta: Any) -> Any:
        for entry in meta["layers"]:
            if entry["name"] == ea["name"]:
                entry["arrays"][role] = b
            elif entry["name"] == eb["name"]:
                entry["arrays"][role] = a
        return meta

    label = f"{ea['name']} and {eb['name']} exchange their {role}"
    return json_edit(label, edit, strict=not legal or same)


def _paths_to(base: Base, key: str, values: Sequence[str]) -> list[JsonPath]:
    """Paths of the layers' ``kind`` / ``attributes.Function`` values that are in ``values``."""
    out = []
    for i, entry in enumerate(base.meta["layers"]):
        if key == "kind" and entry["kind"] in values:
            out.append(("layers", i, "kind"))
        if entry.get("attributes", {}).get(key) in values:
            out.append(("layers", i, "attributes", key))
    return out


def _rename_tensor(old: str, new: str) -> Callable[[Any], Any]:
    def edit(meta: Any) -> Any:
        for port in ("input", "output"):
            if meta["io"][port]["name"] == old:
                meta["io"][port]["name"] = new
        for entry in meta["layers"]:
            for side in ("inputs", "outputs"):
                entry[side] = [new if t == old else t for t in entry[side]]
        return meta

    return edit


# Files -----------------------------------------------------------------------------------------


def valid_verification(total: int = 1) -> dict[str, Any]:
    """A well-formed verification.json record (package.check_verification's schema)."""
    return {
        "format": package_format.VERIFICATION_FORMAT,
        "format_version": package_format.VERIFICATION_FORMAT_VERSION,
        "created_by": "fcnseg 0.1.0",
        "date": "2026-12-02T04:10:00Z",
        "level": "chained",
        "tiles": [{"label": "photo", "sha256": "0" * 64}],
        "result": "exact",
        "nodes": {"total": total, "exact": total, "mismatch": [], "not_verified": {}},
        "by_kind": {"MVAU": {"total": total, "exact": total, "mismatch": 0, "not_verified": 0}},
        "final_output_equal": True,
        "seconds_per_tile": 1.5,
        "libraries": {"finn-plus": "1.6.1"},
    }


def _file_edit(label: str, edit: Callable[[Path], None], *, rehashed: bool = True) -> Mutation:
    def apply(root: Path) -> None:
        edit(root)
        if rehashed:
            rehash(root)

    return Mutation(label + ("" if rehashed else ", hashes stale"), apply, True)


def _rewrite_archive(archive: Path, edit: Callable[[dict[str, bytes]], None]) -> None:
    """Rewrite a tar.xz with its members (name -> bytes) edited by ``edit``."""
    with tarfile.open(archive, "r:xz") as tar:
        members = {
            m.name: tar.extractfile(m).read()
            for m in tar.getmembers()
            if m.isfile()  # type: ignore[union-attr]
        }
    edit(members)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive.write_bytes(buf.getvalue())


def file_mutations(base: Base) -> st.SearchStrategy[Mutation]:
    """Truncations and byte flips (re-hashed or not), unlisted extra files, listed files
    missing, odd ``files`` entries, a damaged accelerator.json, a replaced npz, and damage to
    hardware.tar.xz and verification.json, which have their own checks."""
    damage = st.sampled_from(sorted(JSON_DAMAGE)).map(
        lambda what: Mutation(f"{JSON_NAME}: {what}", JSON_DAMAGE[what], True)
    )
    special = st.sampled_from(["symlink to /dev/zero", "folder", "symlink loop"]).map(
        lambda what: _file_edit(f"{NPZ_NAME} replaced by a {what}", _special(what), rehashed=False)
    )
    return st.one_of(
        _bytes_edit(base),
        _zip_edit(base),
        _extra_file(base),
        _files_entry(),
        st.just(_file_edit("files lists ghost.bin", _ghost)),
        damage,
        special,
        _verification_edit(base),
        _hardware_edit(base),
    )


@st.composite
def _bytes_edit(draw: st.DrawFn, base: Base) -> Mutation:
    """A listed file truncated, one byte flipped (re-hashed or not), or deleted."""
    rel = draw(st.sampled_from(sorted(base.meta["files"])))
    how = draw(st.sampled_from(["truncate", "flip", "delete"]))
    at = draw(st.integers(0, max((base.path / rel).stat().st_size - 1, 0)))
    rehashed = draw(st.booleans()) and how != "delete"

    def edit(root: Path) -> None:
        path = root / rel
        data = bytearray(path.read_bytes())
        if how == "truncate":
            path.write_bytes(bytes(data[:at]))
        elif how == "flip":
            data[at] ^= 0x5A
            path.write_bytes(bytes(data))
        else:
            path.unlink()

    return _file_edit(f"{rel}: {how} at byte {at}", edit, rehashed=rehashed)


@st.composite
def _extra_file(draw: st.DrawFn, base: Base) -> Mutation:
    """A file the package does not list (the optional files among them are refused)."""
    rel = draw(st.sampled_from(["notes.txt", "bitfile/x.bit", VERIFICATION_NAME, HARDWARE_ARCHIVE]))
    if (base.path / rel).exists():
        rel = "notes.txt"

    def extra(root: Path) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"\x00not listed\n")

    return _file_edit(f"unlisted {rel} added", extra)


#: odd ``files`` entries: names escaping the package, the json itself, digests of other types
FILES_ENTRIES: tuple[tuple[str, Any], ...] = (
    ("../escape", "0" * 64),
    ("/etc/hostname", "0" * 64),
    (JSON_NAME, "0" * 64),
    (NPZ_NAME, None),
    (NPZ_NAME, 7),
    (NPZ_NAME, ["x"]),
    ("sub/", "0" * 64),
)


@st.composite
def _files_entry(draw: st.DrawFn) -> Mutation:
    name, digest = draw(st.sampled_from(FILES_ENTRIES))

    def entry(root: Path) -> None:
        meta = read_meta(root)
        meta["files"][name] = digest
        write_meta(root, meta)

    return Mutation(f"files[{name!r}] = {digest!r}", entry, True)


#: fields of a zip central-directory entry (offset from its signature, size) and values that
#: make Python's zipfile raise NotImplementedError: strong encryption, an unknown compression
#: method, a version it cannot extract
ZIP_FIELDS: dict[str, tuple[int, int, int]] = {
    "flags: strong encryption": (8, 2, 0x41),
    "compression method 99": (10, 2, 99),
    "version needed 25.5": (6, 2, 255),
}


def zip_header_edit(field: str, member: int = 0) -> Mutation:
    """One central-directory field of accelerator.npz's ``member``-th entry set to a value
    zipfile cannot handle (:data:`ZIP_FIELDS`), re-hashed."""
    offset, size, value = ZIP_FIELDS[field]

    def edit(root: Path) -> None:
        path = root / NPZ_NAME
        data = bytearray(path.read_bytes())
        at = -1
        for _ in range(member + 1):
            at = data.index(b"PK\x01\x02", at + 1)
        data[at + offset : at + offset + size] = value.to_bytes(size, "little")
        path.write_bytes(bytes(data))
        rehash(root)

    return Mutation(f"{NPZ_NAME}: central directory entry {member} {field}", edit, True)


def _zip_edit(base: Base) -> st.SearchStrategy[Mutation]:
    members = st.integers(0, len(base.arrays) - 1)
    return st.builds(zip_header_edit, st.sampled_from(sorted(ZIP_FIELDS)), members)


def _ghost(root: Path) -> None:
    meta = read_meta(root)
    meta["files"]["ghost.bin"] = "0" * 64
    write_meta(root, meta)


def _special(what: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / NPZ_NAME
        path.unlink()
        if what == "folder":
            path.mkdir()
        elif what == "symlink loop":
            os.symlink(path.name, path)
        else:
            os.symlink("/dev/zero", path)

    return edit


def _json_damage(data: bytes) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / JSON_NAME
        path.write_bytes(data(path.read_bytes()) if callable(data) else data)

    return edit


JSON_DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": _json_damage(lambda b: b[: len(b) // 2]),
    "not UTF-8": _json_damage(lambda b: b"\xff\xfe" + b),
    "a JSON list": _json_damage(b"[1, 2]\n"),
    "empty": _json_damage(b""),
    "nested 100000 deep": _json_damage(b"[" * 100000 + b"]" * 100000),
    "an object 100000 deep": _json_damage(b'{"a":' * 100000 + b"1" + b"}" * 100000),
    "a 5000-digit number": _json_damage(lambda b: b.replace(b"[", b"[" + b"9" * 5000 + b",", 1)),
    "a NUL byte": _json_damage(lambda b: b.replace(b"{", b"{\x00", 1)),
}


@st.composite
def _verification_edit(draw: st.DrawFn, base: Base) -> Mutation:
    """A verification.json added and listed: well-formed, or with one value replaced."""
    record = valid_verification()
    paths = sorted(json_paths(record), key=repr)
    path = draw(st.sampled_from([(), *paths]))
    new = (
        record if not path else draw(st.sampled_from([*_near(get_value(record, path)), *CONFUSERS]))
    )
    data = set_value(path, new)(json.loads(json.dumps(record))) if path else record

    def edit(root: Path) -> None:
        (root / VERIFICATION_NAME).write_text(json.dumps(data))
        rehash(root, listed=[VERIFICATION_NAME])

    label = "well-formed" if not path else f"{_show(path)} -> {new!r}"
    return Mutation(f"{VERIFICATION_NAME} added: {label}", edit, True)


@st.composite
def _hardware_edit(draw: st.DrawFn, base: Base) -> Mutation:
    """hardware.tar.xz's graph.json removed, garbled or with one value replaced; members that
    escape the archive. A package without the archive gets a garbage one, listed."""
    if HARDWARE_ARCHIVE not in base.meta["files"]:

        def garbage(root: Path) -> None:
            (root / HARDWARE_ARCHIVE).write_bytes(b"\xfd7zXZ\x00garbage")
            rehash(root, listed=[HARDWARE_ARCHIVE])

        return Mutation(f"{HARDWARE_ARCHIVE}: garbage, listed", garbage, True)
    with tarfile.open(base.path / HARDWARE_ARCHIVE, "r:xz") as tar:
        graph = json.loads(tar.extractfile(HARDWARE_GRAPH_NAME).read())  # type: ignore[union-attr]
    how = draw(st.sampled_from(["removed", "garbled", "value", "value", "escape"]))
    if how == "value":
        path = draw(st.sampled_from(sorted(json_paths(graph), key=repr)))
        new = draw(st.sampled_from([*_near(get_value(graph, path)), *CONFUSERS, "../x", "/abs"]))
        content = json.dumps(set_value(path, new)(json.loads(json.dumps(graph)))).encode()
        label = f"{HARDWARE_GRAPH_NAME} {_show(path)} -> {new!r}"
    else:
        content = b"{not json" if how == "garbled" else json.dumps(graph).encode()
        label = f"{HARDWARE_GRAPH_NAME} {how}"

    def members(m: dict[str, bytes]) -> None:
        if how == "removed":
            del m[HARDWARE_GRAPH_NAME]
        else:
            m[HARDWARE_GRAPH_NAME] = content
        if how == "escape":
            m["../escaped.txt"] = b"outside"

    def edit(root: Path) -> None:
        _rewrite_archive(root / HARDWARE_ARCHIVE, members)
        rehash(root)

    return Mutation(f"{HARDWARE_ARCHIVE}: {label}", edit, True)


#: layer kinds whose output has their input's datatype (retyping follows them downstream)
PASS_THROUGH = (
    "ConvolutionInputGenerator",
    "FMPadding",
    "DuplicateStreams",
    "UpsampleNearestNeighbour",
    "StreamingFIFO",
    "StreamingDataWidthConverter",
)


@st.composite
def retyped(draw: st.DrawFn, base: Base) -> Mutation:
    """:func:`retype` of a thresholded MVAU to 1 to 16 bits."""
    candidates = [
        i
        for i, e in enumerate(base.meta["layers"])
        if e["kind"] == "MVAU" and "thresholds" in e["arrays"]
    ]
    i = draw(st.sampled_from(candidates))
    bits = draw(st.sampled_from([1, 2, 3, 8, 12, 16]))
    return retype(base, i, bits, draw(st.integers(0, 2**16)))


def retype(base: Base, i: int, bits: int, seed: int = 0) -> Mutation:
    """A consistent edit no single-value mutation reaches: the thresholded MVAU ``i``'s output
    type changed to ``UINT{bits}`` with ``2^bits - 1`` new sorted thresholds per channel
    (between its old extremes, so inside the range they were valid in), and the new type
    carried downstream through the pass-through layers to the next computing layer's input.
    A valid package of another meaning (not strict) unless a range rule refuses it; with up to
    65535 steps per channel it also bounds the time and memory the loader and the simulator
    take over large threshold tables."""
    entry = base.meta["layers"][i]
    key = entry["arrays"]["thresholds"]
    old = base.arrays[key]
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(old.min(), old.max() + 1, size=(old.shape[0], 2**bits - 1)), axis=1)
    dtype = f"UINT{bits}"

    def edit(root: Path) -> None:
        meta = read_meta(root)
        layers = meta["layers"]
        layers[i]["output_dtypes"] = [dtype]
        layers[i]["attributes"]["ActVal"] = 0
        changed = set(layers[i]["outputs"])
        for later in layers[i + 1 :]:
            hits = [k for k, name in enumerate(later["inputs"]) if name in changed]
            for k in hits:
                later["input_dtypes"][k] = dtype
            if hits and later["kind"] in PASS_THROUGH + ("Pool",):
                later["output_dtypes"] = [dtype] * len(later["outputs"])
                changed.update(later["outputs"])
        write_meta(root, meta)
        arrays = read_arrays(root)
        arrays[key] = t
        write_arrays(root, arrays)
        rehash(root)

    label = f"{entry['name']} retyped to {dtype} with {2**bits - 1} new thresholds per channel"
    return Mutation(label, edit, strict=False)


def package_mutations(base: Base) -> st.SearchStrategy[Mutation]:
    """Any mutation of ``base``: arrays, JSON values and files (2 in 7 draws each), and the
    consistent retyping (1 in 7: one edit with few variants)."""
    single = [array_mutations(base), json_mutations(base), file_mutations(base)]
    return st.one_of(*single, *single, retyped(base))


# --------------------------------------------------------------------------------------------
# Running a package: the fixed inputs, and the outcome the property compares
# --------------------------------------------------------------------------------------------


class Hang(Exception):
    """An example ran past its time bound (raised by :func:`bounded`)."""


@contextmanager
def bounded(seconds: float, memory: int = 1536 << 20) -> Iterator[None]:
    """Run the body under a wall-clock bound (SIGALRM raises :class:`Hang`) and an address-space
    cap of ``memory`` bytes over what the process maps now, so an edit that makes the loader
    allocate gigabytes fails fast as a MemoryError instead of swapping the machine."""
    old_handler = signal.signal(signal.SIGALRM, _on_alarm)
    old_limit = resource.getrlimit(resource.RLIMIT_AS)
    cap = _mapped_bytes() + memory
    if old_limit[0] == resource.RLIM_INFINITY or cap < old_limit[0]:
        resource.setrlimit(resource.RLIMIT_AS, (cap, old_limit[1]))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        resource.setrlimit(resource.RLIMIT_AS, old_limit)


def _on_alarm(signum: int, frame: Any) -> None:
    raise Hang("the example ran past its time bound")


def _mapped_bytes() -> int:
    """The process's current virtual size (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


@dataclass(frozen=True)
class Outcome:
    """What loading and running a package gave: a refusal (its message) or integer scores."""

    refusal: str | None
    scores: tuple[np.ndarray, ...] = ()
    labels: np.ndarray | None = None


def run_package(root: Path, tiles: np.ndarray, image: np.ndarray) -> Outcome:
    """Load ``root`` (:func:`load_package`), open the simulator (the refusals the engine makes
    at construction count as refusals: nothing has been computed yet), run ``tiles`` through
    the engine and ``image`` through the Segmenter (stitched integer scores, and the labels).

    Any exception but a :class:`~fcnseg.errors.UserError` at load propagates: the property
    allows none. A UserError after load is not a refusal either (work was done): it propagates.
    """
    from fcnseg.errors import UserError
    from fcnseg.host.package import load_package
    from fcnseg.host.segmenter import Segmenter

    try:
        seg = Segmenter.load(load_package(root), batch=2)
    except UserError as error:
        return Outcome(str(error))
    engine_scores = seg.engine.run(tiles)
    result = seg.segment(image)
    return Outcome(None, (np.asarray(engine_scores), result.scores), result.labels)


def boundary_tiles(base: Base, count: int = 4) -> np.ndarray:
    """Tiles whose first thresholded convolution lands exactly on its thresholds (and one
    below) at as many positions as fit: the inputs where a one-off threshold shows.

    The package must start with FMPadding -> ConvolutionInputGenerator -> MVAU (both bases
    do); each solved 3x3x3 patch (row order kh, kw, c as the sliding window emits it) is
    written where that output pixel reads it, on a grid of kernel-sized cells."""
    from tests.helpers.boundary import solve_dots

    pad, swg, mvau = base.meta["layers"][:3]
    assert (pad["kind"], swg["kind"], mvau["kind"]) == (
        "FMPadding",
        "ConvolutionInputGenerator",
        "MVAU",
    ), "boundary tiles need a package starting pad -> window -> MVAU"
    p = int(pad["attributes"]["Padding"][0])
    k = int(swg["attributes"]["ConvKernelDim"][0])
    w = base.arrays[mvau["arrays"]["weights"]].astype(np.int64)
    t = base.arrays[mvau["arrays"]["thresholds"]].astype(np.int64)
    patches = []
    for c in range(w.shape[1]):
        row = t[min(c, t.shape[0] - 1)]
        targets = np.unique(np.concatenate([row, row - 1]))
        patches += [x for x in solve_dots(w[:, c], targets, 0, 255) if x is not None]
    _, h, wd, ch = base.meta["io"]["input"]["shape"]
    cells = [(y, x) for y in range(p, h - k + p + 1, k) for x in range(p, wd - k + p + 1, k)]
    out = np.random.default_rng(5).integers(0, 256, size=(count, h, wd, ch), dtype=np.uint8)
    for n, (i, (y, x)) in enumerate((i, cell) for i in range(count) for cell in cells):
        if n >= len(patches):
            break
        out[i, y - p : y - p + k, x - p : x - p + k] = patches[n].reshape(k, k, ch)
    return out


def fixed_inputs(base: Base) -> tuple[np.ndarray, np.ndarray]:
    """The tiles (zeros, all 255, boundary tiles) and the image (larger than a tile, not a
    multiple of it: tiling and stitching run) every mutation of ``base`` is scored on."""
    _, h, w, c = base.meta["io"]["input"]["shape"]
    flat = np.stack([np.zeros((h, w, c), np.uint8), np.full((h, w, c), 255, np.uint8)])
    tiles = np.concatenate([flat, boundary_tiles(base)])
    image = np.random.default_rng(9).integers(0, 256, size=(h + h // 2 + 3, w + 5, c))
    return tiles, image.astype(np.uint8)
