"""Every ``*_rtl`` node of a folded build, in its generated RTL on Verilator, against the simulator.

:func:`verify_rtl_nodes` takes a build folder (or its folded model, finn's
``intermediate_models/step_generate_estimate_reports.onnx``) and the tensors each node reads,
normally :func:`~.tensors.simulator_tensors` of a real photo tile. For each RTL node it runs
finn-plus's own code generation (``code_generation_ipgen``: no Vivado needed for RTL nodes),
finn's ``prepare_rtlsim`` and ``execute_node(exec_mode="rtlsim")`` with Verilator bound in
``finn.xsi`` (:mod:`.verilator`), and also finn's Python model of the node
(``exec_mode="cppsim"``, which for RTL nodes is Python); both outputs must equal the
simulator's tensor exactly, in finn's stream layout (:func:`~.tensors.to_finn_layout`).

Each node runs on the simulator's *input* tensor, not on another generated node's output: this
proves every node in isolation. Chaining the generated nodes, the HLS nodes (cppsim) and MVAU RTL
are later steps of issue 14 (``docs/hardware.md``).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fcnseg.errors import UserError
from fcnseg.hw.verify.generate import Target, resolve_target
from fcnseg.hw.verify.run import first_mismatch
from fcnseg.hw.verify.tensors import simulator_tensors, to_finn_layout


@dataclass
class NodeResult:
    """One RTL node's verification: timings, cycles and the first difference, if any.

    ``equal``: Verilator's output equals the simulator's; ``python_equal``: finn's Python model
    does too. ``mismatch``: the first differing position (of the Verilator output) and both
    values, or None. ``cycles`` counts clock cycles from reset release to the last output word;
    ``expected_cycles`` is finn's estimate for the node's folding.
    """

    name: str
    kind: str
    build_s: float
    cached: bool
    run_s: float
    cycles: int
    expected_cycles: int
    equal: bool
    python_equal: bool
    mismatch: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _context(model, node, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """finn's execution context for one node: its inputs (float32), initializers, and zeroed
    outputs (finn's sliding window reads the output shape from the context)."""
    ctx: dict[str, np.ndarray] = {}
    for t in node.input:
        init = model.get_initializer(t)
        if init is not None:
            ctx[t] = init
        elif t in tensors:
            ctx[t] = np.asarray(tensors[t], dtype=np.float32).reshape(model.get_tensor_shape(t))
        else:
            raise UserError(f"node {node.name}: no tensor {t!r} among the given inputs")
    for t in node.output:
        ctx[t] = np.zeros(model.get_tensor_shape(t), dtype=np.float32)
    return ctx


def _expected(model, node, inst, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
    t = node.output[0]
    if t not in tensors:
        raise UserError(f"node {node.name}: no reference tensor {t!r} among the given inputs")
    attrs = {
        a: inst.get_nodeattr(a)
        for a in ("depthwise", "ConvKernelDim", "IFMChannels", "SIMD")
        if a in inst.get_nodeattr_types()
    }
    want = np.asarray(tensors[t]).reshape(model.get_tensor_shape(t))
    return to_finn_layout(attrs, node.op_type, want).astype(np.int64)


def verify_node(model, node, tensors: Mapping[str, np.ndarray], target: Target, work: Path):
    """Generate, build (cached), run and compare one RTL node; returns its :class:`NodeResult`."""
    from qonnx.custom_op.registry import getCustomOp

    from fcnseg.hw.verify.verilator import load_sim_obj

    inst = getCustomOp(node)
    code_dir = work / node.name
    code_dir.mkdir(parents=True, exist_ok=True)
    inst.set_nodeattr("code_gen_dir_ipgen", str(code_dir))
    inst.code_generation_ipgen(model, target.fpgapart, target.clk_ns)
    started_wall, started = time.time(), time.perf_counter()
    inst.prepare_rtlsim(False)
    build_s = time.perf_counter() - started
    sim = load_sim_obj(*_split_so(inst.get_nodeattr("rtlsim_so")))
    cached = sim.design.executable.stat().st_mtime < started_wall
    want = _expected(model, node, inst, tensors)

    inst.set_nodeattr("exec_mode", "rtlsim")
    ctx = _context(model, node, tensors)
    started = time.perf_counter()
    inst.execute_node(ctx, model.graph)
    run_s = time.perf_counter() - started
    got = np.asarray(ctx[node.output[0]]).astype(np.int64)

    inst.set_nodeattr("exec_mode", "cppsim")
    py_ctx = _context(model, node, tensors)
    inst.execute_node(py_ctx, model.graph)
    py_got = np.asarray(py_ctx[node.output[0]]).astype(np.int64)
    mismatch = first_mismatch(got, want)
    return NodeResult(
        name=node.name,
        kind=node.op_type,
        build_s=round(build_s, 3),
        cached=cached,
        run_s=round(run_s, 3),
        cycles=int(inst.get_nodeattr("cycles_rtlsim")),
        expected_cycles=int(inst.get_exp_cycles()),
        equal=mismatch is None,
        python_equal=first_mismatch(py_got, want) is None,
        mismatch=mismatch,
    )


def _split_so(rtlsim_so: str) -> tuple[Path, Path]:
    parts = Path(rtlsim_so).parts
    at = parts.index("xsim.dir")
    return Path(*parts[:at]), Path(*parts[at:])


def rtl_nodes(model) -> list:
    """The ``*_rtl`` nodes of a HW graph, in graph order."""
    return [n for n in model.graph.node if n.op_type.endswith("_rtl")]


def verify_rtl_nodes(
    source: str | Path,
    inputs: Mapping[str, np.ndarray] | np.ndarray,
    *,
    nodes: list[str] | None = None,
    cache: Path | None = None,
    work_dir: Path | None = None,
    progress: Callable[[NodeResult], None] | None = None,
) -> list[NodeResult]:
    """Run every RTL node of a folded build on Verilator and compare it with the simulator.

    ``inputs``: tensor name -> value (finn's normal shapes, simulator layouts) holding each RTL
    node's input and output tensor, e.g. :func:`~.tensors.simulator_tensors`; or a uint8 tile
    (H, W, 3), whose tensors are then computed with the build's package. ``nodes`` limits the
    run to these node names. ``cache``: Verilator build cache (default
    ``~/.cache/fcnseg/verilator``); ``work_dir``: generated RTL per node (default: a temporary
    folder). Needs finn-plus and Verilator (one-line errors without them).

    This is finn's own ``rtlsim`` path (finn's Python word packing, one node at a time); ``fcnseg
    verify`` (:mod:`.run`) is the fast, chained verification of every node.
    """
    from fcnseg.hw.compat import prepare_finn
    from fcnseg.hw.verify.verilator import installed
    from fcnseg.hw.verify.verilator_build import verilator_root

    verilator_root()  # fail before any code generation when Verilator is missing
    target = resolve_target(source)
    if isinstance(inputs, np.ndarray):
        inputs = _tile_tensors(target, inputs)
    with tempfile.TemporaryDirectory(prefix="fcnseg-verify-") as scratch:
        prepare_finn()
        model = target.model()
        chosen = [n for n in rtl_nodes(model) if nodes is None or n.name in nodes]
        if nodes is not None and len(chosen) != len(set(nodes)):
            missing = sorted(set(nodes) - {n.name for n in chosen})
            raise UserError(f"no RTL node named {', '.join(missing)} in {target.source}")
        work = Path(work_dir) if work_dir else Path(scratch) / "rtl"
        results = []
        with installed(cache):
            for node in chosen:
                result = verify_node(model, node, inputs, target, work)
                results.append(result)
                if progress:
                    progress(result)
        return results


def _tile_tensors(target: Target, tile: np.ndarray) -> dict[str, np.ndarray]:
    from fcnseg.host.package import load_package

    return simulator_tensors(load_package(target.package_dir), tile)
