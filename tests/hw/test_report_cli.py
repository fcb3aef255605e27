"""Reports (JSON + table) in tiles/s, `fcnseg info`, headroom, the progress display and the Vivado
stop message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fcnseg.cli import main
from fcnseg.host.package import manifest_digest
from fcnseg.hw.boards import get_board
from fcnseg.hw.fit import Fit, check_fit, find_headroom
from fcnseg.hw.report import SUMMARY_JSON, SUMMARY_TXT, format_table, load_summary
from tests.helpers.files import read_json


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


def test_the_package_records_the_latency_counting_frames_info_prints(build_fcn8s, capsys):
    """The build's frames/s at the host's default depth (finn's latency per call, the batch limit
    of the package's io) are what `fcnseg info --frame` computes from the package, and they
    follow the model: the fabric from finn's cycles, the tile count from the tiling plan."""
    from fcnseg.host.package import load_package
    from fcnseg.hw.info import package_fabric, pynq_host
    from fcnseg.hw.throughput import estimate

    recorded = build_fcn8s.summary["frames"]
    package = load_package(build_fcn8s.package_dir)
    assert package.estimates["frames"] == json.loads(json.dumps(recorded))
    fabric = package_fabric(package)
    assert fabric is not None and fabric.interval_cycles == build_fcn8s.summary["max_cycles"]
    expected = estimate(fabric, recorded["tiles_per_frame"], pynq_host(package.meta["io"]))
    assert recorded["latency"] == pytest.approx(expected)
    assert recorded["latency"]["steady_frames_per_s"] == pytest.approx(recorded["frames_per_s"])
    frame = recorded["frame"]
    main(["info", str(build_fcn8s.package_dir), "--frame", *map(str, frame), "--json"])
    printed = json.loads(capsys.readouterr().out)["frames"]["latency"]
    assert printed == pytest.approx(recorded["latency"])
    # the row model's latency, from the package's layers and finn's per-layer cycles
    from fcnseg.hw.latency import package_streaming

    streamed = package_streaming(package).latency_cycles
    assert recorded["streaming"]["latency_ms"] == pytest.approx(streamed / fabric.clock_hz * 1e3)
    assert recorded["streaming"]["latency_ms"] < recorded["latency"]["latency_ms"]
    assert "tiles in flight" in (build_fcn8s.out_dir / "report" / SUMMARY_TXT).read_text()


def test_progress_lists_every_step_with_time_and_the_vivado_stop(build_fcn8s):
    from fcnseg.hw.steps import ESTIMATE_STEPS

    lines = build_fcn8s.messages
    for step in ESTIMATE_STEPS:
        assert any(
            step.rsplit(".", 1)[-1] in line and line.rstrip().endswith(" s") for line in lines
        )
    stop = [i for i, line in enumerate(lines) if "need Vivado" in line]
    assert len(stop) == 1 and "XILINX_VIVADO" in lines[stop[0]]
    steps_done = [i for i, line in enumerate(lines) if line.startswith("[")]
    assert stop[0] > max(steps_done) and lines[-1].startswith("deployment package: ")
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


SHIPPED = Path(__file__).resolve().parents[2] / "host" / "packages"


def test_info_on_the_shipped_package_speaks_tiles_and_frames(capsys):
    """The shipped packages predate UNITS and headroom: they load and print in tiles/s."""
    assert main(["info", str(SHIPPED / "fcn8s-pynq-z2")]) == 0
    text = capsys.readouterr().out
    assert "model    fcn8s, 7 classes: background, disc, square" in text
    assert "tile     256x256 px; net stride 32, output stride 8" in text
    assert "receptive field 182 px; exact overlap 192 px" in text
    assert "no bitfile (estimate-only build): runs on the simulator" in text
    assert "estimated 63.6 tiles/s of 256x256 px" in text and "1572864 cycles per tile" in text
    assert "512x1024 frames: 65 tiles of 256x256 (overlap 192 px, exact, keeps 12.3%" in text
    assert "-> 0.98 frames/s" in text and "FPS" not in text
    assert main(["info", str(SHIPPED / "fcn8s-pynq-z2"), "--frame", "480", "640", "--json"]) == 0
    frames = json.loads(capsys.readouterr().out)["frames"]
    assert frames["frame"] == [480, 640] and frames["tiles_per_frame"] == 5 * 7 and frames["exact"]
    assert frames["frames_per_s"] == pytest.approx(63.578287760416664 / 35)


def test_info_frame_must_be_positive(capsys):
    assert main(["info", str(SHIPPED / "fcn8s-zcu104"), "--frame", "0", "640"]) == 2
    assert "--frame must be positive" in capsys.readouterr().err


def test_info_imports_neither_finn_nor_onnx_nor_torch():
    """What a board has: `fcnseg info` on a package needs numpy (loader, tiling plan) only."""
    code = (
        "import sys; from fcnseg.cli import main; "
        f"rc = main(['info', {str(SHIPPED / 'fcn8s-pynq-z2')!r}]); "
        "heavy = [m for m in ('finn', 'qonnx', 'onnx', 'torch', 'brevitas') if m in sys.modules]; "
        "print(rc, heavy, file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stderr.strip().splitlines()[-1] == "0 []", result.stderr[-2000:]


def _refold_model(lut_per_tile_s: float, fixed: float, saturate: float = 1e9):
    """Fake re-folding: tiles/s = target (up to ``saturate``), LUT grows with the rate."""
    board = get_board("pynq-z2")

    def estimate(target: float) -> tuple[float, Fit]:
        rate = min(target, saturate)
        return rate, check_fit({"LUT": fixed + lut_per_tile_s * rate}, board, 0.1)

    return estimate


def test_headroom_finds_a_faster_fold_and_suggests_a_target_that_fits():
    estimate = _refold_model(150.0, 5_000.0)  # fits up to (47880 - 5000) / 150 = 285.9 tiles/s
    room = find_headroom(estimate, current_tiles_per_s=63.6)
    assert room is not None and room.fit.fits
    assert 285.9 / 1.06 <= room.tiles_per_s <= 285.9
    suggested = room.suggested_target()
    assert suggested <= room.tiles_per_s and estimate(suggested)[1].fits
    assert suggested == int(room.tiles_per_s // 10 * 10) and room.probes <= 10
    # no room: the first probe (1.2x) already does not fit
    assert find_headroom(_refold_model(700.0, 5_000.0), current_tiles_per_s=60.0) is None
    # saturating folding that fits everywhere: the rate it saturates at
    room = find_headroom(_refold_model(1.0, 5_000.0, saturate=1502.3), 63.6)
    assert room is not None and room.tiles_per_s == pytest.approx(1502.3)
    assert room.suggested_target() == 1500


def test_headroom_line_in_the_report():
    summary = load_summary(SHIPPED / "fcn8s-pynq-z2")
    room = find_headroom(_refold_model(150.0, 5_000.0), summary["estimated_fps"])
    text = format_table({**summary, "headroom": room.to_json()})
    line = [t for t in text.splitlines() if "faster fold" in t]
    assert len(line) == 1 and line[0].startswith("LUT 43%, BRAM_18K 29%: a faster fold fits")
    assert "(estimated, " in line[0] and f"try --target-fps {room.suggested_target()}" in line[0]
    bare = {k: v for k, v in summary.items() if k != "headroom"}  # a build without the check
    assert "headroom" not in format_table(bare) and "faster fold" not in format_table(bare)


def test_info_on_a_package_without_estimates_still_says_what_it_is(tmp_path, capsys):
    import shutil

    package = tmp_path / "noest"
    shutil.copytree(SHIPPED / "fcn8s-zcu104", package)
    meta = json.loads((package / "accelerator.json").read_text())
    del meta["estimates"]
    meta["manifest_sha256"] = manifest_digest(meta)
    (package / "accelerator.json").write_text(json.dumps(meta))
    assert main(["info", str(package)]) == 0
    text = capsys.readouterr().out
    assert "built for zcu104" in text and "exact overlap 192 px" in text
    assert "no finn estimates in this package" in text
