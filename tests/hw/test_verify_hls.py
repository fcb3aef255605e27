"""Generated HLS nodes in C++ simulation (finn's cppsim code built with g++) vs the simulator.

Each ``*_hls`` node of the tiny FCN-8s build is generated with finn-plus
(:func:`fcnseg.hw.verify.hls.generate_hls_node`), compiled against finn-hlslib and the ``ap_int``
headers, and run without finn on the simulator's input tensors of a real photo tile; its outputs
must equal the simulator's, in finn's stream layout, exactly. ``Pool_hls`` cannot be compiled
against the vendored finn-hlslib (older than the commit finn-plus pins) and must say so as
:class:`~fcnseg.hw.verify.node.LibraryMismatch`. Tests that compile need g++ and the libraries
and are skipped, with the reason, without them.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from fcnseg.errors import UserError

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
#: one node of every HLS kind the FCNs use (Pool_hls apart: it depends on the library version)
KINDS = ("MVAU_hls", "DuplicateStreams_hls", "UpsampleNearestNeighbour_hls", "ElementwiseAdd_hls")


def _missing_toolchain() -> str | None:
    from fcnseg.hw.verify.libraries import ap_int_headers, finn_hlslib

    if shutil.which("g++") is None:
        return "g++ is not installed (`apt-get install g++`)"
    try:
        finn_hlslib()
        ap_int_headers()
    except UserError as exc:
        return str(exc)
    return None


_MISSING = _missing_toolchain()
needs_toolchain = pytest.mark.skipif(_MISSING is not None, reason=f"cannot compile: {_MISSING}")


def _photo_tile(tile: tuple[int, int]) -> np.ndarray:
    """A real photo (scikit-image's astronaut, from samples/) cropped to the tile."""
    from PIL import Image

    img = np.asarray(Image.open(SAMPLES / "astronaut.jpg").convert("RGB"))
    return np.ascontiguousarray(img[40 : 40 + tile[0], 120 : 120 + tile[1]])


class Hls:
    """The tiny build's HW graph, the simulator's tensors on a photo tile, folders and a cache."""

    def __init__(self, build, root: Path) -> None:

        from fcnseg.host.package import load_package
        from fcnseg.hw.compat import prepare_finn
        from fcnseg.hw.verify.generate import resolve_target
        from fcnseg.hw.verify.tensors import simulator_tensors

        prepare_finn()
        self.target = resolve_target(build.out_dir)
        self.model = self.target.model()
        package = load_package(build.package_dir)
        self.tensors = simulator_tensors(package, _photo_tile(package.tile))
        self.root = root
        self.cache = root / "cache"

    def nodes(self, kind: str) -> list:
        return [n for n in self.model.graph.node if n.op_type == kind]

    def generate(self, node, folder: Path | None = None):
        from fcnseg.hw.verify.hls import generate_hls_node

        folder = folder or self.root / "nodes" / node.name
        return generate_hls_node(self.model, node, folder, self.target.fpgapart, self.target.clk_ns)

    def finn_layout(self, tensor: str) -> np.ndarray:
        """The simulator's tensor as the stream carries it (its producer decides the order)."""
        from qonnx.custom_op.registry import getCustomOp

        from fcnseg.hw.verify.tensors import to_finn_layout

        value = self.tensors[tensor].reshape(self.model.get_tensor_shape(tensor))
        producer = self.model.find_producer(tensor)
        if producer is None:
            return value
        inst = getCustomOp(producer)
        names = ("depthwise", "ConvKernelDim", "IFMChannels", "SIMD")
        attrs = {a: inst.get_nodeattr(a) for a in names if a in inst.get_nodeattr_types()}
        return to_finn_layout(attrs, producer.op_type, value).astype(np.int64)

    def inputs(self, generated) -> list[np.ndarray]:
        return [self.finn_layout(s.tensor) for s in generated.inputs]

    def check_exact(self, generated, outputs: list[np.ndarray]) -> None:
        assert len(outputs) == len(generated.outputs)
        for spec, got in zip(generated.outputs, outputs, strict=True):
            np.testing.assert_array_equal(got, self.finn_layout(spec.tensor), err_msg=spec.tensor)


@pytest.fixture(scope="session")
def hls(build_fcn8s, tmp_path_factory: pytest.TempPathFactory, hw_build_cache: Path) -> Hls:
    made = Hls(build_fcn8s, tmp_path_factory.mktemp("hls"))
    made.cache = hw_build_cache / "cppsim"
    return made


@needs_toolchain
def test_one_node_per_kind_is_exact_and_a_second_build_is_cached(hls):
    from fcnseg.hw.verify.hls import HlsRunner

    for kind in KINDS:
        node = hls.nodes(kind)[0]
        generated = hls.generate(node)
        runner = HlsRunner(hls.root / "nodes" / node.name, cache=hls.cache)
        first = runner.build()
        result = runner.run(hls.inputs(generated))
        hls.check_exact(generated, result.outputs)
        assert result.cycles is None
        again = HlsRunner(hls.root / "nodes" / node.name, cache=hls.cache)
        started = time.perf_counter()
        second = again.build()
        assert second.cached and second.key == first.key
        assert time.perf_counter() - started < 2


@needs_toolchain
def test_the_folder_is_relocatable_and_self_contained(hls, tmp_path):
    from fcnseg.hw.verify.hls import HlsRunner

    node = hls.nodes("MVAU_hls")[-1]
    generated = hls.generate(node, tmp_path / "first")
    assert generated.static_inputs == {"in1": "input_1.npy"}  # internal_decoupled weights
    cpp = (tmp_path / "first" / generated.sources[0]).read_text()
    assert "fcnseg_npy2apintstream_repeated<" in cpp and '("input_1.npy", in1_V' in cpp
    node_json = json.loads((tmp_path / "first" / "node.json").read_text())
    assert node_json["library"]["finn-plus"] == "1.6.1"
    for rel in generated.sources:
        assert str(tmp_path) not in (tmp_path / "first" / rel).read_text(), rel
    first = HlsRunner(tmp_path / "first", cache=hls.cache)
    key = first.build().key
    want = first.run(hls.inputs(generated)).outputs
    shutil.copytree(tmp_path / "first", tmp_path / "elsewhere" / "moved")
    shutil.rmtree(tmp_path / "first")
    moved = HlsRunner(tmp_path / "elsewhere" / "moved", cache=hls.cache)
    info = moved.build()
    assert info.cached and info.key == key
    got = moved.run(hls.inputs(generated)).outputs
    np.testing.assert_array_equal(got[0], want[0])
    hls.check_exact(generated, got)


@needs_toolchain
def test_pool_reports_the_library_version_or_is_exact_with_the_pinned_one(hls):
    from fcnseg.hw.verify.hls import HlsRunner, LibraryMismatch
    from fcnseg.hw.verify.libraries import finn_hlslib

    node = hls.nodes("Pool_hls")[0]
    generated = hls.generate(node)
    runner = HlsRunner(hls.root / "nodes" / node.name, cache=hls.cache)
    library = finn_hlslib()
    if library.pinned:
        hls.check_exact(generated, runner.run(hls.inputs(generated)).outputs)
        return
    with pytest.raises(LibraryMismatch, match="not verified: library version") as info:
        runner.build()
    message = str(info.value)
    assert "\n" not in message and library.version in message and "error" in message
    started = time.perf_counter()  # the failure is recorded: no second compile
    with pytest.raises(LibraryMismatch, match="as recorded in"):
        HlsRunner(hls.root / "nodes" / node.name, cache=hls.cache).build()
    assert time.perf_counter() - started < 2


@needs_toolchain
def test_reading_past_the_end_of_a_stream_fails_loudly(hls, tmp_path):
    """Half the pixels an MVAU expects: its read of the empty input stream must stop the run."""
    from fcnseg.hw.verify.hls import HlsRunner
    from fcnseg.hw.verify.node import NODE_FILE

    node = hls.nodes("MVAU_hls")[-1]
    generated = hls.generate(node, tmp_path / "short")
    data = json.loads((tmp_path / "short" / NODE_FILE).read_text())
    spec = data["inputs"][0]
    rows = spec["normal_shape"][1]
    assert rows > 1 and spec["folded_shape"][1] == rows
    spec["normal_shape"][1] = spec["folded_shape"][1] = rows // 2
    (tmp_path / "short" / NODE_FILE).write_text(json.dumps(data))
    runner = HlsRunner(tmp_path / "short", cache=hls.cache)
    half = hls.inputs(generated)[0][:, : rows // 2]
    with pytest.raises(UserError, match=r"in0_V.*read while empty") as info:
        runner.run([half])
    assert "\n" not in str(info.value) and "log: " in str(info.value)


@needs_toolchain
@pytest.mark.slow  # 21 cold g++ builds (5 Pool_hls fail): 64 s measured on 2 shared cores
def test_every_hls_node_is_exact_on_a_photo_tile(hls):
    from fcnseg.hw.verify.hls import HlsRunner, LibraryMismatch
    from fcnseg.hw.verify.libraries import finn_hlslib

    pinned = finn_hlslib().pinned
    counts: dict[str, int] = {}
    for node in hls.model.graph.node:
        if not node.op_type.endswith("_hls"):
            continue
        generated = hls.generate(node)
        runner = HlsRunner(hls.root / "nodes" / node.name, cache=hls.cache)
        if node.op_type == "Pool_hls" and not pinned:
            with pytest.raises(LibraryMismatch):
                runner.build()
            continue
        hls.check_exact(generated, runner.run(hls.inputs(generated)).outputs)
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    assert counts == {
        "MVAU_hls": 10,
        "DuplicateStreams_hls": 2,
        "UpsampleNearestNeighbour_hls": 2,
        "ElementwiseAdd_hls": 2,
        **({"Pool_hls": 5} if pinned else {}),
    }


def test_npy_paths_become_file_names_and_nothing_else_names_the_folder(tmp_path):
    from fcnseg.hw.verify.hls import relocate_npy_paths

    folder = tmp_path / "MVAU_hls_0"
    source = (
        f'npy2apintstream<ap_uint<4>, ap_uint<4>, float>("{folder}/input_0.npy", in0_V);\n'
        f'apintstream2npy<ap_uint<8>, ap_int<8>, float>(out0_V, {{8}}, "{folder}/output_0.npy");\n'
    )
    assert relocate_npy_paths(source, folder) == (
        'npy2apintstream<ap_uint<4>, ap_uint<4>, float>("input_0.npy", in0_V);\n'
        'apintstream2npy<ap_uint<8>, ap_int<8>, float>(out0_V, {8}, "output_0.npy");\n'
    )
    with pytest.raises(UserError, match="outside an npy path"):
        relocate_npy_paths(f'#include "{folder}/params.h"\n// {folder}\n', folder)


def test_only_a_repeated_weight_feed_is_packed_once():
    from fcnseg.hw.verify.hls import pack_repeated_feeds_once

    source = (
        '#include "cnpy.h"\n#include "npy2apintstream.hpp"\n#include "bnn-library.h"\n'
        'npy2apintstream<ap_uint<108>, ap_uint<4>, float>("input_0.npy", in0_V, false);\n'
        'npy2apintstream<ap_uint<108>, ap_int<4>, float>("input_1.npy", in1_V, false, numReps);\n'
    )
    assert pack_repeated_feeds_once(source) == (
        '#include "cnpy.h"\n#include "npy2apintstream.hpp"\n#include "fcnseg_repeat_stream.hpp"\n'
        '#include "bnn-library.h"\n'
        'npy2apintstream<ap_uint<108>, ap_uint<4>, float>("input_0.npy", in0_V, false);\n'
        "fcnseg_npy2apintstream_repeated<ap_uint<108>, ap_int<4>, float>"
        '("input_1.npy", in1_V, false, numReps);\n'
    )
    plain = source.splitlines(keepends=True)
    assert pack_repeated_feeds_once("".join(plain[:4])) == "".join(plain[:4])


REPEAT_PROGRAM = r"""
#include <ap_int.h>
#include <cstdio>
#include "npy2apintstream.hpp"
#include "fcnseg_repeat_stream.hpp"

int main() {
  hls::stream<ap_uint<108>> finn("finn"), ours("ours");
  npy2apintstream<ap_uint<108>, ap_int<4>, float>("w.npy", finn, false, 3);
  fcnseg_npy2apintstream_repeated<ap_uint<108>, ap_int<4>, float>("w.npy", ours, false, 3);
  std::size_t n = 0;
  while (!finn.empty()) {
    if (ours.empty() || finn.read() != ours.read()) return 1;
    n++;
  }
  std::printf("%zu\n", n);
  return ours.empty() ? 0 : 2;
}
"""


@needs_toolchain
def test_the_weight_feed_packed_once_is_finns_stream_word_for_word(tmp_path):
    """finn-plus's npy2apintstream with numReps=3 and ours give the same words in order."""
    import subprocess

    from finn.templates import get_templates_folder

    from fcnseg.hw.verify.hls import HLS_INCLUDE, TEMPLATE_FILES, _compile_flags
    from fcnseg.hw.verify.libraries import ap_int_headers, finn_hlslib

    for name in TEMPLATE_FILES:
        shutil.copyfile(Path(get_templates_folder()) / "npy2stream" / name, tmp_path / name)
    (tmp_path / "probe.cpp").write_text(REPEAT_PROGRAM)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "w.npy", rng.integers(-8, 8, size=(5, 27)).astype(np.float32))
    flags = _compile_flags(tmp_path, [finn_hlslib(), ap_int_headers()])
    assert f"-I{HLS_INCLUDE}" in flags
    units = [str(tmp_path / "probe.cpp"), str(tmp_path / "cnpy.cpp")]
    subprocess.run(["g++", *flags, *units, "-o", str(tmp_path / "probe")], check=True)
    done = subprocess.run(
        [str(tmp_path / "probe")], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout) == (0, "15\n")


def test_missing_libraries_are_one_line_naming_what_to_do(monkeypatch, tmp_path):
    from fcnseg.hw.verify import libraries

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.delenv(libraries.HLSLIB_ENV, raising=False)
    monkeypatch.delenv("XILINX_HLS", raising=False)
    monkeypatch.delenv(libraries.AP_INT_ENV, raising=False)
    monkeypatch.setenv(libraries.VENDOR_ENV, str(empty))
    monkeypatch.setattr(libraries, "finn_deps_dir", lambda: empty / "deps")
    with pytest.raises(UserError, match=r"finn-hlslib is missing: run `finn deps update`") as info:
        libraries.finn_hlslib()
    assert "\n" not in str(info.value) and libraries.HLSLIB_ENV in str(info.value)
    with pytest.raises(UserError, match=r"ap_int\.h headers are missing: set XILINX_HLS"):
        libraries.ap_int_headers()
    monkeypatch.setenv(libraries.HLSLIB_ENV, str(empty))
    with pytest.raises(UserError, match=r"FCNSEG_FINN_HLSLIB=.* holds no finn-hlslib"):
        libraries.finn_hlslib()


def test_the_vendored_hlslib_is_not_the_pinned_one(monkeypatch):
    from fcnseg.hw.verify import hls, libraries

    vendor = libraries.vendor_dir()
    if vendor is None or not (vendor / "finn-hlslib" / "bnn-library.h").is_file():
        pytest.skip("no vendored finn-hlslib (../shared/vendor or FCNSEG_VENDOR)")
    monkeypatch.delenv(libraries.HLSLIB_ENV, raising=False)
    monkeypatch.setattr(libraries, "finn_deps_dir", lambda: None)
    lib = libraries.finn_hlslib()
    assert not lib.pinned and lib.origin in ("vendor", libraries.VENDOR_ENV)
    assert f"not the pinned {libraries.pinned_finn_hlslib()[:7]}" in lib.version
    assert hls._needs_unflatten_glue(lib)  # this copy lacks unflatten(): our glue supplies it


STAND_IN_PROGRAM = r"""
#include <ap_int.h>
#include <ap_axi_sdata.h>
#include <hls_math.h>
#include <hls_stream.h>
#include <hls_vector.h>
#include <cstring>
#include <cstdio>

int main(int argc, char **argv) {
  hls::stream<hls::vector<ap_int<4>, 2>> s("s");
  hls::vector<ap_int<4>, 2> v{ap_int<4>(-3), ap_int<4>(5)};
  s << v + v;
  hls::vector<ap_int<4>, 2> w;
  if (!s.read_nb(w) || w[0] != -6 || w[1] != -6 || s.read_nb(w)) return 1;
  half h = half(1.5f);
  if (float(h) != 1.5f || hls::sqrt(4.0) != 2.0) return 1;
  if (std::strcmp(argv[1], "empty") == 0) s.read();
  if (std::strcmp(argv[1], "leftover") == 0) s.write(v);
  std::puts("done");
  return 0;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
def test_the_stand_in_stream_fails_on_an_empty_read_and_on_leftovers(tmp_path):
    """Vitis's C simulation warns and returns a default value on an empty read; ours stops."""
    import subprocess

    from fcnseg.hw.verify.hls import CXX_FLAGS, HLS_INCLUDE
    from fcnseg.hw.verify.libraries import ap_int_headers

    try:
        ap_int = ap_int_headers()
    except UserError as exc:
        pytest.skip(str(exc))
    (tmp_path / "probe.cpp").write_text(STAND_IN_PROGRAM)
    exe = tmp_path / "probe"
    cmd = ["g++", *CXX_FLAGS, f"-I{HLS_INCLUDE}", f"-I{ap_int.path}", str(tmp_path / "probe.cpp")]
    subprocess.run([*cmd, "-o", str(exe)], check=True)

    def run(mode: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(exe), mode], capture_output=True, text=True, check=False)

    ok = run("ok")
    assert (ok.returncode, ok.stdout) == (0, "done\n")
    empty = run("empty")
    assert empty.returncode == 3 and "done" not in empty.stdout
    assert "hls::stream 's': read while empty" in empty.stderr
    leftover = run("leftover")
    assert leftover.returncode == 4
    assert "hls::stream 's': destroyed holding 1 unread values" in leftover.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_finn_deps_checkout_is_pinned_only_at_the_pinned_commit(monkeypatch, tmp_path):
    import subprocess

    from fcnseg.hw.verify import libraries

    checkout = tmp_path / "deps" / "finn-hlslib"
    checkout.mkdir(parents=True)
    (checkout / "bnn-library.h").write_text("// stand-in\n")
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    monkeypatch.delenv(libraries.HLSLIB_ENV, raising=False)
    monkeypatch.setattr(libraries, "finn_deps_dir", lambda: tmp_path / "deps")
    lib = libraries.finn_hlslib()
    assert (lib.path, lib.version, lib.pinned, lib.origin) == (checkout, head, False, "finn deps")
    monkeypatch.setattr(libraries, "pinned_finn_hlslib", lambda: head)
    assert libraries.finn_hlslib().pinned
