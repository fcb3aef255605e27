"""The accelerator's graph as the build made it, and its generated hardware folder (needs finn).

:func:`resolve_target` turns what a user points at into the specialised, folded HW graph plus
the FPGA part and clock its code is generated for:

- a build folder: its folded model (``intermediate_models/step_generate_estimate_reports.onnx``)
  and ``fcnseg_build.json``;
- a deployment package: its ``hw_graph.onnx`` (the HW graph before specialisation, folding
  attributes on every node) re-specialised for the package's part and bit-width-minimised with
  finn's own transformations — the same steps the build ran after it, which reproduce the
  build's folded graph attribute for attribute (tests/hw/test_verify_graph.py checks that).

:func:`generate_hardware` writes one generated node folder per node (``.hls`` / ``.rtl_node``)
and the ``graph.json`` that wires them (:mod:`.chain`), atomically.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fcnseg.errors import UserError
from fcnseg.hw.verify.chain import HardwareGraph, HardwareNode

if TYPE_CHECKING:
    from qonnx.core.modelwrapper import ModelWrapper

#: the folded model of a build (the last estimate-only step saves it)
FOLDED_MODEL = Path("intermediate_models") / "step_generate_estimate_reports.onnx"
BUILD_OPTIONS = "fcnseg_build.json"
#: the generated hardware's folder, in a build and in a package
HARDWARE_DIR = "hardware"
#: node attributes that only annotate estimates (never change generated code)
ESTIMATE_ATTRS = ("cycles_estimate", "res_estimate", "cycles_rtlsim")


@dataclass(frozen=True)
class Target:
    """A graph to generate: HW model (dataflow child), part, clock, and its package."""

    source: Path
    fpgapart: str
    clk_ns: float
    package_dir: Path
    from_build: bool

    def model(self) -> ModelWrapper:
        """The specialised, folded HW graph (loaded fresh: code generation sets attributes)."""
        from qonnx.core.modelwrapper import ModelWrapper

        from fcnseg.hw.compat import prepare_finn

        prepare_finn()
        if self.from_build:
            return dataflow_child(ModelWrapper(str(self.source / FOLDED_MODEL)))
        return specialise_package_graph(self.package_dir / "hw_graph.onnx", self.fpgapart)


def resolve_target(source: str | Path) -> Target:
    """A build folder or deployment package -> :class:`Target` (one-line errors otherwise)."""
    from fcnseg.host.package import JSON_NAME, load_package

    path = Path(source)
    if (path / FOLDED_MODEL).is_file():
        if not (path / BUILD_OPTIONS).is_file() or not (path / "package").is_dir():
            raise UserError(f"{path}: a build folder without {BUILD_OPTIONS} or package/")
        from fcnseg.hw.build import BuildOptions

        opts = BuildOptions.load(path / BUILD_OPTIONS)
        return Target(path, opts.board.part, opts.resolved_clock_ns(), path / "package", True)
    if (path / JSON_NAME).is_file():
        package = load_package(path)
        board = (package.estimates or {}).get("board") or {}
        part, clk = board.get("part"), package.estimates.get("clock_ns") or board.get("clock_ns")
        if not part or not clk:
            raise UserError(f"{path}: the package names no FPGA part and clock (estimates.board)")
        return Target(path, str(part), float(clk), path, False)
    raise UserError(f"{path} is neither a build folder (`fcnseg compile -o`) nor a package")


def dataflow_child(model: ModelWrapper) -> ModelWrapper:
    """The HW graph: the model, or the child of its one dataflow partition."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    parts = [n for n in model.graph.node if n.op_type == "StreamingDataflowPartition"]
    if len(parts) > 1:
        raise UserError(f"the model has {len(parts)} dataflow partitions; expected one")
    return ModelWrapper(getCustomOp(parts[0]).get_nodeattr("model")) if parts else model


def specialise_package_graph(hw_graph: Path, fpgapart: str) -> ModelWrapper:
    """A package's ``hw_graph.onnx`` specialised and bit-width-minimised as the build did."""
    from finn.transformation.fpgadataflow.minimize_accumulator_width import (
        MinimizeAccumulatorWidth,
    )
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import (
        MinimizeWeightBitWidth,
    )
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(str(hw_graph)).transform(SpecializeLayers(fpgapart))
    return model.transform(MinimizeWeightBitWidth()).transform(MinimizeAccumulatorWidth())


