"""The deployment package: the one contract between ``fcnseg.hw`` (writer) and ``fcnseg.host``.

A package is a folder::

    accelerator.json   what the host needs to know (schema below), incl. the sha256 of every file
    accelerator.npz    the integer arrays of the HW layers (weights, thresholds, constants);
                       numeric arrays only, loadable with ``np.load(allow_pickle=False)``
    hw_graph.onnx      the finn-plus HW-layer graph (before SpecializeLayers), reference only
    bitfile/...        optional (Vivado builds): the bitstream and its .hwh
    driver/settings.json  optional: the finn-plus-driver settings
    hardware.tar.xz    optional: the generated hardware (``hardware/graph.json`` + one folder
                       per node with ``node.json`` and its HLS C++ / RTL sources), for
                       inspection (``tar -xJf``) and for running it (``fcnseg.hw.verify``);
                       one archive because the node folders repeat library files
                       (:mod:`fcnseg.host.hardware`)
    verification.json  optional: how the generated hardware was verified against the simulator
                       (schema: :func:`check_verification`); added by :func:`add_package_files`

This module is numpy-only (json, hashlib, numpy) so it loads on a PYNQ image (Python 3.10,
numpy 1.x). It is the ONLY place the format is defined; ``fcnseg.hw.to_package`` fills it in.

accelerator.json (``FORMAT_VERSION`` 2)::

    format          "fcnseg-accelerator"
    format_version  2                  a loader refuses any other version (newer: upgrade fcnseg;
                                       1: upgrade the package, ``fcnseg upgrade``)
    model_card      the export's model.json without output_scale/output_bias (those are in
                     io.output): {classes [str], output_stride, tile [H, W], receptive_field,
                     palette [[r,g,b]], arch, model_config, ...}; keys, types and the rules for
                     missing ones are :class:`fcnseg.host.card.ModelCard`'s (parsed once, at
                     load: :attr:`Package.card`); ``classes`` has one name per output channel
                     and ``tile`` equals the input shape (the writer fills it in if absent)
    io
      input         {name, dtype "UINT8", shape [1,H,W,3], layout "NHWC"}
      output        {name, dtype "INT16", shape [1,H/s,W/s,C], layout "NHWC",
                     scale [C floats], bias [C floats]}   logits = scores * scale + bias
    layers          ordered (topological) list of HW layers, each
                    {kind        finn op type, e.g. "MVAU" (see LAYER_KINDS)
                     name        node name in hw_graph.onnx (folding files are keyed by it)
                     inputs, outputs        tensor names (the dataflow graph; io names above)
                     attributes  {size-free attributes the simulator needs, JSON scalars/lists,
                                  and the layer's declared datatypes (finn's names; required):
                                  MVAU weightDataType, accDataType; Thresholding
                                  weightDataType (its thresholds' type); Elementwise*
                                  lhs_dtype, rhs_dtype, out_dtype}
                     input_dtypes, output_dtypes   canonical qonnx names ("UINT4", "INT16")
                     input_shapes, output_shapes   at the tile size, NHWC
                     folding     {"PE": int, "SIMD": int, ...}
                     arrays      {role: key in accelerator.npz}, e.g. {"weights": "l3.weights"}}
                    array roles: MVAU "weights" (MW, MH) and, with an activation,
                    "thresholds" (MH or 1, steps); Thresholding "thresholds" (C or 1, steps);
                    Elementwise* "lhs"/"rhs" constants. Thresholds are integers: ``ceil`` of
                    finn's float thresholds (same counts for integer inputs), clipped to the
                    input's ``[lo, hi + 1]``, sorted (non-decreasing) per row by the writer — a
                    loader refuses unsorted rows; an output is ``#{t : x >= t} + ActVal``
                    (BIPOLAR: 2c - 1), ``2^bits - 1`` thresholds per row.
    estimates       free-form dict from the finn-plus estimate reports (may be {})
    board           board name ("pynq-z2", "zcu104", "kv260") or null
    files           {relative path: sha256 hex} for every file of the package but this json
    manifest_sha256 sha256 hex of this json without this key, in canonical form
                    (:func:`manifest_digest`); ``files`` is inside, so this one digest covers
                    every file of the package: it is the package's identity (``fcnseg info``)
    created_by      "fcnseg <version>"
    upgraded_from   optional, only in an upgraded package: {format_version, created_by,
                    accelerator_json_sha256} of the package it was upgraded from
    runtime_weights optional (``fcnseg compile --runtime-weights``; docs/runtime_weights.md):
                    {partitions int (finn's StreamingDataflowPartitions, idma0 and odma0 too),
                     zynq "zynq"|"zynq_us+", axi_base int (first AXI-lite peripheral address),
                     fingerprint {...} what the bitfile fixes (fcnseg.hw.runtime_weights),
                     fingerprint_sha256  sha256 hex of :func:`canonical_json` of it,
                     layers [{index, layer (a package layer's name), node (its specialised
                              node), kind "MVAU"|"Thresholding", impl, partition (n of its
                              StreamingDataflowPartition_n: finn's Floorplan makes one writable
                              layer each; the k-th of a hand-made partition follows the one
                              before it), instance "StreamingDataflowPartition_<n>", interface
                              "s_axilite_<k>", file "runtime_weights/<n>_<k>_<node>.dat"
                              (finn's name; listed in files), word_bits 32, words,
                              words_per_line, lines,
                              line_bits, lane_bits, address_bits, range_bytes,
                              predicted_offset, dtype, shape, folding, order,
                              narrow_weights bool|null}]}
                    checked on load (:func:`check_runtime_weights`; the files' word counts
                    in :mod:`fcnseg.host.validation`)

Shapes baked at the tile size (``input_shapes``, ``IFMDim`` ...) describe the tile: the
simulator re-derives every spatial size from the actual input, so a package runs on any multiple
of the net's stride (:attr:`Package.net_stride`, derived from the layers: 32 for five 2x2 pools).

Validation on load: after the structural checks and the hashes, :func:`load_package` checks that
the package means what it declares (:mod:`fcnseg.host.validation`): every shape recomputed from
the tile, every array within its declared datatype and role shape, thresholds as above, every
tensor's proven integer range within its dtype (no wrapping in the hardware), the receptive
field recomputed from the layers equal to the card's, and every claimed size bounded before it
is allocated. Each violation is one line naming the package, the file, the layer and the rule.

Every optional file is listed in ``files`` like the others (hashed); a ``verification.json`` or
``hardware.tar.xz`` that is present but not listed is refused, since nothing vouches for it.

Versioning: any change an older reader would misread (a new required field, a new meaning)
bumps ``FORMAT_VERSION``; readers refuse versions they do not know. New optional keys and new
layer kinds (which old readers refuse by kind) do not need a bump.

Version 2 (issue 16) over version 1: ``manifest_sha256`` (in version 1 nothing covered
accelerator.json itself: an edited one loaded), the declared datatypes above are required, and
thresholds are stored sorted. A version-1 package is refused with the command that upgrades it,
``fcnseg upgrade PACKAGE`` (:mod:`fcnseg.hw.upgrade`): it reads the declared types from the
package's own hw_graph.onnx and keeps every other file (bitfile, driver, generated hardware,
verification), so hours of Vivado and verification need not be redone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcnseg.atomic import replace_dir
from fcnseg.errors import UserError
from fcnseg.host.card import ModelCard
from fcnseg.host.dtypes import dtype_bits, is_integer_dtype, parse_dtype  # noqa: F401

if TYPE_CHECKING:
    from fcnseg.host.tiling import Geometry

FORMAT_NAME = "fcnseg-accelerator"
FORMAT_VERSION = 2
#: older versions ``fcnseg upgrade`` turns into this one (:func:`read_for_upgrade`)
UPGRADABLE_VERSIONS = (1,)
#: the key of accelerator.json holding :func:`manifest_digest` of the rest
MANIFEST_KEY = "manifest_sha256"
JSON_NAME = "accelerator.json"
NPZ_NAME = "accelerator.npz"
HW_GRAPH_NAME = "hw_graph.onnx"
VERIFICATION_NAME = "verification.json"
VERIFICATION_FORMAT = "fcnseg-verification"
VERIFICATION_FORMAT_VERSION = 1
HARDWARE_DIR = "hardware"
HARDWARE_ARCHIVE = "hardware.tar.xz"
#: the hardware folder's description (a member of the archive); format name and version as
#: ``fcnseg.hw.verify.chain`` writes them (keep in sync: this module must not import hw/)
HARDWARE_GRAPH_NAME = f"{HARDWARE_DIR}/graph.json"
HARDWARE_FORMAT = "fcnseg-hardware"
HARDWARE_FORMAT_VERSION = 1
#: the optional runtime-writable-weights record of accelerator.json and its files' folder
RUNTIME_WEIGHTS_KEY = "runtime_weights"
RUNTIME_WEIGHTS_DIR = "runtime_weights"

#: HW layer kinds a version-1 package may hold (finn-plus op types) and the arrays each needs.
LAYER_KINDS: dict[str, tuple[str, ...]] = {
    "MVAU": ("weights",),  # + optional "thresholds"
    "ConvolutionInputGenerator": (),
    "FMPadding": (),
    "Pool": (),
    "Thresholding": ("thresholds",),
    "DuplicateStreams": (),
    "ElementwiseAdd": (),  # + optional "lhs"/"rhs" constants
    "ElementwiseSub": (),
    "ElementwiseMul": (),
    "ElementwiseMax": (),
    "AddStreams": (),
    "UpsampleNearestNeighbour": (),
    "StreamingDataWidthConverter": (),
    "StreamingFIFO": (),
}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest_digest(meta: Mapping[str, Any]) -> str:
    """The sha256 hex of ``meta`` (a parsed accelerator.json) without its ``manifest_sha256``.

    Hashed in canonical form: ``json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=False, allow_nan=True)``, UTF-8. Parsing a written json and dumping it again
    gives the same text (Python writes floats in their shortest round-trip form), so the digest
    depends on the json's content, not on its layout. Lone surrogates (``"\\ud800"`` parses to
    one) are encoded as themselves (``surrogatepass``) rather than raising.
    """
    body = {k: v for k, v in meta.items() if k != MANIFEST_KEY}
    text = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def canonical_json(obj: Any) -> str:
    """``obj`` as canonical JSON text (sorted keys, no spaces): what digests are taken of."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _with_manifest(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``meta`` as a reader will parse it back, with its ``manifest_sha256`` set.

    It goes through its JSON text first, so what is hashed is exactly what a loader reads
    (tuples become lists, and so on)."""
    body = json.loads(json.dumps({k: v for k, v in meta.items() if k != MANIFEST_KEY}))
    return {**body, MANIFEST_KEY: manifest_digest(body)}


def _write_meta(folder: Path, meta: Mapping[str, Any]) -> None:
    """Write ``meta`` with its manifest digest as ``folder``/accelerator.json."""
    (folder / JSON_NAME).write_text(json.dumps(_with_manifest(meta), indent=1) + "\n")


@dataclass(frozen=True)
class Layer:
    """One HW layer of a package (see the module docstring for the fields)."""

    kind: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: dict[str, Any]
    input_dtypes: tuple[str, ...]
    output_dtypes: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...] = ()
    output_shapes: tuple[tuple[int, ...], ...] = ()
    folding: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def to_json(self, array_keys: Mapping[str, str]) -> dict[str, Any]:
        """The layer's JSON entry, with ``arrays`` mapped to their npz keys."""
        return {
            "kind": self.kind,
            "name": self.name,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "attributes": _jsonable(self.attributes),
            "input_dtypes": list(self.input_dtypes),
            "output_dtypes": list(self.output_dtypes),
            "input_shapes": [list(map(int, s)) for s in self.input_shapes],
            "output_shapes": [list(map(int, s)) for s in self.output_shapes],
            "folding": _jsonable(dict(self.folding)),
            "arrays": dict(array_keys),
        }


