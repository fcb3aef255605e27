"""Reports (JSON + table), `fcnseg info`, the progress display and the Vivado stop message."""

from __future__ import annotations

import json

import pytest

from fcnseg.cli import main
from fcnseg.hw.report import SUMMARY_JSON, SUMMARY_TXT, format_table, load_summary
from tests.hw.conftest import read_json


def test_summary_agrees_with_finn_reports(build_fcn8s):
    out = build_fcn8s.out_dir
    s = build_fcn8s.summary
    cycles = read_json(out / "report" / "estimate_layer_cycles.json")
    perf = read_json(out / "report" / "estimate_network_performance.json")
    assert [layer["name"] for layer in s["layers"]] == list(cycles)
    assert s["max_cycles"] == max(cycles.values()) == perf["max_cycles"]
    assert s["bottleneck"] == perf["max_cycles_node_name"] == max(cycles, key=cycles.get)
    assert s["estimated_fps"] == pytest.approx(1e9 / s["clock_ns"] / s["max_cycles"])
    assert s["estimated_fps"] == pytest.approx(perf["estimated_throughput_fps"])
    assert s["estimated_latency_ms"] == pytest.approx(perf["estimated_latency_ns"] * 1e-6)
    mvaus = [layer for layer in s["layers"] if layer["name"].startswith("MVAU")]
    assert mvaus and all(layer["PE"] >= 1 and layer["SIMD"] >= 1 for layer in mvaus)
    assert s["fit"]["fits"] and s["board"]["name"] == "pynq-z2"
    assert s["frames"]["tiles_per_frame"] >= 1
    assert s["frames"]["frames_per_s"] == pytest.approx(
        s["estimated_fps"] / s["frames"]["tiles_per_frame"]
    )
    assert read_json(out / "report" / SUMMARY_JSON) == json.loads(json.dumps(s))
    assert (out / "report" / SUMMARY_TXT).read_text().strip() == format_table(s).strip()


def test_progress_lists_every_step_with_time_and_the_vivado_stop(build_fcn8s):
    from fcnseg.hw.steps import ESTIMATE_STEPS

    lines = build_fcn8s.messages
    for step in ESTIMATE_STEPS:
        assert any(
            step.rsplit(".", 1)[-1] in line and line.rstrip().endswith(" s") for line in lines
        )
    assert "need Vivado" in lines[-2] and "XILINX_VIVADO" in lines[-2]
    log = (build_fcn8s.out_dir / "fcnseg_build.log").read_text()
    assert "step_fcn_streamline" in log and "finn build_dataflow.log" in log
    assert (build_fcn8s.out_dir / "intermediate_models" / "step_fcn_streamline.onnx").exists()
    assert sorted(build_fcn8s.step_seconds) == sorted(s.rsplit(".", 1)[-1] for s in ESTIMATE_STEPS)


def test_table_marks_the_bottleneck(build_fcn8s):
    table = format_table(build_fcn8s.summary)
    bottleneck = build_fcn8s.summary["bottleneck"]
    assert any(line.startswith(bottleneck) and "bottleneck" in line for line in table.splitlines())
    assert "tiles/s" in table and "cycles per tile" in table and "fits" in table
    assert "FPS" not in table  # the accelerator's rate counts tiles; frames only with a size


def test_info_reprints_build_and_package(build_fcn8s, capsys):
    out = build_fcn8s.out_dir
    for target in (out, out / "package"):
        assert main(["info", str(target)]) == 0
        text = capsys.readouterr().out
        assert format_table(build_fcn8s.summary).strip() in text  # 512x1024 frames by default
        assert f"package  {out / 'package'} (built for pynq-z2); no bitfile" in text
        assert "4 classes" in text and "tile     64x64 px; net stride 32, output stride 8" in text
    assert main(["info", "--json", str(out / "package")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["bottleneck"] == build_fcn8s.summary["bottleneck"]
    assert printed["units"]["estimated_fps"] == "tiles/s"
    assert printed["accelerator"]["tile"] == [64, 64] and printed["accelerator"]["bitfile"] is None
    assert load_summary(out / "package")["estimated_fps"] == build_fcn8s.summary["estimated_fps"]


def test_info_on_something_else_is_a_user_error(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 2
    assert "neither an fcnseg build folder nor a deployment package" in capsys.readouterr().err


def test_cli_build_and_folding_file_round_trip(build_fcn32s, exports, tmp_path):
    """`fcnseg compile --folding` with the auto folding of a --target-fps build gives the same
    per-layer folding and cycles."""
    first = load_summary(build_fcn32s)
    assert first["board"]["name"] == "zcu104" and first["target_fps"] == 500
    folding = build_fcn32s / "report" / "auto_folding_config.json"
    out = tmp_path / "again"
    argv = ["compile", str(exports["fcn32s"].dir), "--board", "zcu104", "--folding", str(folding)]
    assert main([*argv, "--no-vivado", "-o", str(out)]) == 0
    again = load_summary(out)
    assert again["folding_file"] == str(folding) and again["target_fps"] is None
    strip = [{k: v for k, v in layer.items()} for layer in first["layers"]]
    assert [layer for layer in again["layers"]] == strip
    assert again["max_cycles"] == first["max_cycles"]


def test_compile_rejects_bad_input(exports, tmp_path, capsys):
    assert main(["compile", str(tmp_path), "--board", "zcu104", "-o", str(tmp_path / "o")]) == 2
    assert "model.onnx not found" in capsys.readouterr().err
    argv = ["compile", str(exports["fcn32s"].dir), "--target-fps", "10", "--folding"]
    (tmp_path / "f.json").write_text("{}")
    assert main([*argv, str(tmp_path / "f.json"), "-o", str(tmp_path / "o")]) == 2
    assert "either --target-fps or --folding" in capsys.readouterr().err
