"""``fcnseg upgrade``: a deployment package of an older format version -> the current one.

A version-1 package may carry hours of Vivado (bitfile, driver settings) and of verification
(``hardware.tar.xz``, ``verification.json``); rebuilding it only to get version 2 would redo
them. What version 2 adds (:mod:`fcnseg.host.package`) can be had without a rebuild:

- the declared datatypes (``weightDataType`` ...): read from the package's own
  ``hw_graph.onnx``, the graph its layers were made from, node by node (matched by name, read by
  :func:`fcnseg.hw.to_package.declared_types` and ``complete_declared``, as the writer reads
  them). A layer whose node is missing, of another kind, or lacks a type is refused, never
  guessed; a type the old package already records (``accDataType``) must agree with the graph.
- the thresholds sorted: the version-1 reader sorted them, so sorting changes no count;
- the manifest digest: :func:`fcnseg.host.package.write_package` writes it.

Every other file is carried over byte for byte (the npz is rewritten with the same arrays).
Nothing is trusted that the old package did not vouch for: it is verified first (every listed
sha256, :func:`fcnseg.host.package.read_for_upgrade`), a file in its folder that it does not
list is refused (an in-place upgrade would delete it), and the result is loaded with every
check of the current version (:func:`fcnseg.host.package.load_package`) in a hidden sibling
folder before it replaces anything. A refused upgrade leaves the old package as it was.

Needs qonnx and finn-plus (the ``compile`` extra) to read the graph; imported inside functions.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fcnseg.atomic import replace_dir
from fcnseg.errors import UserError
from fcnseg.host.package import (
    FORMAT_VERSION,
    HW_GRAPH_NAME,
    JSON_NAME,
    MANIFEST_KEY,
    NPZ_NAME,
    Layer,
    load_package,
    read_for_upgrade,
    sha256_file,
    write_package,
)


@dataclass(frozen=True)
class Upgraded:
    """What :func:`upgrade_package` did."""

    source: Path
    path: Path  #: the upgraded package (``source`` itself for an in-place upgrade)
    from_version: int
    manifest_sha256: str  #: the new package's identity
    carried: tuple[str, ...]  #: the files carried over besides the npz and the graph


def upgrade_package(old: str | Path, new: str | Path | None = None) -> Upgraded:
    """Upgrade the package ``old`` to the current format, into ``new`` or (None) in place.

    ``new`` must not exist (unless it is ``old``). Raises a one-line :class:`UserError` for a
    package that is damaged, already current, or whose graph cannot give a declared type."""
    src = Path(old)
    dst = src if new is None else Path(new)
    if dst.resolve() != src.resolve() and dst.exists():
        raise UserError(f"{dst} exists; give a new folder for the upgraded package")
    meta, layers = read_for_upgrade(src)
    files = meta["files"]
    _refuse_unlisted(src, files)
    if HW_GRAPH_NAME not in files:
        raise UserError(
            f"{src}: has no {HW_GRAPH_NAME} to read the declared types from; rebuild the package"
        )
    from fcnseg.hw.compat import check_dependencies

    check_dependencies()  # reading the graph needs qonnx and finn-plus; the checks above do not
    graph = (src / HW_GRAPH_NAME).read_bytes()
    layers = upgraded_layers(layers, _graph_nodes(graph, src), src)
    carried = tuple(sorted(rel for rel in files if rel not in (NPZ_NAME, HW_GRAPH_NAME)))
    target = dst.resolve()  # `fcnseg upgrade .` or `..`: the folder's real name and parent
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.upgrade-", dir=target.parent))
    except OSError as e:
        raise UserError(f"{dst}: cannot write the upgraded package ({e.strerror})") from None
    try:
        staged = _write(
            staging / target.name,
            src,
            model_card=meta["model_card"],
            io=meta["io"],
            layers=layers,
            estimates=meta.get("estimates") or {},
            board=meta.get("board"),
            hw_graph=graph,
            extra_files={rel: src / rel for rel in carried},
            upgraded_from={
                "format_version": meta["format_version"],
                "created_by": meta.get("created_by"),
                "accelerator_json_sha256": sha256_file(src / JSON_NAME),
            },
        )
        try:
            package = load_package(staged)
        except UserError as e:
            message = str(e).replace(str(staged), str(src))
            raise UserError(f"not upgraded, the result would be refused: {message}") from None
        changed = [
            rel for rel in (*carried, HW_GRAPH_NAME) if package.meta["files"][rel] != files[rel]
        ]
        if changed:  # a file changed between the verification and its copy
            raise UserError(f"{src}: {changed[0]} changed during the upgrade; nothing was replaced")
        replace_dir(staged, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Upgraded(src, dst, int(meta["format_version"]), package.meta[MANIFEST_KEY], carried)


def _write(out: Path, src: Path, **package: Any) -> Path:
    """:func:`write_package` into the staging folder ``out``; its refusals and a failed write
    name the package being upgraded, not the hidden folder."""
    try:
        return write_package(out, **package)
    except UserError as e:
        raise UserError(f"not upgraded: {str(e).replace(str(out), str(src))}") from None
    except OSError as e:
        raise UserError(f"{src}: not upgraded, writing failed ({e.strerror})") from None


def upgraded_layers(layers: list[Layer], nodes: dict[str, Any], where: Path) -> list[Layer]:
    """``layers`` with the declared types of their graph ``nodes`` (name -> node) added and their
    thresholds sorted; a one-line UserError for a layer the graph cannot type."""
    from fcnseg.hw.to_package import (
        base_kind,
        check_declared,
        complete_declared,
        declared_types,
    )

    out = []
    for layer in layers:
        node = nodes.get(layer.name)
        if node is None:
            raise UserError(
                f"{where}: layer {layer.name!r} is not a node of {HW_GRAPH_NAME}; its declared "
                "types cannot be read (rebuild the package)"
            )
        if base_kind(node.op_type) != layer.kind:
            raise UserError(
                f"{where}: layer {layer.name!r} is a {layer.kind} but its {HW_GRAPH_NAME} node is "
                f"a {node.op_type} (rebuild the package)"
            )
        declared = complete_declared(layer.kind, declared_types(node), layer.input_dtypes)
        for attr, value in declared.items():
            if attr in layer.attributes and layer.attributes[attr] != value:
                raise UserError(
                    f"{where}: layer {layer.name!r}: {attr} {layer.attributes[attr]!r} in "
                    f"{JSON_NAME} but {value!r} in {HW_GRAPH_NAME} (rebuild the package)"
                )
        typed = Layer(
            **{
                **vars(layer),
                "attributes": {**layer.attributes, **declared},
                "arrays": {role: _sorted(role, a) for role, a in layer.arrays.items()},
            }
        )
        try:
            check_declared(typed)
        except UserError as e:
            raise UserError(f"{where}: {HW_GRAPH_NAME}: {e} (rebuild the package)") from None
        out.append(typed)
    return out


def _sorted(role: str, array: np.ndarray) -> np.ndarray:
    """Thresholds sorted per row (what the version-1 reader did on load); other arrays as is."""
    if role == "thresholds" and array.ndim >= 1:
        return np.sort(array, axis=-1)
    return array


def _graph_nodes(graph: bytes, where: Path) -> dict[str, Any]:
    """The HW nodes of the serialized ``hw_graph.onnx`` by name."""
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper

    from fcnseg.hw.to_package import hw_nodes

    try:
        model = ModelWrapper(onnx.load_model_from_string(graph))
    except Exception as e:  # protobuf's DecodeError and what onnx raises on garbage
        raise UserError(f"{where}: {HW_GRAPH_NAME} unreadable ({type(e).__name__})") from None
    return hw_nodes(model)


def _refuse_unlisted(root: Path, files: dict[str, str]) -> None:
    """Refuse a package folder holding a file it does not list: the upgrade writes only the
    package's files, so an in-place upgrade would silently delete it."""
    listed = {*files, JSON_NAME}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in listed:
            raise UserError(
                f"{root}: {rel} is not part of the package (not listed in {JSON_NAME}); move it "
                "out before upgrading"
            )


def upgrade_line(result: Upgraded) -> str:
    """One line for the CLI: what was upgraded into what, its identity and what was kept."""
    where = "in place" if result.path == result.source else f"-> {result.path}"
    kept = ", ".join(result.carried) or "no other files"
    return (
        f"upgraded {result.source} {where} (format version {result.from_version} -> "
        f"{FORMAT_VERSION}); package sha256 {result.manifest_sha256}; kept {kept}"
    )
