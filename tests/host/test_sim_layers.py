"""Each simulator layer against finn-plus's golden model (the custom op's ``execute_node``).

The finn half builds single-node graphs in the ``finn.custom_op.fpgadataflow`` domain, as finn's
own tests do, converts the node with :func:`fcnseg.hw.to_package.node_to_layer` (so the package
conversion is tested too) and compares exact integers. It needs finn and skips without it (the
board environment); the hand-computed cases at the end are numpy-only and run everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest

from fcnseg.errors import UserError
from fcnseg.host.package import Layer, parse_dtype
from fcnseg.host.sim.layers import OPS, MaxPoolDirect, ThresholdCounter
from fcnseg.host.sim.ranges import gemm_dtype, matmul_range

RNG = np.random.default_rng(1234)


def _rand(dt: str, shape) -> np.ndarray:
    lo, hi = parse_dtype(dt)
    return RNG.integers(lo, hi + 1, size=shape).astype(np.int64)


def _finn_node(op_type, attrs, inputs, inits, outputs):
    """Run one finn HW node with finn's execute_onnx; return (model, node, outputs)."""
    pytest.importorskip("finn")
    from finn.core.onnx_exec import execute_onnx
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    node = helper.make_node(
        op_type,
        [n for n, _, _ in inputs] + [n for n, _, _ in inits],
        [n for n, _, _ in outputs],
        domain="finn.custom_op.fpgadataflow",
        backend="fpgadataflow",
        name=f"{op_type}_0",
        **attrs,
    )
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        [node],
        "single",
        [vi(n, TensorProto.FLOAT, a.shape) for n, a, _ in inputs],
        [vi(n, TensorProto.FLOAT, s) for n, s, _ in outputs],
    )
    model = ModelWrapper(qonnx_make_model(graph, producer_name="fcnseg-test"))
    for n, _, dt in inputs + outputs:
        model.set_tensor_datatype(n, DataType[dt])
    for n, a, dt in inits:
        model.set_initializer(n, np.asarray(a, dtype=np.float32))
        if dt:
            model.set_tensor_datatype(n, DataType[dt])
    ctx = execute_onnx(model, {n: a.astype(np.float32) for n, a, _ in inputs})
    return model, node, [ctx[n] for n, _, _ in outputs]


def _sim(model, node, *xs):
    from fcnseg.hw.to_package import node_to_layer

    layer = node_to_layer(model, node, {})
    op = OPS[layer.kind](layer, [parse_dtype(dt) for dt in layer.input_dtypes])
    outs = op(*xs)
    for o, r in zip(outs, op.out_ranges, strict=True):
        assert o.dtype.kind in "iu"
        if o.size:
            assert r[0] <= o.min() and o.max() <= r[1], "value outside its proven range"
    return layer, outs


def _thresholds(rng_lo, rng_hi, channels, steps, half=True):
    t = RNG.integers(rng_lo, rng_hi + 1, size=(channels, steps)).astype(np.float64)
    if half:  # finn's streamlined thresholds are often x.5
        t[:, ::2] += 0.5
    return np.sort(t, axis=1)


@pytest.mark.parametrize("vecs", [[1, 5, 7], [6]])
@pytest.mark.parametrize(
    "idt,wdt", [("UINT4", "INT4"), ("UINT8", "INT4"), ("INT4", "INT2"), ("UINT2", "INT8")]
)
@pytest.mark.parametrize("act", ["none", "UINT4", "INT3", "UINT2"])
@pytest.mark.parametrize("mw,mh,pe,simd", [(27, 16, 4, 3), (72, 6, 1, 8)])
def test_mvau_equals_finn(vecs, idt, wdt, act, mw, mh, pe, simd):
    x = _rand(idt, (*vecs, mw))
    w = _rand(wdt, (mw, mh))
    (lo, hi), _ = matmul_range(parse_dtype(idt), w)
    attrs = dict(MW=mw, MH=mh, PE=pe, SIMD=simd, inputDataType=idt, weightDataType=wdt)
    attrs.update(numInputVectors=list(vecs))
    inits = [("w", w, wdt)]
    if act == "none":
        odt = "INT32"
        attrs.update(noActivation=1, outputDataType=odt)
    else:
        olo, ohi = parse_dtype(act)
        steps = ohi - olo
        # thresholds inside the reachable range, plus some outside it (clipped by the package)
        t = _thresholds(lo - 3, hi + 3, mh, steps)
        attrs.update(noActivation=0, outputDataType=act, ActVal=olo)
        inits.append(("t", t, None))
    model, node, (ref,) = _finn_node(
        "MVAU", attrs, [("x", x, idt)], inits, [("y", (*vecs, mh), odt if act == "none" else act)]
    )
    layer, (out,) = _sim(model, node, x)
    assert layer.folding["PE"] == pe and layer.folding["SIMD"] == simd
    assert np.array_equal(out.astype(np.int64), ref.astype(np.int64))


