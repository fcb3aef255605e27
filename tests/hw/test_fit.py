"""Board fit: budgets with a margin, the one-line error, and re-folding until the design fits."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fcnseg.errors import UserError
from fcnseg.hw.boards import get_board
from fcnseg.hw.fit import Fit, bisect_fps, check_fit, misfit_message
from tests.helpers.files import read_json


def test_check_fit_applies_the_margin():
    board = get_board("pynq-z2")
    used = {"LUT": 50_000, "BRAM_18K": 100, "URAM": 0, "DSP": 10}
    assert check_fit(used, board, margin=0.0).fits
    fit = check_fit(used, board, margin=0.1)  # 53200 * 0.9 = 47880 < 50000
    assert not fit.fits
    assert set(fit.over) == {"LUT"}
    assert fit.over["LUT"] == (50_000, pytest.approx(47_880))
    with pytest.raises(UserError):
        check_fit(used, board, margin=1.0)


def test_uram_on_a_board_without_uram_does_not_fit():
    fit = check_fit({"LUT": 1, "URAM": 1}, get_board("pynq-z2"), margin=0.1)
    assert set(fit.over) == {"URAM"}


def test_misfit_message_names_the_resource_and_the_biggest_layer():
    board = get_board("pynq-z2")
    layers = {
        "MVAU_hls_0": {"LUT": 3000, "BRAM_18K": 200},
        "MVAU_hls_1": {"LUT": 1000, "BRAM_18K": 150},
        "total": {"LUT": 4000, "BRAM_18K": 350},
    }
    message = misfit_message(check_fit(layers["total"], board, 0.1), layers, board)
    assert "\n" not in message
    assert "BRAM_18K 350 > budget 252" in message
    assert "MVAU_hls_0" in message


def _fake_estimator(lut_per_fps: float, fixed: float, board, margin: float):
    """Resources grow with the target; estimated fps is the target rounded down to 1/8."""

    def estimate(target):
        fps = max(1.0, target * 0.875)
        return fps, check_fit({"LUT": fixed + lut_per_fps * target}, board, margin)

    return estimate


def test_bisect_finds_the_fastest_folding_that_fits():
    board = get_board("pynq-z2")
    budget = board.lut * 0.9
    estimate = _fake_estimator(100.0, 5_000.0, board, 0.1)  # fits up to (47880-5000)/100 = 428.8
    best, probes = bisect_fps(estimate, high_fps=2_000)
    assert best is not None and best.fit.fits
    assert 5_000 + 100 * best.target_fps <= budget
    assert best.target_fps > 428.8 / 1.06  # within the 5% tolerance of the limit
    assert len(probes) <= 12


def test_bisect_reports_when_nothing_fits():
    board = get_board("pynq-z2")
    best, probes = bisect_fps(_fake_estimator(1.0, 1e6, board, 0.1), high_fps=100)
    assert best is None and len(probes) == 1 and isinstance(probes[0].fit, Fit)


def test_refold_in_a_real_build_reaches_a_fitting_lower_fps(build_fcn8s, exports, tmp_path):
    """A board whose LUT budget lies between the minimum folding and the requested one: the
    build re-folds lower, fits, and reports the FPS it reached."""
    from fcnseg.hw.build import BuildOptions, _intermediate, compile_export
    from fcnseg.hw.folding import estimator

    first = build_fcn8s.summary
    board = get_board("pynq-z2")
    opts = BuildOptions(exports["fcn8s"].dir, build_fcn8s.out_dir, board, target_fps=4000)
    spec = _intermediate(build_fcn8s.out_dir, "step_specialize_layers")
    low_fps, low_fit = estimator(spec, opts, tmp_path)(1.0)
    lut_min, lut_max = low_fit.used["LUT"], first["total"]["LUT"]
    assert lut_max > lut_min * 1.1, "the session build should be folded well above the minimum"
    small = replace(board, name="pynq-z2-small", lut=int((lut_min + lut_max) / 2 / 0.9))
    messages: list[str] = []
    result = compile_export(
        BuildOptions(exports["fcn8s"].dir, tmp_path / "b", small, target_fps=4000, vivado=False),
        progress=messages.append,
    )
    s = result.summary
    assert s["fit"]["fits"] and s["total"]["LUT"] <= small.lut * 0.9
    assert s["refold"]["requested_fps"] == 4000
    assert low_fps <= s["estimated_fps"] < first["estimated_fps"]
    assert s["refold"]["reached_fps"] == pytest.approx(s["estimated_fps"], rel=1e-6)
    assert any("re-folding" in m for m in messages)
    # the reports on disk are the re-folded ones
    assert read_json(result.out_dir / "report" / "estimate_layer_resources.json")["total"][
        "LUT"
    ] == pytest.approx(s["total"]["LUT"])


def test_folding_file_that_does_not_fit_is_a_one_line_error(build_fcn8s, exports, tmp_path):
    from fcnseg.hw.build import BuildOptions, compile_export

    folding = build_fcn8s.out_dir / "report" / "auto_folding_config.json"
    tiny = replace(get_board("pynq-z2"), name="tiny", lut=1000)
    with pytest.raises(UserError) as info:
        compile_export(
            BuildOptions(exports["fcn8s"].dir, tmp_path, tiny, folding_file=folding, vivado=False),
            progress=lambda m: None,
        )
    message = str(info.value)
    assert "\n" not in message and "LUT" in message and "does not fit tiny" in message


def test_bram18_is_finns_formula():
    from finn.custom_op.fpgadataflow.elementwise_binary import ElementwiseBinaryOperation

    from fcnseg.hw.fit import bram18

    for width in (1, 2, 3, 4, 5, 8, 9, 12, 18, 19, 36, 56, 64):
        for depth in (1, 64, 512, 513, 1024, 2048, 4096, 16384, 65536):
            assert bram18(width, depth) == ElementwiseBinaryOperation._bram18_estimation(
                width, depth
            ), (width, depth)


def test_added_resources_count_in_the_fit_and_are_named():
    board = get_board("pynq-z2")
    totals = {"LUT": 40_000, "BRAM_18K": 240}
    assert check_fit(totals, board, 0.1).fits  # 252 BRAM budget
    added = {"Pool_hls_0": {"LUT": 92.0}, "UpsampleNearestNeighbour_hls_1": {"BRAM_18K": 16.0}}
    fit = check_fit(totals, board, 0.1, added)
    assert not fit.fits and set(fit.over) == {"BRAM_18K"}
    assert fit.used["BRAM_18K"] == 256 and fit.used["LUT"] == 40_092
    note = fit.added_note()
    assert "Pool_hls: 1 layer, bound 92 LUT / 0 BRAM added" in note
    assert "UpsampleNearestNeighbour_hls: 1 layer, bound 0 LUT / 16 BRAM added" in note
    assert fit.to_json()["added"] == added
