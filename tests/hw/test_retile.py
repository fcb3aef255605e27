"""``Retile`` equals the whole flow: one net exported at two tiles, both compiled up to
``step_specialize_layers``; the first retiled to the second's tile must equal the second in every
HW node attribute and tensor shape, and, folded the same way, in finn's per-node cycles and
resource estimates (the tile search trusts the retiled graph for exactly these numbers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fcnseg.errors import UserError

#: (first tile, second tile): a square retiled to a strip and a strip to a taller square
PAIRS = [((64, 64), (64, 128)), ((96, 64), (128, 128))]


def _specialised(export_dir: Path, out_dir: Path):
    from qonnx.core.modelwrapper import ModelWrapper

    from fcnseg.hw.boards import get_board
    from fcnseg.hw.build import BuildOptions, specialise_export

    opts = BuildOptions(export_dir, out_dir, get_board("pynq-z2"), vivado=False)
    return ModelWrapper(str(specialise_export(opts, progress=lambda message: None))), opts


@pytest.fixture(scope="module")
def flows(exports, tmp_path_factory: pytest.TempPathFactory):
    """``flows(arch, tiles)``: the session's tiny net of ``arch`` exported at each tile (the
    same weights and scales) and compiled up to SpecializeLayers, once per (arch, tile)."""
    from fcnseg.quantize.export import export_model

    root = tmp_path_factory.mktemp("retile")
    made: dict = {}

    def get(arch: str, tiles):
        out = {}
        for tile in tiles:
            key = (arch, tuple(tile))
            if key not in made:
                name = f"{arch}-{tile[0]}x{tile[1]}"
                export_model(exports[arch].model, {}, tuple(tile), root / name)
                made[key] = _specialised(root / name, root / f"build-{name}")
            out[tuple(tile)] = made[key]
        return out

    get.root = root
    return get


def _tensor_keys(model) -> dict[str, str]:
    """Tensor name -> a name-independent key (the flow gives tensors random names): its
    producer and output index, the graph input's index, or its consumer and input index."""
    keys = {t.name: f"input {k}" for k, t in enumerate(model.graph.input)}
    for node in model.graph.node:
        keys.update({t: f"{node.name} out {k}" for k, t in enumerate(node.output)})
    for node in model.graph.node:
        for k, t in enumerate(node.input):
            keys.setdefault(t, f"{node.name} in {k}")
    return keys


def _attributes(model) -> dict[str, dict]:
    from onnx import helper

    keys = _tensor_keys(model)
    out = {}
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: list(v) if isinstance(v, list | tuple) else v for k, v in attrs.items()}
        inputs = [keys[t] for t in node.input]
        out[node.name] = {"op_type": node.op_type, "inputs": inputs, **attrs}
    return out


def _shapes(model) -> dict[str, list[int]]:
    keys = _tensor_keys(model)
    names = [t.name for t in (*model.graph.input, *model.graph.output, *model.graph.value_info)]
    return {keys[name]: list(model.get_tensor_shape(name)) for name in names}


def _estimates(model, opts, scratch: Path) -> tuple[dict, dict, dict]:
    from finn.analysis.fpgadataflow.dataflow_performance import dataflow_performance
    from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
    from finn.analysis.fpgadataflow.res_estimation import res_estimation

    from fcnseg.hw.build import folding_of
    from fcnseg.hw.folding import refold

    scratch.mkdir(parents=True, exist_ok=True)
    folded = refold(model, opts, scratch, target_fps=2000)
    resources = folded.analysis(lambda m: res_estimation(m, fpgapart=opts.board.part))
    return (
        folded.analysis(exp_cycles_per_layer),
        {"resources": resources, "folding": folding_of(folded)},
        folded.analysis(dataflow_performance),
    )


@pytest.mark.parametrize("arch", ["fcn8s", "fcn32s"])
@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0][0]}x{p[0][1]}-to-{p[1][0]}x{p[1][1]}")
def test_retiled_graph_equals_the_fresh_flow(arch, pair, flows):
    from fcnseg.hw.retile import Retile, graph_tile

    first, second = pair
    built = flows(arch, pair)
    root = flows.root
    (model, opts), (fresh, _) = built[first], built[second]
    assert graph_tile(model) == first and graph_tile(fresh) == second
    retiled = model.transform(Retile(second))
    assert graph_tile(retiled) == second
    want, got = _attributes(fresh), _attributes(retiled)
    assert list(got) == list(want)
    for name in want:
        assert got[name] == want[name], name
    assert _shapes(retiled) == _shapes(fresh)
    mine = _estimates(retiled, opts, root / f"s-{arch}-{first}-r")
    theirs = _estimates(fresh, opts, root / f"s-{arch}-{first}-f")
    assert mine[0] == theirs[0]  # cycles per node
    assert mine[1] == theirs[1]  # resources and folding per node
    assert mine[2] == theirs[2]  # max cycles, critical path
    assert mine[2]["max_cycles"] > 0


def test_retile_back_and_forth_is_identity(flows):
    from fcnseg.hw.retile import Retile

    model, _ = flows("fcn8s", PAIRS[0][:1])[PAIRS[0][0]]
    there_and_back = model.transform(Retile((256, 512))).transform(Retile(PAIRS[0][0]))
    assert _attributes(there_and_back) == _attributes(model)
    assert _shapes(there_and_back) == _shapes(model)


@pytest.mark.parametrize(
    "tile, words",
    [
        ((64, 80), "not a whole number of windows"),  # 80 is not a multiple of the net stride 32
        ((48, 64), "not a whole number of windows"),
        ((0, 64), "two positive sizes"),
    ],
)
def test_retile_refuses_tiles_the_net_cannot_take(flows, tile, words):
    from fcnseg.hw.retile import Retile

    model, _ = flows("fcn8s", PAIRS[0][:1])[PAIRS[0][0]]
    with pytest.raises(UserError, match=words):
        model.transform(Retile(tile))


def test_retile_refuses_an_op_without_a_rule(flows):
    from fcnseg.hw.retile import Retile

    model, _ = flows("fcn32s", PAIRS[0][:1])[PAIRS[0][0]]
    broken = model.transform(Retile(PAIRS[0][0]))
    node = next(n for n in broken.graph.node if n.op_type.startswith("Pool"))
    node.op_type = "Pool_unknown_hls"
    with pytest.raises(UserError, match="no shape rule for Pool_unknown_hls"):
        broken.transform(Retile((64, 128)))
