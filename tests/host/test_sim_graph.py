"""Whole-graph exactness: SimEngine on a package == finn-plus execute_onnx == Brevitas.

Small Brevitas FCN-32s/FCN-8s nets (random weights, non-trivial batch norms) are exported to
QONNX, converted with the hw flow's steps (streamline -> cut the float tail -> HW layers), written
as a package by :func:`fcnseg.hw.to_package.build_package`, loaded and run by the simulator.
Exact integer equality is checked on real scikit-image photos against

- finn-plus ``execute_onnx`` on the HW graph (the graph before SpecializeLayers), and
- the Brevitas forward, as ``(logits - bias) / scale`` (float, so compared after rounding, with
  the rounding error itself bounded far below 0.5),

for several bit widths, and on input sizes other than the tile (Brevitas is size-agnostic).
Needs torch, brevitas and finn: skipped in the board environment. Built graphs are cached per
session.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("brevitas")
pytest.importorskip("finn")

from fcnseg.host.package import load_package  # noqa: E402
from fcnseg.host.sim.engine import SimEngine  # noqa: E402
from tests.helpers.sim_graph import TILE, brevitas_scores, build  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee")


CONFIGS = {
    "fcn32s": ("fcn32s", 4, 4, 8, 3, 0),
    "fcn8s": ("fcn8s", 4, 4, 8, 3, 0),
    "fcn8s-w2a2": ("fcn8s", 2, 2, 6, 4, 1),
    "fcn32s-w3a3": ("fcn32s", 3, 3, 8, 5, 2),
    "fcn8s-w4a8": ("fcn8s", 4, 8, 4, 2, 3),
    "shipped-fcn8s": ("quantize:fcn8s", 4, 4, 8, 21, 4),
    # MVAUs without activation + standalone Thresholding layers (finn's RTL-friendly form)
    "fcn8s-standalone-w3a4": ("fcn8s", 3, 4, 6, 3, 5, True),
}


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    cache = {}
    torch.set_num_threads(1)

    def get(key):
        if key not in cache:
            conf = CONFIGS[key]
            cache[key] = build(*conf[:6], tmp_path_factory.mktemp(key), *conf[6:])
        return cache[key]

    return get


def photo(name: str, hw: tuple[int, int]) -> np.ndarray:
    """A real scikit-image photo resized to ``hw``: uint8 NHWC (1, H, W, 3)."""
    import skimage.data
    from skimage.transform import resize

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = resize(img[..., :3], hw, preserve_range=True, anti_aliasing=True)
    return np.round(img).astype(np.uint8)[None]


def finn_scores(model, x: np.ndarray) -> np.ndarray:
    from finn.core.onnx_exec import execute_onnx

    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    nchw = x.transpose(0, 3, 1, 2).astype(np.float32)
    return execute_onnx(model, {iname: nchw})[oname].astype(np.int64)


@pytest.mark.parametrize("key", list(CONFIGS))
def test_engine_equals_finn_and_brevitas_on_photos(built, key):
    net, model, pkg_path = built(key)
    pkg = load_package(pkg_path)
    eng = SimEngine(pkg)
    assert eng.output_stride == pkg.output_stride
    assert eng.net_stride == pkg.net_stride == 32
    assert not eng.output_may_wrap and not eng.acc_may_wrap
    x = np.concatenate([photo(name, TILE) for name in PHOTOS])
    y = eng.run(x)
    assert y.shape == (
        3,
        TILE[0] // eng.output_stride,
        TILE[1] // eng.output_stride,
        pkg.num_classes,
    )
    for i in range(len(PHOTOS)):
        ref = finn_scores(model, x[i : i + 1])
        assert np.array_equal(y[i : i + 1], ref), f"{key}: sim != finn on {PHOTOS[i]}"
    assert np.array_equal(y, brevitas_scores(net, pkg, x)), f"{key}: sim != Brevitas"
    assert len(np.unique(y)) > 3, "degenerate scores make the test meaningless"
    kinds = [layer.kind for layer in pkg.layers]
    if "standalone" in key:
        assert kinds.count("Thresholding") >= 6
        assert all(
            not any(k == "thresholds" for k in layer.arrays)
            for layer in pkg.layers
            if layer.kind == "MVAU"
        )


@pytest.mark.parametrize("key", ["fcn8s", "fcn32s-w3a3"])
@pytest.mark.parametrize("hw", [(96, 128), (32, 32), (160, 64)])
def test_engine_is_size_agnostic(built, key, hw):
    net, _, pkg_path = built(key)
    pkg = load_package(pkg_path)
    x = photo("coffee", hw)
    y = SimEngine(pkg).run(x)
    assert y.shape[1:3] == (hw[0] // pkg.output_stride, hw[1] // pkg.output_stride)
    assert np.array_equal(y, brevitas_scores(net, pkg, x))


def test_package_of_real_graph(built):
    """The package records what the host needs: io, folding, ordered HW layers, hashes."""
    _, model, pkg_path = built("fcn8s")
    pkg = load_package(pkg_path)
    kinds = {layer.kind for layer in pkg.layers}
    assert {
        "MVAU",
        "ConvolutionInputGenerator",
        "FMPadding",
        "Pool",
        "DuplicateStreams",
        "ElementwiseAdd",
        "UpsampleNearestNeighbour",
    } <= kinds
    assert pkg.input["dtype"] == "UINT8" and pkg.input["shape"] == [1, *TILE, 3]
    assert all("PE" in layer.folding for layer in pkg.layers if layer.kind == "MVAU")
    hw_nodes = [n.name for n in model.graph.node if n.domain.startswith("finn.custom_op")]
    assert [layer.name for layer in pkg.layers] == hw_nodes
    assert set(pkg.meta["files"]) == {"accelerator.npz", "hw_graph.onnx"}
    assert os.path.getsize(pkg_path / "accelerator.npz") > 0


def test_build_package_refuses_non_hw_nodes(built, tmp_path):
    """A float node between HW layers cannot run on the host: one-line UserError."""
    from onnx import helper

    from fcnseg.errors import UserError
    from fcnseg.hw.to_package import build_package

    _, model, _ = built("fcn32s")
    model = model.transform(_Identity())  # a deep copy
    nodes = model.graph.node
    k = next(i for i, n in enumerate(nodes) if n.op_type == "MVAU")
    mvau = nodes[k]
    mid = mvau.output[0] + "_float"
    for n in nodes:
        for j, t in enumerate(n.input):
            if t == mvau.output[0]:
                n.input[j] = mid
    model.set_initializer("half", np.array(0.5, dtype=np.float32))
    nodes.insert(k + 1, helper.make_node("Mul", [mvau.output[0], "half"], [mid], name="Mul_x"))
    with pytest.raises(UserError, match="Mul_x .Mul. between HW layers") as exc:
        build_package(
            model,
            tmp_path / "p",
            model_card={"classes": ["a"], "output_stride": 32},
            output_scale=[1.0],
        )
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "p").exists()


class _Identity:
    """A no-op qonnx transformation (``model.transform`` deep-copies the model)."""

    def apply(self, model):
        return model, False


@pytest.mark.parametrize("form", ["partition", "specialized"])
def test_package_from_partitioned_or_specialized_graph(built, tmp_path, form):
    """build_package follows a dataflow partition into its child graph, and reads specialized
    (``*_hls``/``*_rtl``) layers as their HW op: the same integers either way."""
    from finn.transformation.fpgadataflow.create_dataflow_partition import (
        CreateDataflowPartition,
    )
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    from fcnseg.hw.to_package import build_package

    _, model, pkg_path = built("fcn8s")
    if form == "partition":
        other = model.transform(CreateDataflowPartition(partition_model_dir=str(tmp_path / "p")))
        assert "StreamingDataflowPartition" in [n.op_type for n in other.graph.node]
    else:
        other = model.transform(SpecializeLayers("xc7z020clg400-1"))
        assert any(n.op_type.endswith("_rtl") for n in other.graph.node)
    card = load_package(pkg_path).model_card
    path = build_package(other, tmp_path / "pkg", model_card=card, output_scale=[1.0] * 3)
    x = photo("chelsea", TILE)
    assert np.array_equal(SimEngine(load_package(path)).run(x), finn_scores(model, x))
