"""The row-by-row streaming latency model (fcnseg.hw.latency) against hand-computed pipelines,
its bounds (finn's bottleneck below, finn's critical path above) and the skip-join buffers."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fcnseg.errors import UserError
from fcnseg.hw.latency import layer_cycles, package_streaming, streaming

SHIPPED = Path(__file__).resolve().parents[2] / "host" / "packages"


def _layer(name, kind, inputs, outputs, h_in, h_out, attributes=None, dtype="UINT4", **kw):
    ins = [inputs] if isinstance(inputs, str) else list(inputs)
    return {
        "kind": kind,
        "name": name,
        "inputs": ins,
        "outputs": [outputs],
        "attributes": attributes or {},
        "input_dtypes": [dtype] * len(ins),
        "input_shapes": [[1, h_in, 5, 2]] * len(ins),
        "output_shapes": [[1, h_out, 5, 2]],
        **kw,
    }


def test_two_row_wise_layers_overlap_row_by_row():
    # layer 1: 8 cycles over 4 rows -> rows done at 2, 4, 6, 8; layer 2: 1 cycle a row, each row
    # after its input row and its own previous row -> 3, 5, 7, 9 (finn's sum: 12)
    layers = [
        _layer("a", "MVAU", "x", "t", 4, 4),
        _layer("b", "Thresholding", "t", "y", 4, 4),
    ]
    s = streaming(layers, [8, 4])
    assert s.latency_cycles == 9 and s.finish_cycles == {"a": 8, "b": 9}


def test_a_window_waits_for_its_kernel_rows_and_padding_needs_none():
    # padding 1 row on top: output row 0 needs no input, row r needs input row r - 1
    # (clamped to the last row). 6 rows out at 1 cycle each, input rows ready at 10, 20, 30, 40.
    pad = _layer("p", "FMPadding", "t", "u", 4, 6, {"Padding": [1, 0, 1, 0]})
    feed = _layer("f", "MVAU", "x", "t", 4, 4)
    s = streaming([feed, pad], [40, 6])
    # feed rows: 10, 20, 30, 40; pad row 0: 1; row 1 (needs 0): 11; 2: 21; 3: 31; 4: 41;
    # row 5 (bottom padding, needs the last input row 3): 42
    assert s.finish_cycles["p"] == 42
    # a 3x3 window, stride 1 over the 6 padded rows: output row r needs input row r + 2
    win = _layer(
        "w", "ConvolutionInputGenerator", "u", "v", 6, 4,
        {"ConvKernelDim": [3, 3], "Stride": [1, 1], "Dilation": [1, 1]},
    )  # fmt: skip
    s = streaming([feed, pad, win], [40, 6, 4])
    # padded rows done at 1, 11, 21, 31, 41, 42 -> window rows: 22, 32, 42, 43
    assert s.finish_cycles["w"] == 43 and s.latency_cycles == 43


def test_upsampling_repeats_input_rows():
    feed = _layer("f", "MVAU", "x", "t", 2, 2)
    up = _layer("u", "UpsampleNearestNeighbour", "t", "y", 2, 4)
    # feed rows at 5, 10; upsampled rows (need 0, 0, 1, 1) at 6, 7, 11, 12
    assert streaming([feed, up], [10, 4]).latency_cycles == 12


def test_a_join_waits_for_its_slower_input():
    dup = _layer("d", "DuplicateStreams", "x", "s", 4, 4)
    dup["outputs"] = ["s0", "s1"]
    slow = _layer("slow", "MVAU", "s0", "a", 4, 4)
    add = _layer("j", "ElementwiseAdd", ["a", "s1"], "y", 4, 4)
    # s1 rows done at 1, 2, 3, 4; the slow branch at 11, 21, 31, 41; the join one cycle after
    assert streaming([dup, slow, add], [4, 40, 4]).latency_cycles == 42


def test_random_chains_lie_between_the_bottleneck_and_finns_critical_path():
    rng = random.Random(0)
    for _ in range(200):
        layers, cycles, h, t = [], [], rng.randint(1, 12), "x"
        for i in range(rng.randint(1, 6)):
            kind = rng.choice(["MVAU", "FMPadding", "ConvolutionInputGenerator", "Upsample"])
            if kind == "FMPadding":
                top = rng.randint(0, 2)
                h_out, attrs = h + top + rng.randint(0, 2), {"Padding": [top, 0, 0, 0]}
            elif kind == "ConvolutionInputGenerator" and h >= 2:
                k = rng.randint(1, min(3, h))
                s = rng.randint(1, 2)
                h_out = (h - k) // s + 1
                attrs = {"ConvKernelDim": [k, k], "Stride": [s, s], "Dilation": [1, 1]}
            elif kind == "Upsample":
                kind, h_out, attrs = "UpsampleNearestNeighbour", 2 * h, {}
            else:
                kind, h_out, attrs = "MVAU", h, {}
            layers.append(_layer(f"l{i}", kind, t, f"t{i}", h, h_out, attrs))
            cycles.append(rng.randint(1, 500))
            h, t = h_out, f"t{i}"
        s = streaming(layers, cycles, dma_cycles=rng.randint(0, 50))
        assert max(cycles) <= s.latency_cycles <= sum(cycles) + 50


@pytest.mark.parametrize("board", ["pynq-z2", "zcu104"])
def test_the_shipped_packages_stream_well_below_finns_critical_path(board):
    from fcnseg.host.package import load_package

    package = load_package(SHIPPED / f"fcn8s-{board}")
    est = package.estimates
    s = package_streaming(package)
    assert est["max_cycles"] <= s.latency_cycles < est["critical_path_cycles"]
    assert set(s.finish_cycles) == {layer.name for layer in package.layers}


def test_cycle_estimates_must_match_the_layers():
    layers = [_layer("MVAU_0", "MVAU", "x", "t", 4, 4), _layer("Pool_0", "Pool", "t", "y", 4, 4)]
    rows = [{"name": "MVAU_hls_0", "cycles": 7}, {"name": "Pool_hls_0", "cycles": 3}]
    assert layer_cycles(layers, rows) == [7, 3]
    with pytest.raises(UserError, match="no finn cycle estimate for layer Pool_0"):
        layer_cycles(layers, rows[:1])
    with pytest.raises(UserError, match="the package does not have"):
        layer_cycles(layers, [*rows, {"name": "MVAU_hls_1", "cycles": 1}])
