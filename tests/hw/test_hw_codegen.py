"""The before-Vivado part of finn-plus's ``step_generate_hardware``, run for real in CI.

``step_generate_hardware`` is ``step_hw_codegen`` (``PrepareIP``: the HLS C++ top and the Vitis
HLS TCL script of every HLS node, the filled finn-rtllib templates of every RTL node; pure
Python) then ``step_hw_ipgen`` (``HLSSynthIP``: runs Vitis HLS) and FIFO sizing. Here finn's own
``step_hw_codegen`` runs with a real ``DataflowBuildConfig`` (``fcnseg.hw.build.make_config``,
Vivado outputs on) on the folded tiny FCN-8s, and every node's generated code is checked to be
what Vitis/Vivado would be handed; then ``step_hw_ipgen`` must fail on its first HLS node with
finn's message about the missing tool, i.e. a user with Vivado starts from a flow that has run
up to the first call of a Xilinx tool.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("XILINX_VIVADO")),
    reason="with Vivado present, tests/hw/test_vivado.py runs the real step_generate_hardware",
)

#: finn's templates mark their holes ``$NAME$`` (templates.py, finn-rtllib ``*_template.v``)
_HOLE = re.compile(r"\$[A-Z][A-Z0-9_]*\$")
_ADD_FILES = re.compile(r"add_files -norecurse (\S+)")


@dataclasses.dataclass
class Codegen:
    model: object  # the model after step_hw_codegen
    names_before: list[str]
    cfg: object
    seconds: float


@pytest.fixture(scope="module")
def codegen(build_fcn8s, tmp_path_factory: pytest.TempPathFactory) -> Codegen:
    from fcnseg.hw.build import BuildOptions, make_config
    from fcnseg.hw.compat import prepare_finn
    from fcnseg.hw.verify.generate import FOLDED_MODEL, dataflow_child

    prepare_finn()
    from finn.builder.build_dataflow_steps import step_hw_codegen
    from qonnx.core.modelwrapper import ModelWrapper

    build = Path(build_fcn8s.out_dir)
    opts = BuildOptions.load(build / "fcnseg_build.json")
    out = tmp_path_factory.mktemp("codegen")
    cfg = make_config(
        dataclasses.replace(opts, out_dir=out), ["step_hw_codegen"], target_fps=None, vivado=True
    )
    model = dataflow_child(ModelWrapper(str(build / FOLDED_MODEL)))
    names = [n.name for n in model.graph.node]
    started = time.perf_counter()
    model = step_hw_codegen(model, cfg)
    return Codegen(model, names, cfg, time.perf_counter() - started)


def _nodes(codegen: Codegen):
    from qonnx.custom_op.registry import getCustomOp

    return [(n, getCustomOp(n)) for n in codegen.model.graph.node]


def _code_dir(inst) -> Path:
    folder = Path(inst.get_nodeattr("code_gen_dir_ipgen"))
    assert folder.is_dir(), f"{inst.onnx_node.name}: no generated code folder"
    return folder


def _no_holes(folder: Path) -> None:
    for path in folder.iterdir():
        if path.suffix in (".v", ".sv", ".cpp", ".h", ".hpp", ".tcl"):
            holes = _HOLE.findall(path.read_text())
            assert not holes, f"{path}: unfilled template holes {holes[:3]}"


def test_every_node_is_hls_or_rtl_and_keeps_its_name(codegen):
    kinds: dict[str, int] = {}
    for node, _ in _nodes(codegen):
        assert node.op_type.endswith(("_hls", "_rtl")), node.op_type
        kinds[node.op_type] = kinds.get(node.op_type, 0) + 1
    assert [n.name for n, _ in _nodes(codegen)] == codegen.names_before
    # the kinds the FCNs use (docs/hardware.md); the tiny FCN-8s has each of them
    assert set(kinds) == {
        "ConvolutionInputGenerator_rtl", "FMPadding_rtl", "Thresholding_rtl", "MVAU_hls",
        "Pool_hls", "DuplicateStreams_hls", "UpsampleNearestNeighbour_hls", "ElementwiseAdd_hls",
    }  # fmt: skip
    assert codegen.seconds < 30, f"code generation took {codegen.seconds:.1f} s"


def test_hls_nodes_get_the_top_and_the_vitis_script(codegen):
    """Per HLS node: ``top_<node>.cpp`` defining the node's function and
    ``hls_syn_<node>.tcl`` naming that file, the function as top, the part and the clock."""
    part, clk = codegen.cfg._resolve_fpga_part(), codegen.cfg._resolve_hls_clk_period()
    hls = [(n, i) for n, i in _nodes(codegen) if n.op_type.endswith("_hls")]
    assert hls
    for node, inst in hls:
        folder = _code_dir(inst)
        top = folder / f"top_{node.name}.cpp"
        tcl = folder / f"hls_syn_{node.name}.tcl"
        assert re.search(rf"\bvoid\s+{node.name}\s*\(", top.read_text()), top
        script = tcl.read_text()
        assert f'set config_hwsrcdir "{folder}"' in script
        assert f"add_files $config_hwsrcdir/{top.name} " in script
        assert f'set config_toplevelfxn "{node.name}"' in script
        assert f'set config_proj_part "{part}"' in script
        assert f"set config_clkperiod {float(clk)}" in script
        assert "csynth_design" in script and "export_design -format ip_catalog" in script
        for include in re.findall(r'#include "([^"]+)"', top.read_text()):
            # the node's own headers are generated beside the top; finn-hlslib's come from
            # config_bnnlibdir (FINN_DEPS)
            if include in ("thresh.h", "params.hpp"):
                assert (folder / include).is_file(), f"{top}: {include} not generated"
        _no_holes(folder)
        # what the block design will add around the IP (the MVAU's weight streamer) exists
        for path in _ADD_FILES.findall("\n".join(inst.code_generation_ipi())):
            assert Path(path).is_file(), f"{node.name}: {path}"


def test_rtl_nodes_get_the_filled_wrapper_naming_the_module(codegen):
    """Per RTL node: every file the block design adds exists, one generated file in the node's
    folder defines the module the design instantiates (the node's name), no template hole left."""
    rtl = [(n, i) for n, i in _nodes(codegen) if n.op_type.endswith("_rtl")]
    assert rtl
    for node, inst in rtl:
        folder = _code_dir(inst)
        ipi = "\n".join(inst.code_generation_ipi())
        top = inst.get_verilog_top_module_name()
        assert top == node.name
        assert f"create_bd_cell -type module -reference {top} {node.name}" in ipi
        files = [Path(p) for p in _ADD_FILES.findall(ipi)]
        assert files and all(p.is_file() for p in files), f"{node.name}: {files}"
        assert {str(p) for p in inst.get_rtl_file_list(abspath=True)} == {str(p) for p in files}
        wrappers = [
            p
            for p in files
            if p.parent == folder and re.search(rf"^\s*module\s+{top}\b", p.read_text(), re.M)
        ]
        assert len(wrappers) == 1, f"{node.name}: {wrappers}"
        _no_holes(folder)


def test_ip_generation_is_where_vitis_is_first_needed(codegen, monkeypatch, tmp_path):
    """``step_hw_ipgen`` on the generated code stops at its first HLS node, asking for the
    Xilinx tools: without ``XILINX_VIVADO``, and with an install that has no ``vitis_hls``."""
    from finn.builder.build_dataflow_steps import step_hw_ipgen
    from finn.util.exception import FINNUserError

    monkeypatch.delenv("XILINX_VIVADO", raising=False)
    with pytest.raises(FINNUserError, match=r"^XILINX_VIVADO was not set but is required\.$"):
        step_hw_ipgen(codegen.model, codegen.cfg)

    vivado = tmp_path / "Xilinx" / "Vivado" / "2024.2"
    (vivado / "bin").mkdir(parents=True)
    (vivado / "bin" / "vivado").write_text("#!/bin/sh\nexit 1\n")
    monkeypatch.setenv("XILINX_VIVADO", str(vivado))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("FINN_TOOL_DIR_OVERRIDE", raising=False)
    with pytest.raises(FINNUserError, match=r"^vitis_hls not found in PATH$"):
        step_hw_ipgen(codegen.model, codegen.cfg)
    first = next(i for n, i in _nodes(codegen) if n.op_type.endswith("_hls"))
    assert not (_code_dir(first) / "ipgen.sh").exists()  # nothing was handed to a tool yet


def test_our_preflight_names_finn_deps_before_the_vivado_steps():
    """With Vivado set but without ``finn deps update``, ``fcnseg compile`` stops before any
    step with one line (the HLS scripts above point at FINN_DEPS' finn-hlslib)."""
    from fcnseg.errors import UserError
    from fcnseg.hw.boards import get_board
    from fcnseg.hw.compat import check_finn_deps, finn_deps_dir

    if (finn_deps_dir() / "finn-hlslib" / "bnn-library.h").is_file():
        pytest.skip("finn deps are installed here (`finn deps update` ran)")
    with pytest.raises(UserError, match=r"finn-hlslib .*`finn deps update`"):
        check_finn_deps(get_board("pynq-z2"))