@dataclass(frozen=True)
class Package:
    """A loaded, verified deployment package."""

    path: Path
    meta: dict[str, Any]
    layers: tuple[Layer, ...]
    card: ModelCard  #: the model card, parsed and validated once by :func:`load_package`
    #: the parsed, checked ``verification.json`` (:func:`check_verification`), or None
    verification: dict[str, Any] | None = field(default=None, repr=False)
    #: the parsed, checked ``hardware/graph.json`` (:func:`check_hardware`), or None
    hardware: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def model_card(self) -> dict[str, Any]:
        """The model card as stored (JSON); :attr:`card` is the typed, validated view."""
        return self.meta["model_card"]

    @property
    def input(self) -> dict[str, Any]:
        return self.meta["io"]["input"]

    @property
    def output(self) -> dict[str, Any]:
        return self.meta["io"]["output"]

    @property
    def output_scale(self) -> np.ndarray:
        """Per-class float scale: ``logits = scores * output_scale + output_bias``."""
        return np.asarray(self.output["scale"], dtype=np.float64)

    @property
    def output_bias(self) -> np.ndarray:
        return np.asarray(self.output["bias"], dtype=np.float64)

    @property
    def num_classes(self) -> int:
        return int(self.output["shape"][-1])

    @property
    def output_stride(self) -> int:
        return self.card.output_stride

    @property
    def tile(self) -> tuple[int, int]:
        h, w = self.input["shape"][1:3]
        return int(h), int(w)

    @property
    def board(self) -> str | None:
        return self.meta.get("board")

    @property
    def estimates(self) -> dict[str, Any]:
        return self.meta.get("estimates", {})

    @property
    def net_stride(self) -> int:
        """The input multiple the layers need: the largest downsampling factor inside the graph
        (32 for a net with five 2x2 pools, also for FCN-8s whose output stride is 8)."""
        return layer_strides(self.layers, self.input["name"], self.output["name"])[0]

    @property
    def geometry(self) -> Geometry:
        """The tiling geometry: the card's (:meth:`ModelCard.geometry`) with the layers' net
        stride, which is what the simulator and the fabric actually need."""
        return self.card.geometry(net_stride=self.net_stride)

    def file(self, relpath: str) -> Path:
        """Absolute path of one of the package's (verified) files."""
        return self.path / relpath