def test_mvau_int64_fallback_is_exact():
    """Beyond 2^53 partial sums the GEMM runs in int64 (finn's float32 model is not exact there)."""
    layer = Layer(
        kind="MVAU",
        name="big",
        inputs=("x",),
        outputs=("y",),
        attributes={"MW": 4, "MH": 2, "noActivation": 1},
        input_dtypes=("INT32",),
        output_dtypes=("INT64",),
        arrays={"weights": np.array([[2**30, -1], [2**30, 1], [2**30, 1], [-(2**30), 1]])},
    )
    op = OPS["MVAU"](layer, [parse_dtype("INT32")])
    assert op.gemm == np.dtype(np.int64)
    x = np.array([[2**31 - 1, -(2**31), 12345, -7]], dtype=np.int64)
    expect = x @ layer.arrays["weights"].astype(np.int64)
    assert np.array_equal(op(x)[0], expect)


@pytest.mark.parametrize("idt", ["INT8", "INT16", "UINT6"])
@pytest.mark.parametrize("odt,actval", [("UINT4", 0), ("INT4", -8), ("UINT1", 0), ("UINT8", 0)])
@pytest.mark.parametrize("channels,pe", [(6, 2), (1, 1)])
def test_thresholding_equals_finn(idt, odt, actval, channels, pe):
    lo, hi = parse_dtype(idt)
    olo, ohi = parse_dtype(odt)
    steps = ohi - olo
    x = _rand(idt, (2, 4, 5, channels))
    x[0, 0, 0, 0] = lo  # the extremes
    x[0, 0, 1, 0] = hi
    t = _thresholds(lo - 2, hi + 2, channels, steps)
    t[0, 0] = x[0, 0, 2, 0]  # ties: x >= T counts
    t = np.sort(t, axis=1)
    attrs = dict(
        NumChannels=channels,
        PE=pe,
        numSteps=steps,
        inputDataType=idt,
        weightDataType="INT32",
        outputDataType=odt,
        ActVal=actval,
        numInputVectors=[2, 4, 5],
    )
    model, node, (ref,) = _finn_node(
        "Thresholding", attrs, [("x", x, idt)], [("t", t, None)], [("y", x.shape, odt)]
    )
    _, (out,) = _sim(model, node, x)
    assert np.array_equal(out.astype(np.int64), ref.astype(np.int64))


@pytest.mark.parametrize("k,s,d", [(3, 1, 1), (2, 2, 1), (3, 2, 1), (1, 1, 1), (3, 1, 2)])
@pytest.mark.parametrize("dim", [(8, 8), (7, 10)])
@pytest.mark.parametrize("dt,ch,depthwise", [("UINT4", 3, 0), ("INT8", 5, 1)])
def test_sliding_window_equals_finn(k, s, d, dim, dt, ch, depthwise):
    x = _rand(dt, (1, *dim, ch))
    oh = (dim[0] - d * (k - 1) - 1) // s + 1
    ow = (dim[1] - d * (k - 1) - 1) // s + 1
    attrs = dict(
        ConvKernelDim=[k, k],
        IFMChannels=ch,
        IFMDim=list(dim),
        OFMDim=[oh, ow],
        SIMD=ch,
        Stride=[s, s],
        Dilation=[d, d],
        inputDataType=dt,
        outputDataType=dt,
        depthwise=depthwise,
    )
    model, node, (ref,) = _finn_node(
        "ConvolutionInputGenerator", attrs, [("x", x, dt)], [], [("y", (1, oh, ow, k * k * ch), dt)]
    )
    layer, (out,) = _sim(model, node, x)
    assert np.array_equal(out.astype(np.int64), ref.astype(np.int64))
    # size-agnostic: the same layer on a larger input equals finn's node built for that size
    big = _rand(dt, (2, dim[0] + 5, dim[1] + 3, ch))
    op = OPS[layer.kind](layer, [parse_dtype(dt)])
    (out_big,) = op(big)
    for n in range(2):
        oh2, ow2 = out_big.shape[1:3]
        attrs2 = dict(attrs, IFMDim=list(big.shape[1:3]), OFMDim=[oh2, ow2])
        _, _, (ref_big,) = _finn_node(
            "ConvolutionInputGenerator",
            attrs2,
            [("x", big[n : n + 1], dt)],
            [],
            [("y", (1, oh2, ow2, k * k * ch), dt)],
        )
        assert np.array_equal(out_big[n : n + 1].astype(np.int64), ref_big.astype(np.int64))


