"""Shift-and-stitch equals the "à trous" net (last poolings stride 1, later layers dilated).

The reference is independent of the code under test: the same network evaluated once with its
last pooling(s) at stride 1 and the layers after them dilated (FCN §3.2). Two networks: the numpy
:class:`ToyEngine` (runs everywhere) and H1's Brevitas FCN-32s (``.venv`` only).

Border margin: a fine cell ``r`` (stride ``d = s / f``) sees the pixels ``[r d - rad, r d + s +
rad)`` with ``rad = (R - s) / 2`` (FCN-32s: the field is symmetric about the cell's own ``s``
pixels). A shifted pass moves the image ``i d < s`` pixels up, so its zero padding (at every
layer) sits at canvas rows ``< i d`` and its zero fill at rows ``>= Hc``; the à trous net's
padding sits at rows ``< 0`` and ``>= Hc``. Where the field stays inside ``[s, Hc)`` neither
network pads, the layers compute the same integers, and the two agree. So cells within
``margin = rad + s`` pixels of the canvas border are excluded, on all four sides (it covers the
``(f - 1) d < s`` of the top/left shift).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from fcnseg.host.shift_stitch import plan_shifts, shift_stitch, shifted
from fcnseg.host.tiling import make_canvas, plan_tiles, run_tiled
from tests.helpers.images import image
from tests.helpers.toy_engine import ToyEngine, act, conv


def _pool_stride1(x: np.ndarray, dilation: int) -> np.ndarray:
    """2x2 max-pool with stride 1 and the given dilation, no padding (NHWC)."""
    x = np.maximum(x[:, :-dilation], x[:, dilation:])
    return np.maximum(x[:, :, :-dilation], x[:, :, dilation:])


def toy_atrous(toy: ToyEngine, x: np.ndarray, factor: int) -> np.ndarray:
    """The toy FCN-32s with its last log2(factor) pools at stride 1 and later layers dilated."""
    assert toy.arch == "fcn32s"
    n_trous = int(math.log2(factor))
    h = x.astype(np.int64)
    dilation = 1
    for i, (w, shift) in enumerate(zip(toy.convs, (6, 3, 3, 1, 1), strict=True)):
        h = act(conv(h, w, dilation), shift)
        if i < 5 - n_trous:
            h = h.reshape(h.shape[0], h.shape[1] // 2, 2, h.shape[2] // 2, 2, -1).max(axis=(2, 4))
        else:
            h = _pool_stride1(h, dilation)
            dilation *= 2
    h = act(conv(h, toy.head, dilation), 1)
    return conv(h, toy.score["fr"], dilation)


def interior(fine: np.ndarray, atrous: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop both maps to the cells at least ``margin`` cells from the fine map's border."""
    h, w = fine.shape[:2]
    assert atrous.shape[0] <= h and atrous.shape[1] <= w
    rows = slice(margin, h - margin)
    cols = slice(margin, w - margin)
    assert rows.stop > rows.start + 2 and cols.stop > cols.start + 2
    return fine[rows, cols], atrous[rows, cols]