def _layer_scale(layer: Layer) -> Fraction:
    """Input pixels per output pixel of one layer (vertical; the nets are square-strided)."""
    a = layer.attributes
    if layer.kind == "ConvolutionInputGenerator":
        return Fraction(int(a.get("Stride", [1, 1])[0]))
    if layer.kind == "UpsampleNearestNeighbour":
        return Fraction(int(a["HI"]), int(a["HO"]))
    return Fraction(1)


def layer_strides(layers: Sequence[Layer], input_name: str, output_name: str) -> tuple[int, int]:
    """``(net_stride, output_stride)`` of a layer list: the largest cumulative downsampling factor
    of any tensor (input sizes must be multiples of it) and that of the output tensor."""
    scale = {input_name: Fraction(1)}
    worst = Fraction(1)
    for layer in layers:
        s = max(scale[t] for t in layer.inputs) * _layer_scale(layer)
        for t in layer.outputs:
            scale[t] = s
        worst = max(worst, s)
    out = scale[output_name]
    if out.denominator != 1 or worst.denominator != 1:
        raise UserError(f"package layers give a non-integer stride ({worst}, {out})")
    return int(worst), int(out)


def _jsonable(obj: Any) -> Any:
    """Numpy scalars/arrays and tuples -> plain JSON types."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, bytes):
        return obj.decode()
    if isinstance(obj, (os.PathLike, set, frozenset)):
        return str(obj) if isinstance(obj, os.PathLike) else sorted(_jsonable(v) for v in obj)
    return obj


def write_package(
    out_dir: str | os.PathLike,
    *,
    model_card: ModelCard | Mapping[str, Any],
    io: Mapping[str, Any],
    layers: list[Layer],
    estimates: Mapping[str, Any] | None = None,
    board: str | None = None,
    hw_graph: bytes | None = None,
    extra_files: Mapping[str, str | os.PathLike] | None = None,
    overwrite: bool = True,
    upgraded_from: Mapping[str, Any] | None = None,
    runtime_weights: Mapping[str, Any] | None = None,
) -> Path:
    """Write a package folder atomically and return its path.

    Everything is written to a temporary sibling folder, hashed, then renamed into place, so a
    crash never leaves a half-written package behind. ``hw_graph`` is the serialized ONNX of the
    HW graph; ``extra_files`` maps package-relative paths (``bitfile/top.bit``,
    ``driver/settings.json``) to files to copy in. Integer arrays keep their dtype in the npz.
    ``model_card`` (a :class:`ModelCard` or its JSON) gets the tile of ``io`` if it has none.
    ``upgraded_from``: what ``fcnseg upgrade`` records of the package it upgraded. The json
    gets its ``manifest_sha256`` last (:func:`manifest_digest`). ``runtime_weights``: the
    record of a runtime-writable build (its ``.dat`` files among ``extra_files``).
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        arrays, entries = _layer_entries(layers)
        np.savez(tmp / NPZ_NAME, **arrays)
        if hw_graph is not None:
            (tmp / HW_GRAPH_NAME).write_bytes(hw_graph)
        _copy_extra_files(tmp, extra_files or {})
        files = {
            p.relative_to(tmp).as_posix(): sha256_file(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        from fcnseg import __version__

        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "created_by": f"fcnseg {__version__}",
            "model_card": _card_json(model_card, io),
            "io": _jsonable(dict(io)),
            "layers": entries,
            "estimates": _jsonable(dict(estimates or {})),
            "board": board,
            "files": files,
        }
        if upgraded_from is not None:
            meta["upgraded_from"] = _jsonable(dict(upgraded_from))
        if runtime_weights is not None:
            meta[RUNTIME_WEIGHTS_KEY] = _jsonable(dict(runtime_weights))
        _check_meta(meta, where=str(out))
        _write_meta(tmp, meta)
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _layer_entries(layers: list[Layer]) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """The npz arrays (integer only, keyed ``NNN_name.role``) and JSON entries of ``layers``."""
    arrays: dict[str, np.ndarray] = {}
    entries = []
    for i, layer in enumerate(layers):
        if layer.kind not in LAYER_KINDS:
            raise UserError(f"layer {layer.name}: unknown kind {layer.kind!r}")
        keys = {}
        for role, arr in layer.arrays.items():
            arr = np.asarray(arr)
            if arr.dtype.kind not in "iu":
                raise UserError(f"layer {layer.name}: array {role} is {arr.dtype}, not integer")
            key = f"{i:03d}_{_safe(layer.name)}.{role}"
            arrays[key] = arr
            keys[role] = key
        entries.append(layer.to_json(keys))
    return arrays, entries


def _copy_extra_files(folder: Path, extra_files: Mapping[str, str | os.PathLike]) -> None:
    """Copy package-relative ``extra_files`` (bitfile, driver settings) into ``folder``."""
    for rel, src in extra_files.items():
        _check_file_name(rel, "extra file")
        dst = folder / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def _check_file_name(rel: str, what: str) -> None:
    """A name a caller may add to a package: relative, inside it, not the json or the npz."""
    path = Path(rel)
    if (
        not rel
        or ".." in path.parts
        or path.is_absolute()
        or path.as_posix()
        in (
            JSON_NAME,
            NPZ_NAME,
        )
    ):
        raise UserError(f"{what} {rel!r} must be a new relative path in the package")


def _card_json(card: ModelCard | Mapping[str, Any], io: Mapping[str, Any]) -> dict[str, Any]:
    """The card as the package stores it: its JSON, with the tile of the input if absent."""
    data = card.to_json() if isinstance(card, ModelCard) else _jsonable(dict(card))
    shape = (io.get("input") or {}).get("shape")
    if "tile" not in data and isinstance(shape, list | tuple) and len(shape) == 4:
        data = {**data, "tile": _jsonable(list(shape[1:3]))}
    return data


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _check_meta(meta: Mapping[str, Any], where: str) -> ModelCard:
    """Structural checks shared by writer and loader; raise a one-line UserError.

    Returns the parsed model card (the only place a package's card is parsed)."""
    try:
        _check_version(meta, where)
        for key in ("model_card", "io", "layers", "files"):
            if key not in meta:
                raise UserError(f"{where}: {JSON_NAME} lacks {key!r}")
        card = ModelCard.from_json(meta["model_card"], where=where)
        _check_io(meta["io"], card, where)
        _check_layers(meta["layers"], meta["io"], where)
        if RUNTIME_WEIGHTS_KEY in meta:
            check_runtime_weights(meta, where)
        return card
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{where}: malformed {JSON_NAME} ({type(e).__name__}: {e})") from None


def _check_version(meta: Mapping[str, Any], where: str) -> None:
    """The format name, and a version this module reads (versioning: module docstring)."""
    if meta.get("format") != FORMAT_NAME:
        raise UserError(f"{where}: not an fcnseg deployment package ({JSON_NAME} format)")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise UserError(f"{where}: {JSON_NAME} has no integer format_version")
    if version > FORMAT_VERSION:
        raise UserError(
            f"{where}: package format version {version} is newer than this fcnseg "
            f"supports ({FORMAT_VERSION}); upgrade fcnseg"
        )
    if version in UPGRADABLE_VERSIONS:
        raise UserError(
            f"{where}: package format version {version} is older than this fcnseg reads "
            f"({FORMAT_VERSION}); upgrade it with `fcnseg upgrade {where}` (keeps its bitfile, "
            "hardware and verification; needs fcnseg[compile]) or rebuild it"
        )
    if version != FORMAT_VERSION:
        raise UserError(
            f"{where}: package format version {version} is not supported "
            f"(this fcnseg reads {FORMAT_VERSION}); rebuild the package"
        )


def _check_manifest(meta: Mapping[str, Any], where: str) -> None:
    """The format and version are this module's and ``manifest_sha256`` is the digest of the
    rest (:func:`manifest_digest`): nothing of an edited accelerator.json is trusted, and since
    ``files`` is inside, nothing of any file it lists either."""
    _check_version(meta, where)
    recorded = meta.get(MANIFEST_KEY)
    if not isinstance(recorded, str) or not _SHA256_RE.match(recorded):
        raise UserError(f"{where}: {JSON_NAME} has no {MANIFEST_KEY} (a sha256 hex digest)")
    if manifest_digest(meta) != recorded:
        raise UserError(
            f"{where}: {JSON_NAME} was changed after it was written (manifest sha256 "
            "mismatch); rebuild or re-upgrade the package"
        )


def _check_io(io: Mapping[str, Any], card: ModelCard, where: str) -> None:
    """Input and output ports: integer dtypes, NHWC, one channel per class, the card's tile."""
    for port in ("input", "output"):
        spec = io[port]
        _check_dtype(spec["dtype"], f"{where}: {port}")
        if spec.get("layout") != "NHWC":
            raise UserError(f"{where}: {port} layout {spec.get('layout')!r} is not NHWC")
        shape = spec["shape"]
        if not isinstance(shape, list) or len(shape) != 4:
            raise UserError(f"{where}: {port} shape {shape} is not 4-d NHWC")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
            raise UserError(f"{where}: {port} shape {shape} is not 4 positive integers")
    out = io["output"]
    nc = int(out["shape"][-1])
    if len(out["scale"]) != nc or len(out["bias"]) != nc:
        raise UserError(f"{where}: output scale/bias need {nc} entries (one per class)")
    _check_output_affine(out["scale"], out["bias"], where)
    if card.num_classes != nc:
        raise UserError(
            f"{where}: model_card has {card.num_classes} classes, output has {nc} channels"
        )
    in_shape = io["input"]["shape"]
    if in_shape[-1] != 3:
        raise UserError(f"{where}: input must have 3 channels (RGB)")
    if card.tile is None or list(card.tile) != list(in_shape[1:3]):
        raise UserError(
            f"{where}: model_card tile {card.tile} is not the input's {list(in_shape[1:3])}"
        )


def _check_dtype(name: Any, where: str) -> None:
    """An integer datatype name, or a one-line refusal naming ``where`` it was found."""
    if not is_integer_dtype(name):
        raise UserError(f"{where}: datatype {name!r} is not an integer datatype (e.g. UINT8)")


def _check_output_affine(scale: Sequence[Any], bias: Sequence[Any], where: str) -> None:
    """``logits = scores * scale + bias``: finite numbers, every scale positive (a NaN or
    infinite logit has no argmax, a zero scale ties every class, a negative one reverses the
    order of the scores)."""

    def number(v: Any) -> bool:
        return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)

    for i, (s, b) in enumerate(zip(scale, bias, strict=True)):
        if not number(s) or s <= 0:
            raise UserError(
                f"{where}: {JSON_NAME}: output scale[{i}] {s!r} is not a positive number"
            )
        if not number(b):
            raise UserError(f"{where}: {JSON_NAME}: output bias[{i}] {b!r} is not a finite number")