@pytest.mark.parametrize("pad", [[1, 1, 1, 1], [0, 1, 2, 0], [3, 0, 0, 2]])
@pytest.mark.parametrize("dt", ["UINT4", "INT8"])
def test_fmpadding_equals_finn(pad, dt):
    x = _rand(dt, (1, 5, 6, 4))
    attrs = dict(ImgDim=[5, 6], Padding=pad, NumChannels=4, SIMD=2, inputDataType=dt)
    oshape = (1, 5 + pad[0] + pad[2], 6 + pad[1] + pad[3], 4)
    model, node, (ref,) = _finn_node("FMPadding", attrs, [("x", x, dt)], [], [("y", oshape, dt)])
    _, (out,) = _sim(model, node, x)
    assert np.array_equal(out.astype(np.int64), ref.astype(np.int64))


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("dt", ["UINT4", "INT4", "UINT8"])
@pytest.mark.parametrize("fn", ["MaxPool", "AccPool"])
def test_pool_equals_finn(k, dt, fn):
    ch, od = 5, (3, 4)
    x = _rand(dt, (1, *od, k * k * ch))
    lo, hi = parse_dtype(dt)
    odt = dt if fn == "MaxPool" else "INT16"
    attrs = dict(
        Channels=ch,
        PE=ch,
        KernelSize=[k, k],
        Function=fn,
        OutImgDims=list(od),
        InputDataType=dt,
        OutputDataType=odt,
    )
    model, node, (ref,) = _finn_node("Pool", attrs, [("x", x, dt)], [], [("y", (1, *od, ch), odt)])
    _, (out,) = _sim(model, node, x)
    assert np.array_equal(out.astype(np.int64), ref.astype(np.int64))


@pytest.mark.parametrize("k,s", [(2, 2), (3, 2), (3, 1)])
def test_fused_maxpool_equals_window_then_pool(k, s):
    """The engine's fusion (window + MaxPool -> strided max) equals the two layers apart."""
    dt, ch = "INT4", 3
    x = _rand(dt, (2, 9, 8, ch))
    swg = OPS["ConvolutionInputGenerator"](
        Layer(
            "ConvolutionInputGenerator",
            "w",
            ("x",),
            ("p",),
            {"ConvKernelDim": [k, k], "Stride": [s, s], "Dilation": [1, 1]},
            (dt,),
            (dt,),
        ),
        [parse_dtype(dt)],
    )
    pool = OPS["Pool"](
        Layer(
            "Pool", "p", ("p",), ("y",), {"Function": "MaxPool", "KernelSize": [k, k]}, (dt,), (dt,)
        ),
        [parse_dtype(dt)],
    )
    (two,) = pool(*swg(x))
    (fused,) = MaxPoolDirect(swg, pool)(x)
    assert np.array_equal(two, fused)


@pytest.mark.parametrize("dt", ["INT8", "UINT4"])
def test_duplicate_streams_equals_finn(dt):
    x = _rand(dt, (1, 4, 4, 6))
    attrs = dict(
        NumChannels=6, PE=3, NumOutputStreams=2, inputDataType=dt, numInputVectors=[1, 4, 4]
    )
    model, node, refs = _finn_node(
        "DuplicateStreams", attrs, [("x", x, dt)], [], [("a", x.shape, dt), ("b", x.shape, dt)]
    )
    _, outs = _sim(model, node, x)
    for o, r in zip(outs, refs, strict=True):
        assert np.array_equal(o.astype(np.int64), r.astype(np.int64))