def graph_differences(a: ModelWrapper, b: ModelWrapper) -> list[str]:
    """What differs between two HW graphs in anything code generation reads (empty: same):
    node kinds and names, wiring, attributes other than estimates, initializers, datatypes."""
    import numpy as np
    from qonnx.custom_op.registry import getCustomOp

    found: list[str] = []
    if len(a.graph.node) != len(b.graph.node):
        return [f"{len(a.graph.node)} vs {len(b.graph.node)} nodes"]
    for na, nb in zip(a.graph.node, b.graph.node, strict=True):
        if (na.op_type, na.name, list(na.input), list(na.output)) != (
            nb.op_type,
            nb.name,
            list(nb.input),
            list(nb.output),
        ):
            found.append(f"node {na.name} vs {nb.name}")
            continue
        ia, ib = getCustomOp(na), getCustomOp(nb)
        for key in ia.get_nodeattr_types():
            if key not in ESTIMATE_ATTRS and ia.get_nodeattr(key) != ib.get_nodeattr(key):
                found.append(f"{na.name}.{key}")
        for t in [*na.input, *na.output]:
            va, vb = a.get_initializer(t), b.get_initializer(t)
            if (va is None) != (vb is None) or (va is not None and not np.array_equal(va, vb)):
                found.append(f"{na.name}: initializer {t}")
            if a.get_tensor_datatype(t) != b.get_tensor_datatype(t):
                found.append(f"{na.name}: datatype of {t}")
    return found


def backend_of(op_type: str) -> str | None:
    """``"hls"`` or ``"rtl"`` for a specialised HW layer, else None."""
    for suffix in ("hls", "rtl"):
        if op_type.endswith("_" + suffix):
            return suffix
    return None


def hw_part(model: ModelWrapper) -> tuple[list, str, str]:
    """The specialised HW layers of ``model`` with the one tensor entering and the one leaving
    them. Layout ops outside the dataflow part (an input ``Transpose``) are left out; a non-HW
    node between HW layers, or an unspecialised HW layer, is refused."""
    nodes = list(model.graph.node)
    hw = [i for i, n in enumerate(nodes) if backend_of(n.op_type)]
    if not hw:
        raise UserError("the graph has no specialised HW layers (run SpecializeLayers first)")
    inside = nodes[hw[0] : hw[-1] + 1]
    stray = [n for n in inside if not backend_of(n.op_type)]
    if stray:
        raise UserError(f"{stray[0].op_type} node {stray[0].name} is not a specialised HW layer")
    made = {t for n in inside for t in n.output}
    used = {t for n in inside for t in n.input}
    entering = sorted(t for t in used - made if model.get_initializer(t) is None)
    leaving = [o.name for o in model.graph.output if o.name in made]
    leaving = leaving or sorted(made - used)
    if len(entering) != 1 or len(leaving) != 1:
        raise UserError(f"the HW layers take {entering} and give {leaving}: expected one each")
    return inside, entering[0], leaving[0]


def generate_hardware(target: Target, out_dir: str | Path) -> HardwareGraph:
    """Generate every node of ``target``'s graph into ``out_dir`` (replaced atomically)."""
    from fcnseg import __version__
    from fcnseg.hw.verify.hls import generate_hls_node
    from fcnseg.hw.verify.rtl_node import generate_rtl_node

    model = target.model()
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        nodes, library = [], {}
        inside, graph_input, graph_output = hw_part(model)
        for node in inside:
            backend = str(backend_of(node.op_type))
            make = generate_hls_node if backend == "hls" else generate_rtl_node
            generated = make(model, node, tmp / node.name, target.fpgapart, target.clk_ns)
            library.update(generated.library)
            nodes.append(
                HardwareNode(
                    name=node.name,
                    kind=node.op_type,
                    backend=backend,
                    folder=node.name,
                    inputs=tuple(s.tensor for s in generated.inputs),
                    outputs=tuple(s.tensor for s in generated.outputs),
                )
            )
        graph = HardwareGraph(
            root=tmp,
            nodes=nodes,
            input=graph_input,
            output=graph_output,
            input_shape=tuple(model.get_tensor_shape(graph_input)),
            info=_info(target, library, __version__),
        )
        graph.save()
        HardwareGraph.load(tmp)  # the wiring check, before anything is published
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return HardwareGraph.load(out)


def _info(target: Target, library: dict[str, str], version: str) -> dict[str, Any]:
    return {
        "fpgapart": target.fpgapart,
        "clk_ns": target.clk_ns,
        "library": dict(sorted(library.items())),
        "created_by": f"fcnseg {version}",
    }