def _check_layers(entries: Sequence[Mapping[str, Any]], io: Mapping[str, Any], where: str) -> None:
    """Known kinds, topological order from the input to the output, dtypes, required arrays."""
    if not entries:
        raise UserError(f"{where}: package has no layers")
    produced = {io["input"]["name"]}
    for entry in entries:
        kind = entry.get("kind")
        if kind not in LAYER_KINDS:
            raise UserError(
                f"{where}: layer {entry.get('name')!r} has unknown kind {kind!r} "
                f"(this fcnseg knows {', '.join(sorted(LAYER_KINDS))})"
            )
        unproduced = [t for t in entry["inputs"] if t not in produced]
        if unproduced:
            raise UserError(
                f"{where}: layer {entry['name']!r} reads {unproduced[0]!r} before it is produced"
            )
        produced.update(entry["outputs"])
        for dt in list(entry["input_dtypes"]) + list(entry["output_dtypes"]):
            _check_dtype(dt, f"{where}: layer {entry['name']!r}")
        missing = [role for role in LAYER_KINDS[kind] if role not in entry["arrays"]]
        if missing:
            raise UserError(f"{where}: layer {entry['name']!r} lacks array {missing[0]!r}")
    if io["output"]["name"] not in produced:
        raise UserError(f"{where}: no layer produces the output {io['output']['name']!r}")


