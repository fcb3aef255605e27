"""SimEngine: runs a deployment package's HW layers in numpy, bit-exact, on any input size.

Plan once, run many: at construction every layer becomes a :mod:`.layers` op bound to its arrays
and to the proven integer ranges of its inputs (propagated from the input datatype, see
:mod:`.ranges`); two fusions remove copies — a sliding window feeding an MVAU becomes one
:class:`~.layers.ConvMVAU` (patches, GEMM and thresholds in cache-sized blocks of output rows, no
full-size patch matrix), and a sliding window feeding a MaxPool becomes a max over strided views.
``run`` then walks the ordered layer list, freeing each tensor after its last use.

The engine is size-agnostic: any ``H, W`` that are multiples of the net's stride (the largest
downsampling factor inside the graph, derived from the layers) give an output of
``(N, H / output_stride, W / output_stride, C)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np

from fcnseg.errors import UserError
from fcnseg.host.package import Package, layer_strides, parse_dtype

from .layers import MVAU, OPS, ConvMVAU, ConvolutionInputGenerator, MaxPoolDirect, Op, Pool
from .ranges import Range


class SimEngine:
    """Bit-accurate numpy simulator of a package's accelerator.

    ``engine.run(x)`` takes uint8 NHWC ``(N, H, W, 3)`` and returns int64 integer scores
    ``(N, H/s, W/s, C)``; multiply by ``package.output_scale`` and add ``package.output_bias`` for
    logits. ``batch`` bounds how many tiles go through the layers at once (memory; the
    convolutions run in cache-sized row blocks, so one tile and four tiles per call take about
    the same time per tile).

    ``blas_threads`` caps numpy's BLAS threads during ``run`` (needs ``threadpoolctl``; without it
    the cap is skipped). The GEMMs here are small (K <= a few hundred): on 2 shared cores a
    224x224 tile took 22 ms with 1 BLAS thread and 170 ms with 2 (threads spinning for cores the
    other processes hold). ``None`` leaves BLAS alone.
    """

    def __init__(self, package: Package, batch: int = 1, blas_threads: int | None = 1):
        self.package = package
        self.batch = max(1, int(batch))
        self._limit = _blas_limiter(blas_threads)
        self.input_name = package.input["name"]
        self.output_name = package.output["name"]
        self.ranges: dict[str, Range] = {self.input_name: parse_dtype(package.input["dtype"])}
        if self.ranges[self.input_name] != (0, 255):
            raise UserError(f"package input dtype {package.input['dtype']} is not UINT8")
        steps: list[tuple[Op, tuple[str, ...], tuple[str, ...]]] = []
        for layer in package.layers:
            cls = OPS.get(layer.kind)
            if cls is None:
                raise UserError(f"layer {layer.name}: kind {layer.kind} has no simulator")
            op = cls(layer, [self.ranges[t] for t in layer.inputs])
            self.ranges.update(zip(layer.outputs, op.out_ranges, strict=True))
            steps.append((op, layer.inputs, layer.outputs))
        self.steps = self._fuse(steps)
        self.net_stride, self.output_stride = layer_strides(
            package.layers, self.input_name, self.output_name
        )
        lo, hi = parse_dtype(package.output["dtype"])
        olo, ohi = self.ranges[self.output_name]
        #: the proven score range exceeds the output datatype: hardware would wrap where the
        #: simulator returns the true integers (a finn datatype inference bug if it happens)
        self.output_may_wrap = olo < lo or ohi > hi
        #: names of MVAUs whose proven accumulator range exceeds their accDataType
        self.acc_may_wrap = [op.layer.name for op, _, _ in steps if getattr(op, "acc_may_wrap", 0)]
        self._last_use = self._last_uses()

    @staticmethod
    def _consumers(steps) -> dict[str, list[int]]:
        """Tensor name -> indices of the steps that read it."""
        consumers: dict[str, list[int]] = {}
        for i, (_, ins, _) in enumerate(steps):
            for t in ins:
                consumers.setdefault(t, []).append(i)
        return consumers

    @staticmethod
    def _fuse(steps):
        """Fuse sliding windows into their MVAU / max-pool, then max-pools into those convs."""
        return SimEngine._fuse_pairs(SimEngine._fuse_pairs(steps, _fuse_window), _fuse_pool)

    @staticmethod
    def _fuse_pairs(steps, combine):
        """Replace a step and the one step reading its output by ``combine(op, consumer)``."""
        consumers = SimEngine._consumers(steps)
        out = []
        skip = set()
        for i, (op, ins, outs) in enumerate(steps):
            if i in skip:
                continue
            users = consumers.get(outs[0], [])
            if len(users) == 1:
                fused = combine(op, steps[users[0]][0])
                if fused is not None:
                    out.append((fused, ins, steps[users[0]][2]))
                    skip.add(users[0])
                    continue
            out.append((op, ins, outs))
        return out

    def _last_uses(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for i, (_, ins, _) in enumerate(self.steps):
            for t in ins:
                last[t] = i
        return last

    def run(self, x: np.ndarray) -> np.ndarray:
        """Integer scores of uint8 NHWC ``x`` (N, H, W, 3); H, W multiples of the net stride."""
        x = np.asarray(x)
        if x.dtype != np.uint8:
            raise UserError(f"sim input must be uint8, got {x.dtype}")
        if x.ndim != 4 or x.shape[-1] != 3:
            raise UserError(f"sim input must be NHWC (N, H, W, 3), got shape {x.shape}")
        n, h, w, _ = x.shape
        if h % self.net_stride or w % self.net_stride or h == 0 or w == 0:
            raise UserError(
                f"sim input {h}x{w} is not a multiple of the net stride {self.net_stride}"
            )
        with self._limit():
            outs = [self._run_batch(x[i : i + self.batch]) for i in range(0, n, self.batch)]
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

    def _run_batch(self, x: np.ndarray) -> np.ndarray:
        env: dict[str, np.ndarray] = {self.input_name: x}
        for i, (op, ins, outs) in enumerate(self.steps):
            results = op(*(env[t] for t in ins))
            for t in ins:
                if self._last_use.get(t) == i and t != self.output_name:
                    env.pop(t, None)
            env.update(zip(outs, results, strict=True))
        return env[self.output_name].astype(np.int64)


def _blas_limiter(threads: int | None) -> Callable[[], contextlib.AbstractContextManager]:
    """A context-manager factory capping BLAS threads (no-op without threadpoolctl or a cap)."""
    if threads is None:
        return contextlib.nullcontext
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return contextlib.nullcontext
    controller = ThreadpoolController()
    return lambda: controller.limit(limits=int(threads), user_api="blas")


def _fuse_window(op, consumer):
    """A sliding window read only by an MVAU or a max-pool becomes one op with it."""
    if not isinstance(op, ConvolutionInputGenerator):
        return None
    if isinstance(consumer, MVAU):
        return ConvMVAU(op, consumer)
    if isinstance(consumer, Pool) and consumer.fn == "MaxPool":
        return MaxPoolDirect(op, consumer)
    return None


def _fuse_pool(op, consumer):
    """A max-pool (window == stride) fed only by a ConvMVAU becomes part of it (its pool)."""
    if not (isinstance(op, ConvMVAU) and isinstance(consumer, MaxPoolDirect)):
        return None
    pool = consumer.swg
    if pool.k != pool.s or pool.d != (1, 1):
        return None
    op.pool = pool.k
    return op