def margin_cells(receptive_field: int, stride: int, factor: int) -> int:
    rad = (receptive_field - stride) / 2
    return math.ceil((rad + stride) / (stride // factor))


def test_shifted_copy() -> None:
    canvas = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    moved = shifted(canvas, 1, 2)
    np.testing.assert_array_equal(moved[:3, :3], canvas[1:, 2:])
    assert moved[3:].sum() == 0 and moved[:, 3:].sum() == 0
    assert shifted(canvas, 0, 0) is canvas


def test_plan() -> None:
    plan = plan_shifts(32, 4)
    assert plan.stride == 8 and plan.field == 32 and len(plan.shifts) == 16
    assert plan.shifts[5] == (8, 8) and plan.phases[5] == (1, 1)
    assert plan_shifts(32, 2) is plan_shifts(32, 2)
    with pytest.raises(ValueError, match="must divide"):
        plan_shifts(32, 3)


@pytest.mark.parametrize("factor", [2, 4])
def test_toy_shift_stitch_equals_atrous(factor: int) -> None:
    toy = ToyEngine("fcn32s", head_kernel=3)
    canvas = make_canvas(image(300, 330, seed=1), toy.geometry((128, 128)))
    fine = shift_stitch(plan_shifts(32, factor), lambda c: toy.run(c[None])[0], canvas)
    assert fine.shape[:2] == (canvas.shape[0] * factor // 32, canvas.shape[1] * factor // 32)
    atrous = toy_atrous(toy, canvas[None], factor)[0]
    m = margin_cells(toy.receptive_field, 32, factor)
    got, expect = interior(fine, atrous, m)
    assert np.unique(expect).size > 10
    np.testing.assert_array_equal(got, expect)


def test_toy_shift_stitch_through_tiles() -> None:
    """Each pass may be tiled: the tiled passes stitch to the same fine map."""
    toy = ToyEngine("fcn32s")
    geometry = toy.geometry((128, 128))
    canvas = make_canvas(image(200, 333, seed=2), geometry)
    tiles = plan_tiles(geometry, canvas.shape[:2])
    assert tiles.exact and len(tiles.tiles) > 1
    plan = plan_shifts(32, 2)
    tiled = shift_stitch(plan, lambda c: run_tiled(tiles, toy.run, c), canvas)
    once = shift_stitch(plan, lambda c: toy.run(c[None])[0], canvas)
    np.testing.assert_array_equal(tiled, once)
    np.testing.assert_array_equal(tiled[::2, ::2], toy.run(canvas[None])[0])


# --- the Brevitas FCN-32s (H1's models) -----------------------------------------------------


@pytest.fixture(scope="module")
def brevitas_net():
    torch = pytest.importorskip("torch")
    pytest.importorskip("brevitas")
    from fcnseg.quantize.models import ModelConfig, build_model, receptive_field

    torch.set_num_threads(1)
    cfg = ModelConfig(
        arch="fcn32s",
        num_classes=5,
        widths=(4, 6, 8, 8, 8),
        depths=(1, 1, 1, 1, 1),
        head_width=16,
        head_kernel=3,
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # non-trivial activations
            n = module.num_features
            module.running_mean.uniform_(-0.2, 0.2, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.uniform_(-0.1, 0.4, generator=generator)
            assert module.running_mean.shape == (n,)
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    return model, receptive_field(cfg)


class TorchEngine:
    """Engine interface over a Brevitas net: integer scores recovered from its float logits."""

    def __init__(self, model) -> None:
        self.model = model
        scale, bias = model.output_scale_bias()
        self.scale, self.bias = scale, bias

    def run(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            t = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))
            logits = self.model(t).double().numpy().transpose(0, 2, 3, 1)
        q = (logits - self.bias) / self.scale
        assert np.abs(q - np.round(q)).max() < 1e-2
        return np.round(q).astype(np.int64)


def brevitas_atrous(model, factor: int):
    """A copy with the last log2(factor) pools at stride 1 and the later layers dilated."""
    from torch import nn

    model = copy.deepcopy(model)
    stages = [model.features.stage4, model.features.stage5][2 - int(math.log2(factor)) :]
    dilation = 1
    for stage in stages:
        for name, module in stage.named_children():
            if name.startswith("pool"):
                setattr(stage, name, nn.MaxPool2d(2, stride=1, dilation=dilation))
            elif hasattr(module, "dilation"):
                module.dilation = (dilation, dilation)
                module.padding = (dilation * (module.kernel_size[0] // 2),) * 2
        dilation *= 2
    k = model.fc6.kernel_size[0]
    model.fc6.dilation = (dilation, dilation)
    model.fc6.padding = (dilation * (k // 2),) * 2
    return model


@pytest.mark.parametrize("factor", [2, 4])
def test_brevitas_shift_stitch_equals_atrous(brevitas_net, factor: int) -> None:
    model, receptive_field = brevitas_net
    engine = TorchEngine(model)
    canvas = np.ascontiguousarray(image(320, 384, seed=0))  # a real photo, multiple of 32
    fine = shift_stitch(plan_shifts(32, factor), lambda c: engine.run(c[None])[0], canvas)
    atrous = TorchEngine(brevitas_atrous(model, factor)).run(canvas[None])[0]
    m = margin_cells(receptive_field, 32, factor)
    got, expect = interior(fine, atrous, m)
    assert np.unique(expect).size > 10
    np.testing.assert_array_equal(got, expect)


# --- the product path: the simulator running a package built by the hw flow ------------------


@pytest.fixture(scope="module")
def built_fcn32s(tmp_path_factory: pytest.TempPathFactory):
    """A Brevitas FCN-32s converted by the hw flow into a package (H4's test builder) + its net.

    Its topology (one 3x3 conv per stage, 3x3 fc6) has R = 32 + 2 * (31 + 32) = 158.
    """
    pytest.importorskip("torch")
    pytest.importorskip("finn")
    from fcnseg.host.package import load_package
    from fcnseg.host.sim.engine import SimEngine
    from tests.helpers import sim_graph

    net, _, path = sim_graph.build("fcn32s", 4, 4, 8, 3, 0, tmp_path_factory.mktemp("fcn32s"))
    package = load_package(path)
    return sim_graph, net, package, SimEngine(package)


def graph_net_atrous(net, factor: int):
    """H4's test net (blocks of conv/BN/ReLU/pool, fc6 block) made à trous, on a copy."""
    from torch import nn

    net = copy.deepcopy(net)
    dilation = 1
    for block in list(net.blocks)[5 - int(math.log2(factor)) :]:
        conv = block[0]
        conv.dilation = (dilation, dilation)
        conv.padding = (dilation, dilation)
        block[3] = nn.MaxPool2d(2, stride=1, dilation=dilation)
        dilation *= 2
    net.fc6[0].dilation = (dilation, dilation)
    net.fc6[0].padding = (dilation, dilation)
    return net


@pytest.mark.slow
@pytest.mark.parametrize("factor", [2, 4])
def test_sim_package_shift_stitch_equals_brevitas_atrous(built_fcn32s, factor: int) -> None:
    graph, net, package, engine = built_fcn32s
    canvas = np.ascontiguousarray(image(256, 320, seed=2))
    fine = shift_stitch(plan_shifts(32, factor), lambda c: engine.run(c[None])[0], canvas)
    atrous = graph.brevitas_scores(graph_net_atrous(net, factor), package, canvas[None])[0]
    got, expect = interior(fine, atrous, margin_cells(158, 32, factor))
    assert np.unique(expect).size > 10
    np.testing.assert_array_equal(got, expect)