#: the keys of one writable layer of ``runtime_weights`` that are non-negative integers
_RUNTIME_INTS = (
    "index",
    "partition",
    "word_bits",
    "words",
    "words_per_line",
    "lines",
    "line_bits",
    "lane_bits",
    "address_bits",
    "range_bytes",
    "predicted_offset",
)
_RUNTIME_KINDS = ("MVAU", "Thresholding")
_RUNTIME_ZYNQ = ("zynq", "zynq_us+")
#: the smallest AXI-lite range finn's block design assigns an interface (4 KiB)
RUNTIME_MIN_RANGE = 4096


def _clog2(n: int) -> int:
    return (n - 1).bit_length() if n > 1 else 0


def _nonneg_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_runtime_weights(meta: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The ``runtime_weights`` record (module docstring): its fingerprint's digest, and per
    writable layer its index, interface, package layer and kind, listed ``.dat`` file, and the
    arithmetic of its layout (words = lines x words per line, a line's words the power of two
    finn pads it to, the address bits and range finn derives from them). Returns the record;
    one line naming the layer and the rule otherwise."""
    rec = meta[RUNTIME_WEIGHTS_KEY]
    what = f"{where}: {JSON_NAME}: {RUNTIME_WEIGHTS_KEY}"
    if not isinstance(rec, Mapping):
        raise UserError(f"{what} is not an object")
    for key in ("partitions", "zynq", "axi_base", "fingerprint", "fingerprint_sha256", "layers"):
        if key not in rec:
            raise UserError(f"{what} lacks {key!r}")
    if not _nonneg_int(rec["partitions"]) or not _nonneg_int(rec["axi_base"]):
        raise UserError(f"{what}: partitions and axi_base must be non-negative integers")
    if rec["zynq"] not in _RUNTIME_ZYNQ:
        raise UserError(f"{what}: zynq {rec['zynq']!r} is not one of {list(_RUNTIME_ZYNQ)}")
    if not isinstance(rec["fingerprint"], Mapping):
        raise UserError(f"{what}: fingerprint is not an object")
    digest = hashlib.sha256(canonical_json(rec["fingerprint"]).encode("utf-8")).hexdigest()
    if rec["fingerprint_sha256"] != digest:
        raise UserError(f"{what}: fingerprint_sha256 is not the sha256 of the fingerprint")
    layers = rec["layers"]
    if not isinstance(layers, list) or not layers:
        raise UserError(f"{what}: layers must be a non-empty list")
    kinds = {e["name"]: e["kind"] for e in meta["layers"]}
    files = meta["files"]
    seen: set[str] = set()
    parts: dict[int, int] = {}  # partition -> writable layers in it so far
    previous = None
    for position, entry in enumerate(layers):
        if not isinstance(entry, Mapping):
            raise UserError(f"{what}: layer #{position} is not an object")
        n = entry.get("partition")
        k = parts.get(n, 0) if isinstance(n, int) else 0
        _check_runtime_layer(entry, position, kinds, files, f"{what}: layer #{position}", k)
        if entry["layer"] in seen:
            raise UserError(f"{what}: layer {entry['layer']!r} is written twice")
        seen.add(entry["layer"])
        # between idma0 (0) and odma0 (the last); a partition's layers one after the other
        if not 0 < n < rec["partitions"] - 1 or (n in parts and n != previous):
            raise UserError(
                f"{what}: layer #{position}: partition {n} is not a new one (or the previous "
                f"layer's) between idma0's 0 and odma0's {rec['partitions'] - 1}"
            )
        parts[n] = k + 1
        previous = n
    return dict(rec)


def _check_runtime_layer(
    entry: Mapping[str, Any],
    position: int,
    kinds: Mapping[str, str],
    files: Mapping[str, str],
    what: str,
    k: int = 0,
) -> None:
    """One writable layer's entry, the ``k``-th writable layer of its partition."""
    for key in ("layer", "node", "kind", "instance", "interface", "file", "dtype", "order"):
        if key not in entry:
            raise UserError(f"{what} lacks {key!r}")
    for key in ("narrow_weights", "shape", "folding", *_RUNTIME_INTS):
        if key not in entry:
            raise UserError(f"{what} lacks {key!r}")
    for key in _RUNTIME_INTS:
        if not _nonneg_int(entry[key]):
            raise UserError(f"{what}: {key} must be a non-negative integer")
    name = entry["layer"]
    what = f"{what} ({name!r})"
    if entry["index"] != position:
        raise UserError(f"{what}: index {entry['index']} but it is #{position}")
    n = entry["partition"]
    if entry["instance"] != f"StreamingDataflowPartition_{n}":
        raise UserError(f"{what}: instance {entry['instance']!r} is not partition {n}'s")
    if entry["interface"] != f"s_axilite_{k}":
        raise UserError(f"{what}: interface {entry['interface']!r} is not s_axilite_{k}")
    if entry["kind"] not in _RUNTIME_KINDS or kinds.get(name) != entry["kind"]:
        raise UserError(f"{what}: kind {entry['kind']!r} is not the kind of a package layer")
    rel = entry["file"]
    if rel != f"{RUNTIME_WEIGHTS_DIR}/{n}_{k}_{entry['node']}.dat":
        raise UserError(f"{what}: file {rel!r} is not {RUNTIME_WEIGHTS_DIR}/{n}_{k}_<node>.dat")
    if rel not in files:
        raise UserError(f"{what}: file {rel} is not listed in files")
    _check_dtype(entry["dtype"], what)
    if entry["narrow_weights"] not in (True, False, None):
        raise UserError(f"{what}: narrow_weights must be true, false or null")
    if entry["word_bits"] != 32:
        raise UserError(f"{what}: word_bits {entry['word_bits']}, AXI-lite words are 32 bits")
    if not 0 < entry["lane_bits"] <= entry["line_bits"]:
        raise UserError(f"{what}: lane_bits must be in 1..line_bits")
    per_line = 1 << _clog2(-(-entry["line_bits"] // 32))
    if entry["words_per_line"] != per_line:
        raise UserError(f"{what}: a {entry['line_bits']}-bit line takes {per_line} words")
    if entry["words"] != entry["lines"] * per_line or entry["words"] == 0:
        raise UserError(f"{what}: words must be lines x words_per_line (and not 0)")
    if entry["address_bits"] != _clog2(entry["words"]) + 2:
        raise UserError(f"{what}: {entry['words']} words need {_clog2(entry['words']) + 2} bits")
    size = max(RUNTIME_MIN_RANGE, 1 << entry["address_bits"])
    if entry["range_bytes"] != size or entry["predicted_offset"] % size:
        raise UserError(f"{what}: range_bytes must be {size}, predicted_offset aligned to it")


def load_package(path: str | os.PathLike) -> Package:
    """Read and verify a package folder; refuse a damaged or foreign one with a UserError.

    Checks, before anything else is done with it: the json parses, its format name and version
    are this module's, its ``manifest_sha256`` is the digest of the rest, every listed file is
    present with its recorded sha256, the npz is listed, every layer kind is known, every
    referenced array exists and is integer.
    """
    from fcnseg.host.validation import validate_package

    root = Path(path)
    meta = _read_meta(root)
    _check_manifest(meta, str(root))
    card = _check_meta(meta, where=str(root))
    _verify_files(root, meta["files"])
    layers = _read_layers(root, meta)
    field_px = validate_package(meta, layers, card, root)
    if card.receptive_field is None:  # unknown to the card: the layers' (the tiling needs it)
        card = card.replace(receptive_field=field_px)
    _check_strides(card, layers, meta["io"], root)
    hardware = _read_hardware(root, meta["files"])
    if hardware is not None:
        _check_hardware_kinds(layers, hardware, root)
    return Package(
        path=root,
        meta=meta,
        layers=tuple(layers),
        card=card,
        verification=_read_listed_json(root, meta["files"], VERIFICATION_NAME, check_verification),
        hardware=hardware,
    )


#: layers that only re-pack a stream (values unchanged): a hardware build may add them
_REPACKING = ("StreamingFIFO", "StreamingDataWidthConverter")


def _check_hardware_kinds(layers: Sequence[Layer], hardware: Mapping[str, Any], root: Path) -> None:
    """The generated hardware has the layers' kinds, as many of each (the re-packing ones
    aside): an ElementwiseAdd retyped to ElementwiseMul in accelerator.json (hashes re-made)
    would make the simulator compute other scores than the hardware the package carries."""
    from collections import Counter

    def kinds(names: Sequence[str]) -> Counter[str]:
        return Counter(kind for kind in names if kind not in _REPACKING)

    built = kinds([re.sub(r"_(hls|rtl)$", "", str(n["kind"])) for n in hardware["nodes"]])
    declared = kinds([layer.kind for layer in layers])
    if built != declared:
        diff = (built - declared) + (declared - built)
        kind = sorted(diff)[0]
        raise UserError(
            f"{root}: {HARDWARE_ARCHIVE}: the hardware has {built[kind]} {kind} layer(s), "
            f"{JSON_NAME} {declared[kind]}: they describe different accelerators"
        )


def read_for_upgrade(path: str | os.PathLike) -> tuple[dict[str, Any], list[Layer]]:
    """The accelerator.json and layers of a package of an older format version
    (:data:`UPGRADABLE_VERSIONS`), for ``fcnseg upgrade`` (:mod:`fcnseg.hw.upgrade`), which adds
    what this version needs and writes it anew with :func:`write_package`.

    Verified as far as its version allows (it has no manifest digest): the format name, an
    upgradable version, the structure as this version checks it, every listed file present
    with its recorded sha256, the arrays pickle-free and integer. A damaged package is refused
    in one line, never upgraded: an upgrade must not vouch for files nothing vouched for.
    """
    root = Path(path)
    where = str(root)
    meta = _read_meta(root)
    version = meta.get("format_version")
    if meta.get("format") == FORMAT_NAME and version == FORMAT_VERSION:
        raise UserError(f"{where}: already package format version {FORMAT_VERSION}")
    if isinstance(version, bool) or version not in UPGRADABLE_VERSIONS:
        _check_version(meta, where)  # raises: foreign, newer, or too old to upgrade
    if meta.get("format") != FORMAT_NAME:
        raise UserError(f"{where}: not an fcnseg deployment package ({JSON_NAME} format)")
    _check_meta({**meta, "format_version": FORMAT_VERSION}, where)
    _verify_files(root, meta["files"])
    return meta, _read_layers(root, meta)


def _read_layers(root: Path, meta: Mapping[str, Any]) -> list[Layer]:
    """The :class:`Layer` objects of a structurally checked ``meta`` with their npz arrays."""
    arrays = _read_arrays(root)
    try:
        return _layers_of(meta, arrays, root)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        # _check_meta checks structure; a layer entry lacking a field still gets here (fuzzed)
        raise UserError(f"{root}: malformed {JSON_NAME} layer ({type(e).__name__}: {e})") from None


def _check_strides(
    card: ModelCard, layers: Sequence[Layer], io: Mapping[str, Any], root: Path
) -> None:
    """The card's strides are the layers' (the host tiles and upsamples by the card's)."""
    net, out = layer_strides(layers, io["input"]["name"], io["output"]["name"])
    if card.output_stride != out:
        raise UserError(
            f"{root}: model_card output_stride {card.output_stride} but the layers give {out}"
        )
    if card.net_stride is not None and card.net_stride != net:
        raise UserError(
            f"{root}: model_card net_stride {card.net_stride} but the layers give {net}"
        )


def _read_meta(root: Path) -> dict[str, Any]:
    """The parsed accelerator.json of the package folder ``root`` (a JSON object)."""
    if not root.is_dir():
        raise UserError(f"{root}: no such package folder")
    jpath = root / JSON_NAME
    if not jpath.is_file():
        if (root / "package" / JSON_NAME).is_file():  # `fcnseg compile -o DIR` writes DIR/package
            raise UserError(f"{root} is a build folder; its package is {root / 'package'}")
        raise UserError(f"{root}: not a deployment package (no {JSON_NAME})")
    from fcnseg.host.validation import check_json_size

    check_json_size(jpath, root)  # bounded before it is read
    try:
        meta = json.loads(jpath.read_text())
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: deep nesting
        raise UserError(f"{jpath}: unreadable ({type(e).__name__})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{jpath}: not a JSON object")
    try:  # JSON may escape lone surrogates, which no file name, PNG chunk or summary can hold
        json.dumps(meta, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise UserError(f"{jpath}: holds text that is not valid Unicode ({e.reason})") from None
    return meta


def _verify_files(root: Path, files: Any) -> None:
    """Every listed file is inside the package, present, within the size bound (checked for all
    before any is hashed), and has its recorded sha256."""
    if not isinstance(files, dict) or not all(isinstance(k, str) for k in files):
        raise UserError(f"{root}: {JSON_NAME} 'files' is not a map of paths to sha256")
    if NPZ_NAME not in files:
        raise UserError(f"{root}: {JSON_NAME} does not list {NPZ_NAME}")
    from fcnseg.host.validation import check_listed_sizes

    sizes = {}
    for rel in files:
        p = root / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise UserError(f"{root}: file entry {rel!r} escapes the package")
        if not p.is_file():
            raise UserError(f"{root}: missing file {rel}")
        sizes[rel] = p.stat().st_size
    check_listed_sizes(sizes, root)
    for rel, digest in files.items():
        if sha256_file(root / rel) != digest:
            raise UserError(f"{root}: {rel} is damaged (sha256 mismatch)")


def _read_arrays(root: Path) -> dict[str, np.ndarray]:
    """All arrays of accelerator.npz, pickle-free, bounded before they are allocated.

    The npz is read member by member (it is a zip of ``.npy`` files, as ``np.savez`` writes
    it): each member's header (shape, dtype) is checked against its stored size and the bounds
    of :mod:`fcnseg.host.validation` first, so a header claiming terabytes is refused instead of
    allocated; only integer arrays are accepted (no pickles, no objects). numpy 1.x and 2.x.
    """
    from fcnseg.host.validation import MAX_NPZ_BYTES, Refusal, check_npy_header

    arrays: dict[str, np.ndarray] = {}
    total = 0
    try:
        with zipfile.ZipFile(root / NPZ_NAME) as zf:
            for info in zf.infolist():
                key = info.filename.removesuffix(".npy")
                if key == info.filename or key in arrays:
                    raise Refusal(root, NPZ_NAME)(f"member {info.filename!r} is not one .npy array")
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                    else:
                        raise ValueError(f"npy format version {version}")
                    nbytes = check_npy_header(key, shape, dtype, info.file_size - f.tell(), root)
                    total += nbytes
                    if total > MAX_NPZ_BYTES:
                        raise Refusal(root, NPZ_NAME)(f"arrays exceed {MAX_NPZ_BYTES} bytes")
                    data = bytearray(f.read(nbytes))
                if len(data) != nbytes:
                    raise EOFError(f"{key}: truncated")
                arr = np.frombuffer(data, dtype=dtype)
                arrays[key] = arr.reshape(shape, order="F" if fortran else "C")
    except (
        OSError,
        ValueError,
        EOFError,
        zipfile.BadZipFile,
        zlib.error,
        NotImplementedError,  # zipfile: a flipped byte claims another compression/version
        RuntimeError,  # zipfile: ... or an encrypted member
    ) as e:
        # a damaged zip surfaces as any of these (found by fuzzing)
        raise UserError(f"{root}: {NPZ_NAME} unreadable ({type(e).__name__})") from None
    return arrays


def _layers_of(
    meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray], root: Path
) -> list[Layer]:
    """The :class:`Layer` objects of a checked ``meta``, with their arrays."""
    layers = []
    for entry in meta["layers"]:
        arrs = {}
        for role, key in entry["arrays"].items():
            if key not in arrays:
                raise UserError(f"{root}: layer {entry['name']!r} array {key!r} not in {NPZ_NAME}")
            arr = arrays[key]
            if arr.dtype.kind not in "iu":
                raise UserError(f"{root}: array {key!r} is {arr.dtype}, not integer")
            arrs[role] = arr
        layers.append(
            Layer(
                kind=entry["kind"],
                name=entry["name"],
                inputs=tuple(entry["inputs"]),
                outputs=tuple(entry["outputs"]),
                attributes=dict(entry["attributes"]),
                input_dtypes=tuple(entry["input_dtypes"]),
                output_dtypes=tuple(entry["output_dtypes"]),
                input_shapes=tuple(tuple(s) for s in entry.get("input_shapes", [])),
                output_shapes=tuple(tuple(s) for s in entry.get("output_shapes", [])),
                folding=dict(entry.get("folding", {})),
                arrays=arrs,
            )
        )
    return layers


# --------------------------------------------------------------------------------------------
# Optional files: the generated hardware and how it was verified
# --------------------------------------------------------------------------------------------

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
VERIFICATION_LEVELS = ("chained", "isolated")
VERIFICATION_RESULTS = ("exact", "mismatch")


def _listed(root: Path, files: Mapping[str, str], rel: str) -> Path | None:
    """The path of the optional file ``rel`` if the package lists it; None if it has none.

    Only a listed file is read (its sha256 was verified with the others): one present but not
    listed is refused, since the package does not vouch for it."""
    path = root / rel
    if rel in files:
        return path
    if path.exists():
        raise UserError(
            f"{root}: {rel} is not listed in {JSON_NAME} (copied in by hand?); add it with "
            "fcnseg.host.package.add_package_files"
        )
    return None


def _read_listed_json(
    root: Path, files: Mapping[str, str], rel: str, check: Any
) -> dict[str, Any] | None:
    """``rel`` parsed and checked by ``check(data, where)``; None when the package has none."""
    path = _listed(root, files, rel)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{root}: {rel} unreadable ({type(e).__name__})") from None
    return check(data, f"{root}: {rel}")


def _read_hardware(root: Path, files: Mapping[str, str]) -> dict[str, Any] | None:
    """The checked ``hardware/graph.json`` of a listed ``hardware.tar.xz``, or None."""
    from fcnseg.host.hardware import read_member

    archive = _listed(root, files, HARDWARE_ARCHIVE)
    if archive is None:
        return None
    data = read_member(archive, HARDWARE_GRAPH_NAME)
    where = f"{root}: {HARDWARE_ARCHIVE}:{HARDWARE_GRAPH_NAME}"
    if data is None:
        raise UserError(f"{where} is missing")
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise UserError(f"{where} unreadable ({type(e).__name__})") from None
    return check_hardware(parsed, where)


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} is not a count: {value!r}")
    return value


def check_verification(data: Any, where: str = VERIFICATION_NAME) -> dict[str, Any]:
    """Check a parsed ``verification.json``; return it, or raise a one-line UserError.

    Written by the verifier (``fcnseg verify``)::

        format "fcnseg-verification", format_version 1, created_by "fcnseg <version>",
        date        ISO 8601 UTC ("2026-12-02T04:10:00Z")
        level       "chained" (each node fed by the generated nodes before it) or
                    "isolated" (each node fed the simulator's tensors)
        tiles       [{label: where the tile was cut, sha256: of its uint8 bytes}]
        result      "exact" (no verified node differs) or "mismatch"
        nodes       {total, exact: counts, mismatch: [node names],
                     not_verified: {node name: why}}; exact + mismatch + not_verified = total
        by_kind     {kind: {total, exact, mismatch, not_verified: counts}}
        final_output_equal  bool;  seconds_per_tile  number or null
        libraries   {name: version} (finn-plus, finn-hlslib, finn-rtllib, verilator, g++)
    """
    try:
        if not isinstance(data, dict) or data.get("format") != VERIFICATION_FORMAT:
            raise UserError(f"{where}: not an {VERIFICATION_FORMAT} record")
        version = data.get("format_version")
        if version != VERIFICATION_FORMAT_VERSION:
            newer = isinstance(version, int) and version > VERIFICATION_FORMAT_VERSION
            raise UserError(
                f"{where}: format version {version!r} is not supported (this fcnseg reads "
                f"{VERIFICATION_FORMAT_VERSION}){'; upgrade fcnseg' if newer else ''}"
            )
        for key, kind in (("created_by", str), ("date", str), ("final_output_equal", bool)):
            if not isinstance(data[key], kind):
                raise ValueError(f"{key} is not a {kind.__name__}")
        if data["level"] not in VERIFICATION_LEVELS:
            raise ValueError(f"level {data['level']!r} is not one of {VERIFICATION_LEVELS}")
        if data["result"] not in VERIFICATION_RESULTS:
            raise ValueError(f"result {data['result']!r} is not one of {VERIFICATION_RESULTS}")
        seconds = data.get("seconds_per_tile")
        if seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, int | float)
        ):
            raise ValueError("seconds_per_tile is not a number")
        _check_tiles(data["tiles"])
        _check_node_counts(data["nodes"], data["result"])
        for kind, counts in data["by_kind"].items():
            for key in ("total", "exact", "mismatch", "not_verified"):
                _count(counts[key], f"by_kind[{kind}].{key}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in data["libraries"].items()):
            raise ValueError("libraries is not a map of names to versions")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{where}: malformed ({type(e).__name__}: {e})") from None
    return data


def _check_tiles(tiles: Any) -> None:
    if not isinstance(tiles, list) or not tiles:
        raise ValueError("tiles is not a non-empty list")
    for tile in tiles:
        if not isinstance(tile["label"], str) or not _SHA256_RE.match(str(tile["sha256"])):
            raise ValueError(f"tile {tile!r} needs a label and a sha256")


def _check_node_counts(nodes: Mapping[str, Any], result: str) -> None:
    total, exact = _count(nodes["total"], "nodes.total"), _count(nodes["exact"], "nodes.exact")
    mismatch, not_verified = nodes["mismatch"], nodes["not_verified"]
    if not isinstance(mismatch, list) or not all(isinstance(n, str) for n in mismatch):
        raise ValueError("nodes.mismatch is not a list of node names")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in not_verified.items()):
        raise ValueError("nodes.not_verified is not a map of node names to reasons")
    if exact + len(mismatch) + len(not_verified) != total:
        raise ValueError(
            f"nodes: {exact} exact + {len(mismatch)} mismatch + {len(not_verified)} not "
            f"verified != {total} total"
        )
    if (result == "exact") != (not mismatch):
        raise ValueError(f"result {result!r} but {len(mismatch)} nodes mismatch")


