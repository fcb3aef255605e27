"""``fcnseg compile --frame``: candidates, the search's numbers re-derived independently, the
options honoured, the Pool bound counted, the winner compiled to the predicted figures, and bad
input refused in one line (tiny FCN-8s; the shipped net only in a ``slow`` test)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fcnseg.cli import main
from fcnseg.errors import UserError
from fcnseg.host.card import ModelCard
from fcnseg.host.tiling import Geometry, plan_axis, plan_tiles

FRAME = (256, 384)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(exports, tmp_path_factory: pytest.TempPathFactory):
    """A tiny FCN-8s checkpoint, its export at 64x64 (naming it as source) and the flow up to
    SpecializeLayers once."""
    from qonnx.core.modelwrapper import ModelWrapper

    from fcnseg.hw.boards import get_board
    from fcnseg.hw.build import BuildOptions, specialise_export
    from fcnseg.quantize.export import export_checkpoint
    from fcnseg.quantize.models.io import save_checkpoint

    root = tmp_path_factory.mktemp("tile-search")
    model = exports["fcn8s"].model
    ckpt = save_checkpoint(root / "tiny.safetensors", model, model.cfg)
    export_checkpoint(ckpt, (64, 64), root / "export")
    opts = BuildOptions(root / "export", root / "spec", get_board("pynq-z2"), vivado=False)
    base = ModelWrapper(str(specialise_export(opts, progress=lambda message: None)))
    card = ModelCard.load(root / "export" / "model.json")
    return {"root": root, "ckpt": ckpt, "opts": opts, "base": base, "geometry": card.geometry()}


@pytest.fixture(scope="module")
def searched(tiny):
    from fcnseg.hw.tile_search import search

    scratch = tiny["root"] / "scratch"
    scratch.mkdir()
    runs = {}
    for objective in ("throughput", "latency"):
        runs[objective] = search(
            tiny["base"],
            tiny["opts"],
            tiny["geometry"],
            FRAME,
            objective=objective,
            limit=4,
            scratch=scratch,
        )
    return runs


def test_candidates_are_the_smallest_tile_per_count_on_each_axis(tiny):
    from fcnseg.hw.tile_search import axis_sizes, candidates

    geo = tiny["geometry"]
    g, ov = geo.net_stride, geo.default_overlap
    assert ov == 128 and g == 32  # the tiny net's receptive field 158 px
    for length in FRAME:
        sizes = axis_sizes(length, g, ov)
        counts = [len(plan_axis(length, t, g, g, min(ov, t - g)).starts) for t in sizes]
        assert len(set(counts)) == len(counts)  # one size per distinct tile count
        assert sizes[-1] == length and counts[-1] == 1
        for t, n in zip(sizes, counts, strict=True):
            assert t % g == 0 and (t > ov or t == length)
            smaller = t - g
            if smaller > ov:  # the next smaller size needs more tiles: t is the smallest
                assert len(plan_axis(length, smaller, g, g, ov).starts) > n
    plans = candidates(geo, FRAME, None)
    tiles = {p.tile for p in plans}
    assert any(h == w for h, w in tiles) and any(h != w for h, w in tiles)  # squares and strips
    assert [p.computed_px for p in plans] == sorted(p.computed_px for p in plans)
    for p in plans:
        plan = plan_tiles(Geometry(p.tile, 8, 32, 158), (256, 384))
        assert p.tiles_per_frame == len(plan.tiles) and p.exact and plan.exact


def test_one_row_rederived_from_the_tile_plan_and_the_throughput_model(tiny, searched):
    from fcnseg.host.backends.pynq import DEFAULT_BUFFER_LIMIT, DEFAULT_CALLS, DEFAULT_MAX_BATCH
    from fcnseg.hw.throughput import Fabric, Host, estimate

    result = searched["throughput"]
    row = result.winner
    assert row is not None and row.fits and row.evaluated
    th, tw = row.plan.tile
    plan = plan_tiles(Geometry((th, tw), 8, 32, 158), (256, 384))
    assert row.plan.tiles_per_frame == len(plan.tiles)
    assert row.plan.kept_share == pytest.approx(256 * 384 / (len(plan.tiles) * th * tw))
    # the pipeline by hand: 10 ns clock, finn's cycles, the IODMA's 64-bit port on pynq-z2
    est = row.estimate
    graph = tiny["base"]
    out_bits = graph.get_tensor_datatype(graph.graph.output[0].name).bitwidth()
    in_bytes = th * tw * 3  # UINT8 RGB
    out_bytes = math.ceil((th // 8) * (tw // 8) * 4 * out_bits / 8)  # 4 classes at stride 8
    dma = max(math.ceil(in_bytes * 8 / 64), math.ceil(out_bytes * 8 / 64))
    fabric = Fabric(1e8, est.max_cycles, est.critical_path_cycles, dma)
    batch = max(1, min(DEFAULT_MAX_BATCH, DEFAULT_BUFFER_LIMIT // (in_bytes + out_bytes)))
    # the pynq backend's default: DEFAULT_CALLS calls of as many tiles as its buffers hold
    host = Host(in_flight=DEFAULT_CALLS * batch, batch=batch, max_batch=batch)
    want = estimate(fabric, len(plan.tiles), host)
    assert row.in_flight == DEFAULT_CALLS * batch
    got = row.throughput["latency"]
    assert got["frames_per_s"] == pytest.approx(want["frames_per_s"], rel=1e-12)
    assert got["steady_tiles_per_s"] == pytest.approx(1e8 / max(est.max_cycles, dma), rel=1e-12)
    assert row.tiles_per_s == pytest.approx(got["steady_tiles_per_s"])
    # the table prints these numbers
    table = _table(result)
    line = next(line for line in table.splitlines() if line.strip().startswith(f"{th}x{tw} "))
    assert f"{row.tiles_per_s:.1f}" in line and f"{row.score('throughput'):.2f}" in line
    assert "<- chosen" in line and f"{row.plan.kept_share:.1%}" in line


def _table(result) -> str:
    from fcnseg.hw.tile_search import format_table

    return format_table(result)


def test_the_objective_picks_by_its_own_figure(searched):
    from fcnseg.hw.tile_search import Plan, Row, choose

    for objective, result in searched.items():
        fitting = [row for row in result.rows if row.fits]
        assert fitting
        assert result.winner.score(objective) == max(row.score(objective) for row in fitting)
    # where the two figures disagree, so do the choices
    a = Row(Plan((64, 64), 4, 0.5, 0, True), evaluated=True, fits=True)
    a.throughput = {"streaming": {"frames_per_s": 10.0, "one_frame_frames_per_s": 2.0}}
    b = Row(Plan((64, 128), 2, 0.5, 0, True), evaluated=True, fits=True)
    b.throughput = {"streaming": {"frames_per_s": 8.0, "one_frame_frames_per_s": 5.0}}
    c = Row(Plan((128, 128), 1, 1.0, 0, True), evaluated=True, fits=False)
    assert choose([a, b, c], "throughput") is a
    assert choose([a, b, c], "latency") is b
    assert choose([c], "throughput") is None


def test_overlap_is_honoured(tiny):
    from fcnseg.hw.tile_search import candidates, search

    default = {p.tile: p.tiles_per_frame for p in candidates(tiny["geometry"], FRAME, None)}
    small = candidates(tiny["geometry"], FRAME, 64)
    assert {p.tile for p in small} != set(default)
    for p in small:
        plan = plan_tiles(Geometry(p.tile, 8, 32, 158), (256, 384), 64)
        assert p.overlap == 64 and p.tiles_per_frame == len(plan.tiles)
        assert p.exact == plan.exact
    assert not all(p.exact for p in small)
    result = search(
        tiny["base"],
        tiny["opts"],
        tiny["geometry"],
        FRAME,
        overlap=64,
        limit=1,
        scratch=tiny["root"] / "scratch",
    )
    assert result.overlap == 64 and result.exact_overlap == 128
    assert "overlap 64 px" in _table(result)
    if not result.rows[0].plan.exact:
        assert any("not exact" in note for note in result.notes)


def test_layers_finn_leaves_at_zero_are_counted(tiny):
    from qonnx.custom_op.registry import getCustomOp

    from fcnseg.hw.fit import CONTROL_LUT
    from fcnseg.hw.retile import Retile
    from fcnseg.hw.tile_search import Evaluator

    evaluator = Evaluator(tiny["base"], tiny["opts"], tiny["root"] / "scratch")
    est = evaluator.estimate(tiny["base"].transform(Retile((128, 192))), 500)
    pools = [n for n in est.folded.graph.node if n.op_type == "Pool_hls"]
    assert len(pools) == 5
    for node in pools:
        op = getCustomOp(node)
        bits = 4  # the tiny net's UINT4 activations
        assert op.get_input_datatype().bitwidth() == bits
        assert est.fit.added[node.name] == {"LUT": 3 * bits * op.get_nodeattr("PE") + CONTROL_LUT}
    added = sum(v.get("LUT", 0.0) for v in est.fit.added.values())
    assert est.fit.used["LUT"] == est.finn_total["LUT"] + added
    assert "Pool_hls: 5 layers" in est.fit.added_note()
    ups = [n for n in est.folded.graph.node if n.op_type == "UpsampleNearestNeighbour_hls"]
    # the second upsampler holds its whole 8x12 input of 4 classes (one lane): 384 words, an
    # array of 512 (a power of two) x 8 bits = 4 kbit -> one BRAM18 (512x36 .. 2048x9 aspects)
    last = getCustomOp(ups[-1])
    assert (last.get_nodeattr("HI"), last.get_nodeattr("WI")) == (8, 12)
    assert last.get_nodeattr("SIMD") == 1 and last.get_input_datatype().bitwidth() == 8
    assert est.fit.added[ups[-1].name] == {"LUT": CONTROL_LUT, "BRAM_18K": 1.0}


def test_compile_for_frame_builds_the_winner_as_predicted(tiny, capsys):
    out = tiny["root"] / "build"
    argv = [
        "compile",
        str(tiny["root"] / "export"),
        "--board",
        "pynq-z2",
        "--frame",
        *map(str, FRAME),
    ]
    assert main([*argv, "--search-limit", "3", "--no-vivado", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "report" / "tile_search.json").read_text())
    assert record["check"]["equal"], record["check"]
    assert record["frame"] == list(FRAME) and len(record["candidates"]) > 3
    assert sum(c["evaluated"] for c in record["candidates"]) == 3
    winner = next(c for c in record["candidates"] if c["tile"] == record["winner"])
    card = json.loads((out / "export" / "model.json").read_text())
    assert card["tile"] == record["winner"]  # re-exported at the chosen tile
    summary = json.loads((out / "report" / "fcnseg_summary.json").read_text())
    assert summary["max_cycles"] == winner["max_cycles"]
    # the build's own frames/s (fcnseg.hw.info.frames on the fresh graph) equal the search's
    for model in ("latency", "streaming"):
        assert summary["frames"][model]["frames_per_s"] == pytest.approx(
            winner["throughput"][model]["frames_per_s"], rel=1e-12
        )
    assert summary["frames"]["tiles_per_frame"] == winner["tiles_per_frame"]
    assert "<- chosen" in printed and "Pool_hls: 5 layers" in printed
    assert (out / "package" / "accelerator.json").is_file()


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fcnseg: error: "), err
    return err[0]


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--frame", "0", "512"], "--frame must be two positive sizes"),
        (["--frame", "64", "64", "--overlap", "96"], "--overlap 96 px leaves no tile"),
        (["--frame", "256", "256", "--overlap", "-32"], "--overlap must be >= 0"),
        (["--frame", "256", "256", "--target-fps", "100"], "--frame chooses the folding"),
        (["--overlap", "64"], "--overlap and --checkpoint go with --frame"),
    ],
)
def test_bad_frame_options_are_one_line(tiny, tmp_path, capsys, extra, words):
    argv = ["compile", str(tiny["root"] / "export"), "--no-vivado", *extra, "-o", str(tmp_path)]
    assert words in _error(capsys, argv)
    assert not (tmp_path / "search").exists()  # refused before any finn work


def test_an_export_without_its_checkpoint_says_pass_checkpoint(exports, tmp_path, capsys):
    bare = exports["fcn32s"].dir  # exported from a module: no source checkpoint
    argv = ["compile", str(bare), "--frame", "256", "256", "-o", str(tmp_path / "b")]
    assert "pass --checkpoint" in _error(capsys, argv)


@pytest.mark.slow
def test_shipped_net_search_on_pynq_z2(tmp_path):
    """The shipped FCN-8s at 512x1024 on the Pynq-Z2: the search finds a fitting tile faster
    than the 256x256 package's 0.98 frames/s (steady) within minutes."""
    from qonnx.core.modelwrapper import ModelWrapper

    from fcnseg.hw.boards import get_board
    from fcnseg.hw.build import BuildOptions, specialise_export
    from fcnseg.hw.tile_search import search

    export = REPO / "models" / "default-fcn8s" / "export"
    opts = BuildOptions(export, tmp_path / "spec", get_board("pynq-z2"), vivado=False)
    base = ModelWrapper(str(specialise_export(opts, progress=lambda message: None)))
    geometry = ModelCard.load(export / "model.json").geometry()
    result = search(base, opts, geometry, (512, 1024), limit=6, scratch=tmp_path)
    assert result.winner is not None and result.winner.steady_frames_per_s > 10
    assert result.winner.estimate.fit.fits
    assert "Pool_hls: 5 layers" in result.winner.estimate.fit.added_note()
    with pytest.raises(UserError):
        search(base, opts, geometry, (512, 1024), objective="fastest", scratch=tmp_path)