@pytest.mark.parametrize("op", ["ElementwiseAdd", "ElementwiseSub", "ElementwiseMax"])
@pytest.mark.parametrize("ldt,rdt", [("INT8", "INT8"), ("UINT4", "INT6"), ("INT16", "UINT8")])
@pytest.mark.parametrize("const", [False, True])
def test_elementwise_equals_finn(op, ldt, rdt, const):
    shape = (1, 3, 4, 5)
    a = _rand(ldt, shape)
    b = _rand(rdt, (1, 1, 1, 5) if const else shape)
    lo = [lo_a + s for lo_a, s in zip(parse_dtype(ldt), (-(2**17), 2**17), strict=True)]
    odt = "INT32" if lo else "INT32"
    attrs = dict(
        lhs_dtype=ldt,
        rhs_dtype=rdt,
        out_dtype=odt,
        lhs_shape=list(shape),
        rhs_shape=list(b.shape),
        out_shape=list(shape),
        rhs_style="const" if const else "input",
    )
    inputs = [("a", a, ldt)] + ([] if const else [("b", b, rdt)])
    inits = [("b", b, rdt)] if const else []
    model, node, (ref,) = _finn_node(op, attrs, inputs, inits, [("y", shape, odt)])
    _, (out,) = _sim(model, node, *([a] if const else [a, b]))
    assert np.array_equal(out.astype(np.int64), ref.astype(np.int64))


@pytest.mark.parametrize("f", [2, 3, 4])
@pytest.mark.parametrize("dim", [(3, 3), (2, 5)])
def test_upsample_equals_finn(f, dim):
    dt, ch = "INT5", 3
    x = _rand(dt, (1, *dim, ch))
    ho, wo = dim[0] * f, dim[1] * f
    attrs = dict(SIMD=ch, HO=ho, WO=wo, HI=dim[0], WI=dim[1], NumChannels=ch, inputDataType=dt)
    model, node, (ref,) = _finn_node(
        "UpsampleNearestNeighbour", attrs, [("x", x, dt)], [], [("y", (1, ho, wo, ch), dt)]
    )
    _, (out,) = _sim(model, node, x)
    assert np.array_equal(out.astype(np.int64), ref.astype(np.int64))


# ---- numpy-only: hand-computed cases (run in the board environment too) ----


def test_threshold_counter_hand_computed():
    t = np.array([[0, 2, 5], [-1, -1, 3]])
    x = np.array([[-3, -3], [0, -1], [2, 2], [5, 3], [9, 9]])
    for lut in (True, False):
        tc = ThresholdCounter(t, 2, (-3, 9), bias=-1)
        if not lut:  # force the searchsorted path
            tc2 = ThresholdCounter.__new__(ThresholdCounter)
            import fcnseg.host.sim.layers as layers

            old = layers.LUT_MAX_ENTRIES
            layers.LUT_MAX_ENTRIES = 0
            try:
                tc2.__init__(t, 2, (-3, 9), bias=-1)
            finally:
                layers.LUT_MAX_ENTRIES = old
            assert tc2.lut is None
            tc = tc2
        expect = np.array([[-1, -1], [0, 1], [1, 1], [2, 2], [2, 2]])
        assert np.array_equal(tc(x).astype(np.int64), expect)
        assert tc.out_range == (-1, 2)


def test_gemm_dtype_bounds():
    assert gemm_dtype(2**24 - 1) == np.float32
    assert gemm_dtype(2**24) == np.float64
    assert gemm_dtype(2**53) == np.int64
    (lo, hi), bound = matmul_range((0, 15), np.array([[1, -2], [3, 4]]))
    assert (lo, hi) == (-30, 60) and bound == 15 * 6