def check_hardware(data: Any, where: str = HARDWARE_GRAPH_NAME) -> dict[str, Any]:
    """Check a parsed ``hardware/graph.json``; return it, or raise a one-line UserError.

    Its schema is ``fcnseg.hw.verify.chain``'s (format "fcnseg-hardware", version 1): the
    graph's ``input``/``output`` tensors, ``nodes`` [{name, kind, backend "hls"|"rtl", folder
    (relative to hardware/), inputs, outputs}] in dataflow order, and free-form ``library``
    (versions the code was generated against), ``fpgapart``, ``clk_ns``. Only what a reader
    of the package relies on is checked here; running it checks the rest."""
    try:
        if not isinstance(data, dict) or data.get("format") != HARDWARE_FORMAT:
            raise UserError(f"{where}: not an {HARDWARE_FORMAT} description")
        if data.get("format_version") != HARDWARE_FORMAT_VERSION:
            raise UserError(
                f"{where}: format version {data.get('format_version')!r} is not supported "
                f"(this fcnseg reads {HARDWARE_FORMAT_VERSION})"
            )
        if not isinstance(data["input"], str) or not isinstance(data["output"], str):
            raise ValueError("input/output are not tensor names")
        if not isinstance(data["nodes"], list) or not data["nodes"]:
            raise ValueError("nodes is not a non-empty list")
        for node in data["nodes"]:
            for key in ("name", "kind", "folder"):
                if not isinstance(node[key], str):
                    raise ValueError(f"node {key} {node[key]!r} is not a string")
            if node["backend"] not in ("hls", "rtl"):
                raise ValueError(f"node {node['name']}: backend {node['backend']!r}")
            folder = Path(node["folder"])
            if folder.is_absolute() or ".." in folder.parts:
                raise ValueError(f"node {node['name']}: folder {node['folder']!r} escapes")
            if not isinstance(node["inputs"], list) or not isinstance(node["outputs"], list):
                raise ValueError(f"node {node['name']}: inputs/outputs are not lists")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{where}: malformed ({type(e).__name__}: {e})") from None
    return data


