"""One-line errors, never tracebacks, for what a new user gives `fcnseg compile`/`segment` wrongly.

Each test runs the command a user would type (``fcnseg.cli.main``, or a subprocess where the
environment must be fresh) and checks the exit status, the one line on stderr and that it came
before finn ran (the up-front checks take milliseconds; a finn build 20-75 s).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fcnseg.cli import main
from fcnseg.hw.boards import get_board
from fcnseg.hw.compat import missing_finn_deps

REPO = Path(__file__).resolve().parents[2]
SHIPPED_EXPORT = REPO / "models" / "default-fcn8s" / "export"
SHIPPED_PACKAGE = REPO / "host" / "packages" / "fcn8s-pynq-z2"


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fcnseg: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _compile(capsys, *argv: str | Path, out: Path) -> tuple[int, str, float]:
    started = time.perf_counter()
    code = main(["compile", *map(str, argv), "-o", str(out)])
    return code, _one_line_error(capsys), time.perf_counter() - started


def test_junk_onnx_is_refused_up_front(tmp_path, capsys):
    junk = tmp_path / "model.onnx"
    junk.write_bytes(bytes(range(256)) * 40)
    code, line, seconds = _compile(capsys, junk, out=tmp_path / "b")
    assert code == 2 and f"{junk} is not an ONNX model" in line and seconds < 10
    (tmp_path / "empty.onnx").write_bytes(b"")
    code, line, _ = _compile(capsys, tmp_path / "empty.onnx", out=tmp_path / "b")
    assert code == 2 and "is not an ONNX model (no graph nodes)" in line
    assert not (tmp_path / "b").exists()  # nothing was built


def test_float_onnx_is_not_qonnx(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), tmp_path / "float.onnx")
    code, line, _ = _compile(capsys, tmp_path / "float.onnx", out=tmp_path / "b")
    assert code == 2 and "is not a quantized QONNX model (no Quant nodes; ops Relu" in line
    assert "fcnseg export" in line


def test_qcdq_export_is_detected_before_finn(tmp_path, capsys):
    qcdq = SHIPPED_EXPORT / "model_qcdq.onnx"
    code, line, seconds = _compile(capsys, qcdq, out=tmp_path / "b")
    assert code == 2 and seconds < 10  # finn's streamlining would take 25 s to fail
    assert "is a QCDQ export" in line and "QuantizeLinear/DequantizeLinear" in line
    assert f"`fcnseg compile {SHIPPED_EXPORT}` uses {SHIPPED_EXPORT / 'model.onnx'}" in line
    # the same file copied over an export folder's model.onnx
    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(SHIPPED_EXPORT / "model.json", folder / "model.json")
    shutil.copy(qcdq, folder / "model.onnx")
    code, line, seconds = _compile(capsys, folder, out=tmp_path / "b")
    assert code == 2 and seconds < 10 and f"{folder / 'model.onnx'} is a QCDQ export" in line


def test_a_file_other_than_model_onnx_names_the_folder(tmp_path, capsys):
    code, line, _ = _compile(capsys, SHIPPED_EXPORT / "model.json", out=tmp_path / "b")
    assert code == 2 and "give the export folder" in line and str(SHIPPED_EXPORT) in line


def test_unknown_board_lists_the_boards(tmp_path, capsys):
    code, line, _ = _compile(capsys, SHIPPED_EXPORT, "--board", "ultra96", out=tmp_path / "b")
    assert code == 2
    assert "unknown board 'ultra96'; choose one of pynq-z2 (xc7z020clg400-1), zcu104" in line
    assert "kv260" in line


@pytest.mark.parametrize("make_root", ["missing", "no_bin"])
def test_malformed_xilinx_vivado(tmp_path, capsys, monkeypatch, make_root):
    root = tmp_path / "Vivado"
    if make_root == "no_bin":
        root.mkdir()
    monkeypatch.setenv("XILINX_VIVADO", str(root))
    code, line, seconds = _compile(capsys, SHIPPED_EXPORT, out=tmp_path / "b")
    assert code == 2 and seconds < 10
    what = "is no folder" if make_root == "missing" else "has no bin/vivado"
    assert f"XILINX_VIVADO={root} {what}" in line and "unset it" in line


def test_missing_finn_deps_are_named(tmp_path):
    deps = tmp_path / "deps"
    z2, zcu = get_board("pynq-z2"), get_board("zcu104")
    assert [m.split(" (")[0] for m in missing_finn_deps(z2, deps)] == [
        "finn-hlslib",
        "the pynq-z2 board files",
    ]
    (deps / "finn-hlslib").mkdir(parents=True)
    (deps / "finn-hlslib" / "bnn-library.h").write_text("// stand-in\n")
    assert missing_finn_deps(zcu, deps) == []  # ZCU104's board files ship with Vivado
    assert missing_finn_deps(z2, deps) == [f"the pynq-z2 board files ({deps}/board_files/pynq-z2)"]
    (deps / "board_files" / "pynq-z2").mkdir(parents=True)
    assert missing_finn_deps(z2, deps) == []


def test_compile_without_finn_deps_says_what_to_run(tmp_path):
    """With (a stand-in) Vivado set up and FINN_DEPS empty, the build stops before any step with
    one line naming `finn deps update` (fresh process: finn caches its settings)."""
    vivado = tmp_path / "Vivado"
    (vivado / "bin").mkdir(parents=True)
    (vivado / "bin" / "vivado").write_text("#!/bin/sh\nexit 1\n")
    (vivado / "bin" / "vivado").chmod(0o755)
    deps = tmp_path / "finn_deps"
    env = {k: v for k, v in os.environ.items() if k not in ("FINN_BUILD_DIR", "FINN_SETTINGS")}
    env.update(XILINX_VIVADO=str(vivado), FINN_DEPS=str(deps), HOME=str(tmp_path))
    argv = [sys.executable, "-m", "fcnseg.cli", "compile", str(SHIPPED_EXPORT)]
    argv += ["--board", "pynq-z2", "-o", str(tmp_path / "b")]
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - started
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "finn-hlslib" in lines[0] and "pynq-z2 board files" in lines[0]
    assert "`finn deps update`" in lines[0] and f"FINN_DEPS={deps}" in lines[0]
    assert not (tmp_path / "b").exists() and seconds < 60  # before the build folder is made
    # finn-hlslib in place, the Pynq-Z2 board files still missing: only those are named
    (deps / "finn-hlslib").mkdir(parents=True)
    (deps / "finn-hlslib" / "bnn-library.h").write_text("// stand-in\n")
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "finn-hlslib" not in result.stderr
    assert "the Vivado steps need the pynq-z2 board files" in result.stderr


def test_build_folder_given_as_package_names_its_package(tmp_path, capsys):
    build = tmp_path / "build" / "x"
    shutil.copytree(SHIPPED_PACKAGE, build / "package")
    code = main(
        ["segment", str(REPO / "samples"), "-o", str(tmp_path / "o"), "--package", str(build)]
    )
    line = _one_line_error(capsys)
    assert code == 2 and f"{build} is a build folder; its package is {build / 'package'}" in line
    assert main(["info", str(build)]) == 0  # info takes either
    assert "package  " + str(build / "package") in capsys.readouterr().out


def test_compile_export_api_refuses_a_qcdq_model_onnx(tmp_path):
    """The API checks the model too, before the build folder or finn."""
    from fcnseg.errors import UserError
    from fcnseg.hw.build import BuildOptions, compile_export

    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(SHIPPED_EXPORT / "model.json", folder / "model.json")
    shutil.copy(SHIPPED_EXPORT / "model_qcdq.onnx", folder / "model.onnx")
    opts = BuildOptions(export_dir=folder, out_dir=tmp_path / "b", board=get_board("kv260"))
    with pytest.raises(UserError, match="is a QCDQ export"):
        compile_export(opts, progress=lambda message: None)
    assert not (tmp_path / "b").exists()