def test_mvau_hand_computed_conv():
    """A 3x3 conv as window + MVAU, against a direct loop."""
    x = RNG.integers(0, 16, size=(1, 6, 5, 2))
    w = RNG.integers(-8, 8, size=(3, 3, 2, 4))
    swg = OPS["ConvolutionInputGenerator"](
        Layer(
            "ConvolutionInputGenerator",
            "w",
            ("x",),
            ("p",),
            {"ConvKernelDim": [3, 3], "Stride": [1, 1], "Dilation": [1, 1]},
            ("UINT4",),
            ("UINT4",),
        ),
        [(0, 15)],
    )
    mvau = OPS["MVAU"](
        Layer(
            "MVAU",
            "m",
            ("p",),
            ("y",),
            {"MW": 18, "MH": 4, "noActivation": 1},
            ("UINT4",),
            ("INT32",),
            arrays={"weights": w.reshape(18, 4)},
        ),
        [(0, 15)],
    )
    (y,) = mvau(*swg(x))
    expect = np.zeros((1, 4, 3, 4), dtype=np.int64)
    for i in range(4):
        for j in range(3):
            expect[0, i, j] = np.einsum("abc,abcd->d", x[0, i : i + 3, j : j + 3], w)
    assert np.array_equal(y.astype(np.int64), expect)


def test_upsample_refuses_fractional_factor():
    layer = Layer(
        "UpsampleNearestNeighbour",
        "u",
        ("x",),
        ("y",),
        {"HI": 3, "WI": 3, "HO": 7, "WO": 7},
        ("INT4",),
        ("INT4",),
    )
    with pytest.raises(UserError, match="not integer"):
        OPS["UpsampleNearestNeighbour"](layer, [(-8, 7)])


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("force_search", [False, True])
def test_threshold_counter_matches_naive_count(seed, force_search, monkeypatch):
    """Random ranges, thresholds partly outside the range, global or per-channel, both paths."""
    import fcnseg.host.sim.layers as layers

    if force_search:
        monkeypatch.setattr(layers, "LUT_MAX_ENTRIES", 0)
    rng = np.random.default_rng(seed)
    lo = int(rng.integers(-(2**20), 2**10))
    hi = lo + int(rng.integers(0, 2**12))
    channels, steps = int(rng.integers(1, 9)), int(rng.integers(1, 20))
    rows = 1 if seed % 3 == 0 else channels
    t = rng.integers(lo - 50, hi + 50, size=(rows, steps))
    bias, scale = int(rng.integers(-8, 2)), (2 if seed % 4 == 0 else 1)
    tc = ThresholdCounter(t, channels, (lo, hi), bias=bias, scale=scale)
    assert (tc.lut is None) == force_search
    x = rng.integers(lo, hi + 1, size=(3, 5, channels))
    x[0, 0] = lo
    x[0, 1] = hi
    expect = scale * (x[..., None] >= np.broadcast_to(t, (channels, steps))).sum(-1) + bias
    for xin in (x, x.astype(np.float64)):
        out = tc(xin)
        assert out.dtype == tc.out_dtype
        assert np.array_equal(out.astype(np.int64), expect)


def test_threshold_counter_of_a_16_bit_output_is_exact_without_the_pairwise_fit():
    """65535 steps (a UINT16 activation): the affine fit's pairwise test would need 2^31 pairs
    (4 GiB, found by the package fuzzer); it is skipped, and the table counts exactly."""
    from fcnseg.host.sim.layers import PROGRESSION_MAX_STEPS

    steps = 2**16 - 1
    t = (np.arange(steps, dtype=np.int64) * 3 - 90_000)[None, :]  # an exact progression
    tc = ThresholdCounter(t, 2, (-100_000, 110_000), bias=0, float_input=np.float32)
    assert steps > PROGRESSION_MAX_STEPS and tc.affine is None
    x = np.array([[-100_000, -90_001], [-90_000, -89_998], [106_602, 110_000]], dtype=np.int64)
    expect = (x[..., None] >= t[0]).sum(-1)
    assert np.array_equal(tc(x).astype(np.int64), expect)
    assert np.array_equal(tc(x.astype(np.float32)).astype(np.int64), expect)


def test_package_layers_are_put_in_topological_order():
    from fcnseg.hw.to_package import _topological

    def dup(name, ins, outs):
        return Layer("DuplicateStreams", name, tuple(ins), tuple(outs), {}, (), ())

    layers = [dup("c", ["b"], ["c"]), dup("a", ["x"], ["a"]), dup("b", ["a"], ["b", "b2"])]
    assert [layer.name for layer in _topological(layers)] == ["a", "b", "c"]
    with pytest.raises(UserError, match="cycle"):
        _topological([dup("p", ["q"], ["p"]), dup("q", ["p"], ["q"])])