def add_package_files(package_dir: str | os.PathLike, files: Mapping[str, bytes]) -> None:
    """Add or replace ``files`` (package-relative name -> bytes) of an existing package.

    Atomic like :func:`write_package`: the package is verified, copied to a temporary sibling,
    the files are written there, their sha256 recorded in ``files`` of accelerator.json (the
    listed files are re-hashed from the copy; the manifest digest anew), the copy is loaded as
    a package (so a malformed ``verification.json`` is refused before anything changes), and
    only then replaces the original. Refuses names that escape the package or are
    accelerator.json/.npz.
    """
    root = Path(package_dir)
    for rel in files:
        _check_file_name(rel, "package file")
    meta = _read_meta(root)
    _check_manifest(meta, str(root))
    _check_meta(meta, where=str(root))
    _verify_files(root, meta["files"])  # never re-hash a damaged file into a valid package
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        shutil.copytree(root, tmp, dirs_exist_ok=True)
        for rel, data in files.items():
            dst = tmp / rel
            try:
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(bytes(data))
            except OSError as e:
                raise UserError(f"{root}: cannot write {rel} ({type(e).__name__})") from None
        names = sorted({*meta["files"], *(Path(rel).as_posix() for rel in files)})
        meta = {**meta, "files": {rel: sha256_file(tmp / rel) for rel in names}}
        _write_meta(tmp, meta)
        load_package(tmp)
        replace_dir(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
