"""One numpy implementation per HW layer kind, with the hardware's integer semantics.

Each class is built once per package layer from its :class:`~fcnseg.host.package.Layer` and the
*proven* integer ranges of its inputs (:mod:`.ranges`), precomputes what it can (float copies of
the weights where a GEMM in that float type is exact, threshold lookup tables), and is then called
on NHWC integer arrays of any spatial size: sizes baked into the finn attributes for the tile
(``IFMDim``, ``OFMDim``, ``ImgDim``, ``HI``/``HO`` ...) are never used for computing, only the
size-free ones (kernel, stride, dilation, padding, scale factor).

The reference for every class is the ``execute_node`` of the finn-plus custom op of the same name
(tests/host/test_sim_layers.py checks them for exact equality). Where finn's golden model computes
in float32 (``np.matmul`` of float tensors), it is exact only while the accumulator stays below
2^24; the simulator is exact everywhere (int64 fallback), so they agree wherever finn is exact.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from fcnseg.errors import UserError
from fcnseg.host.dtypes import parse_dtype
from fcnseg.host.package import Layer

from .ranges import (
    FLOAT_EXACT,
    Range,
    act_bias_scale,
    const_range,
    count_range,
    gemm_dtype,
    layer_ranges,
    storage_dtype,
)

#: The affine threshold fit (:func:`_progression`) tests every pair of a channel's thresholds:
#: up to this many steps (10-bit outputs; 0.5 M pairs), above it the table or search is used.
PROGRESSION_MAX_STEPS = 1023
#: Threshold lookup tables up to this many entries (channels x input range); above, searchsorted.
LUT_MAX_ENTRIES = 1 << 24


class Op:
    """A HW layer bound to its package data. ``out_ranges`` holds one range per output."""

    out_ranges: list[Range]

    def __init__(self, layer: Layer, in_ranges: Sequence[Range]):
        self.layer = layer
        self.attrs = layer.attributes
        self.in_ranges = list(in_ranges)

    def __call__(self, *xs: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def attr(self, name: str, default=None):
        if name in self.attrs:
            return self.attrs[name]
        if default is None:
            raise UserError(f"layer {self.layer.name}: attribute {name!r} missing")
        return default


class ThresholdCounter:
    """``out = scale * #{b : x >= T[c, b]} + bias`` per channel, for integer ``x`` in a range.

    Thresholds are integers (the package stores ``ceil`` of finn's float thresholds: for integer
    ``x``, ``x >= t`` iff ``x >= ceil(t)``), clipped here to ``[lo, hi + 1]``, which changes no
    count for ``x`` in ``[lo, hi]``; ``x`` itself is clipped into ``[min T - 1, max T]``, which
    changes no count either. With ``C`` x that window small the counts are tabulated (one gather
    per element); otherwise one ``searchsorted`` over all channels at once, each channel shifted
    into its own disjoint interval of keys.
    """

    def __init__(
        self,
        thresholds: np.ndarray,
        channels: int,
        in_range: Range,
        bias: int,
        scale: int = 1,
        float_input: np.dtype | None = None,
    ):
        lo, hi = in_range
        t = np.asarray(thresholds, dtype=np.int64)
        if t.ndim != 2 or t.shape[0] not in (1, channels):
            raise UserError(f"thresholds of shape {t.shape} do not fit {channels} channels")
        t = np.sort(np.clip(np.broadcast_to(t, (channels, t.shape[1])), lo, hi + 1), axis=1)
        steps = t.shape[1]
        # Only [min T - 1, max T] matters: below it every count is 0, above it every count is
        # `steps`. Clipping x into that window first keeps the lookup table small.
        self.clip: tuple[int, int] | None = None
        self.idx_dtype = np.int32 if max(-lo, hi) < 2**30 else np.int64
        if t.size:
            wlo, whi = max(lo, int(t.min()) - 1), min(hi, int(t.max()))
            if (wlo, whi) != (lo, hi) and wlo <= whi:
                self.clip = (wlo, whi)
                lo, hi = wlo, whi
        self.lo, self.channels, self.steps = lo, channels, steps
        self.out_range: Range = count_range(bias, scale, steps)
        self.out_dtype = storage_dtype(self.out_range)
        span = hi - lo + 2  # keys lo..hi+1 per channel
        self.span = span
        if channels * span <= LUT_MAX_ENTRIES:
            values = np.arange(lo, lo + span, dtype=np.int64)
            counts = np.stack([np.searchsorted(row, values, side="right") for row in t])
            self.lut = (scale * counts + bias).astype(self.out_dtype).ravel()
            offsets = np.arange(channels, dtype=np.int64) * span - lo
            self.offsets = offsets.astype(self.idx_dtype)
            self.flat = self.rows = None
        else:
            self.lut = None
            self.scale, self.bias = scale, bias
            if channels * span < 2**62:
                shift = np.arange(channels, dtype=np.int64) * span
                self.flat = (t + shift[:, None]).ravel()
                self.shift = shift
                self.rows = None
            else:  # shifted keys would overflow int64 (huge accumulators): a search per channel
                self.flat = None
                self.rows = t
        #: per-channel ``(r, b, lo, hi)`` of the verified affine count (see :meth:`_fit_affine`)
        self.affine: tuple[np.ndarray, ...] | None = None
        self._tiled: dict[int, tuple[np.ndarray, ...]] = {}
        self._floor = True
        if float_input is not None and self.lut is not None and scale == 1 and t.size:
            self.affine = self._fit_affine(t, np.dtype(float_input), bias)

    def _fit_affine(self, t: np.ndarray, dt: np.dtype, bias: int) -> tuple[np.ndarray, ...] | None:
        """Per-channel ``out = clip(floor(x * r + b), lo, hi)`` in float ``dt``, if exact.

        Streamlined thresholds are (the ceilings of) an arithmetic progression (a quantizer
        folded with batch norm), so the count is an affine function of ``x`` rounded down — a few
        streaming passes instead of a gather from a table of up to megabytes. It is used only if
        it equals the table for *every* ``x`` of the clipped window, computed exactly as
        :meth:`__call__` computes it; outside the window it stays exact because every step is
        monotonic in ``x`` (``r >= 0``; float rounding is monotonic), so it is pinned to the
        window's end values by the clip.
        """
        lo, span, ch = self.lo, self.span, self.channels
        hi = lo + span - 2
        if dt not in FLOAT_EXACT or not FLOAT_EXACT[dt] > max(abs(lo), abs(hi) + 1):
            return None
        r = np.zeros(ch, np.float64)
        b = np.zeros(ch, np.float64)
        for c in range(ch):
            n_low = int((t[c] <= lo).sum())
            mid = t[c][(t[c] > lo) & (t[c] <= hi)].astype(np.float64)
            if mid.size == 0:
                b[c] = bias + n_low + 0.5
                continue
            fit = _progression(mid, 2.0 * (span + 1))
            if fit is None:
                return None
            t0, d = fit
            r[c] = 1.0 / d
            b[c] = 1.0 - t0 / d + n_low + bias
        table = self.lut.reshape(ch, span)[:, : span - 1]
        out_lo = table[:, 0].astype(dt)
        out_hi = table[:, -1].astype(dt)
        self._floor = bool((out_lo < 0).any())
        affine = (r.astype(dt), b.astype(dt), out_lo, out_hi)
        xs = np.broadcast_to(np.arange(lo, hi + 1, dtype=dt)[:, None], (span - 1, ch))
        if not np.array_equal(self._affine(xs, affine).T, table):
            return None
        return affine

    def _affine(
        self,
        x: np.ndarray,
        affine: tuple[np.ndarray, ...],
        out: np.ndarray | None = None,
        inplace: bool = False,
    ) -> np.ndarray:
        r, b, lo, hi = affine
        y = np.multiply(x, r, out=x if inplace else None)
        y += b
        # clip then floor == floor then clip (integer bounds); maximum + minimum, not np.clip
        # (slow with array bounds); with lo >= 0 the cast's truncation is the floor
        np.maximum(y, lo, out=y)
        np.minimum(y, hi, out=y)
        if self._floor:
            np.floor(y, out=y)
        if out is None:
            return y.astype(self.out_dtype)
        np.copyto(out, y, casting="unsafe")
        return out

    def into(self, acc: np.ndarray, out: np.ndarray) -> None:
        """Write the counts of ``acc`` into ``out``; may overwrite ``acc``.

        Both are 2-D, ``(rows, g * channels)``: ``g`` pixels per row, channels innermost.
        Broadcasting per-channel parameters over a short channel axis runs numpy's inner loops
        ``channels`` elements at a time; tiled ``g`` times they run a whole row at once.
        """
        if self.affine is not None and acc.dtype == self.affine[0].dtype:
            g = acc.shape[-1] // self.channels
            tiled = self._tiled.get(g)
            if tiled is None:
                if len(self._tiled) >= 16:  # one per input width seen: keep a few
                    self._tiled.clear()
                tiled = self._tiled[g] = tuple(np.tile(a, g) for a in self.affine)
            self._affine(acc, tiled, out=out, inplace=True)
        else:
            shape = (-1, self.channels)
            np.copyto(out.reshape(shape), self(acc.reshape(shape)), casting="unsafe")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.affine is not None and x.dtype == self.affine[0].dtype:
            return self._affine(x, self.affine)
        if self.lut is not None:
            idx = x.astype(self.idx_dtype)
            if self.clip is not None:
                np.clip(idx, *self.clip, out=idx)
            idx += self.offsets
            return self.lut.take(idx)
        key = x.astype(np.int64)
        if self.clip is not None:
            np.clip(key, *self.clip, out=key)
        if self.rows is not None:
            cnt = np.empty(key.shape, np.int64)
            for c, row in enumerate(self.rows):
                cnt[..., c] = np.searchsorted(row, key[..., c], side="right")
        else:
            key += self.shift
            cnt = np.searchsorted(self.flat, key, side="right")
            cnt -= np.arange(self.channels, dtype=np.int64) * self.steps
        return (self.scale * cnt + self.bias).astype(self.out_dtype)


def _progression(t: np.ndarray, d_single: float) -> tuple[float, float] | None:
    """``(t0, d)`` with ``T_k - 1 < t0 + k d <= T_k`` for the sorted integer thresholds ``T``.

    Integer ``x >= T_k`` then iff ``x >= t0 + k d``. The step is the middle of its feasible
    interval (from every pair of thresholds), the offset the middle of its own; ``None`` if the
    thresholds are not such a rounded progression (or not increasing), or too many for the
    pairwise test (more than :data:`PROGRESSION_MAX_STEPS`: 65535 steps of a 16-bit output would
    be 2^31 pairs, 4 GiB; the table or the search computes those exactly without the fit).
    """
    if t.size > PROGRESSION_MAX_STEPS:
        return None
    if t.size == 1:
        return float(t[0]) - 0.5, d_single
    k = np.arange(t.size, dtype=np.float64)
    i, j = np.triu_indices(t.size, 1)
    d_lo = float(np.max((t[j] - t[i] - 1) / (j - i)))
    d_hi = float(np.min((t[j] - t[i] + 1) / (j - i)))
    d = (d_lo + d_hi) / 2
    if not (d_lo < d_hi and d > 0):
        return None
    t_lo = float(np.max(t - 1 - k * d))
    t_hi = float(np.min(t - k * d))
    if not t_lo < t_hi:
        return None
    return (t_lo + t_hi) / 2, d


class MVAU(Op):
    """Matrix-vector-activation: ``acc = x @ W`` (integers), then thresholds or the raw ``acc``.

    The GEMM runs in float32 when every partial sum is provably below 2^24, in float64 below 2^53,
    else in int64 — exact in all cases. ``x`` may arrive already in the GEMM dtype (the engine
    makes the sliding window write its patches in it).
    """

    def __init__(self, layer: Layer, in_ranges: Sequence[Range]):
        super().__init__(layer, in_ranges)
        if int(self.attr("binaryXnorMode", 0)):
            raise UserError(f"layer {layer.name}: binaryXnorMode MVAU is not supported")
        if layer.input_dtypes and layer.input_dtypes[0] == "BIPOLAR":
            raise UserError(f"layer {layer.name}: BIPOLAR-input MVAU is not supported")
        w = np.asarray(layer.arrays["weights"])
        mw, mh = int(self.attr("MW", w.shape[0])), int(self.attr("MH", w.shape[1]))
        if w.shape != (mw, mh):
            raise UserError(f"layer {layer.name}: weights {w.shape} are not (MW, MH) = {(mw, mh)}")
        self.mw, self.mh = mw, mh
        proven = layer_ranges(layer, self.in_ranges)
        acc_range = self.acc_range = proven.acc
        acc_dt = self.attrs.get("accDataType")
        #: the proven accumulator range exceeds the declared accumulator type (hardware would
        #: wrap; the simulator computes the true integers)
        self.acc_may_wrap = False
        if acc_dt:
            alo, ahi = parse_dtype(str(acc_dt))
            self.acc_may_wrap = acc_range[0] < alo or acc_range[1] > ahi
        self.gemm = gemm_dtype(proven.bound)
        self.w = np.ascontiguousarray(w.astype(self.gemm))
        self.no_act = int(self.attr("noActivation", 0)) == 1
        if not self.no_act and "thresholds" not in layer.arrays:
            raise UserError(f"layer {layer.name}: MVAU with activation has no thresholds")
        self.out_ranges = proven.outputs
        if self.no_act:
            self.thr = None
            self.out_dtype = storage_dtype(acc_range)
        else:
            odt = layer.output_dtypes[0] if layer.output_dtypes else ""
            bias, scale = act_bias_scale(odt, int(self.attr("ActVal", 0)))
            # the affine fast path is for float accumulators; an int64 GEMM (partial sums past
            # 2^53) thresholds through the table or searchsorted
            float_acc = self.gemm if self.gemm.kind == "f" else None
            self.thr = ThresholdCounter(
                layer.arrays["thresholds"], mh, acc_range, bias, scale, float_input=float_acc
            )

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        lead = x.shape[:-1]
        a = x.reshape(-1, self.mw)
        if a.dtype != self.gemm:
            a = a.astype(self.gemm)
        acc = a @ self.w
        out = acc.astype(self.out_dtype) if self.thr is None else self.thr(acc)
        return [out.reshape(*lead, self.mh)]


class ConvolutionInputGenerator(Op):
    """Sliding window (im2col): NHWC -> (N, OH, OW, kh*kw*C), inner order (kh, kw, C).

    No padding (finn puts an FMPadding in front). ``out_dtype`` lets the engine fuse the cast to
    the consumer MVAU's GEMM dtype into the one copy this makes.
    """

    def __init__(self, layer: Layer, in_ranges: Sequence[Range]):
        super().__init__(layer, in_ranges)
        self.k = tuple(int(v) for v in self.attr("ConvKernelDim"))
        self.s = tuple(int(v) for v in self.attr("Stride", [1, 1]))
        self.d = tuple(int(v) for v in self.attr("Dilation", [1, 1]))
        self.out_ranges = layer_ranges(layer, self.in_ranges).outputs
        self.out_dtype: np.dtype | None = None

    def out_dims(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (dh, dw) = self.k, self.s, self.d
        oh = (h - dh * (kh - 1) - 1) // sh + 1
        ow = (w - dw * (kw - 1) - 1) // sw + 1
        if oh < 1 or ow < 1:
            raise UserError(f"layer {self.layer.name}: input {h}x{w} smaller than its window")
        return oh, ow

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        n, h, w, c = x.shape
        (kh, kw), (sh, sw), (dh, dw) = self.k, self.s, self.d
        oh, ow = self.out_dims(h, w)
        if (kh, kw) == (1, 1) and (sh, sw) == (1, 1):
            return [x if self.out_dtype is None else x.astype(self.out_dtype)]
        dtype = self.out_dtype or x.dtype
        if dw == 1:
            # zero-copy view whose innermost run (kw * C values of one window row) is contiguous
            # in x; one copyto then writes the patches (2-6x faster than kh * kw slice copies)
            x = np.ascontiguousarray(x)
            sn, sh_, sw_, sc = x.strides
            view = np.lib.stride_tricks.as_strided(
                x,
                shape=(n, oh, ow, kh, kw * c),
                strides=(sn, sh_ * sh, sw_ * sw, sh_ * dh, sc),
                writeable=False,
            )
            out = np.empty((n, oh, ow, kh, kw * c), dtype=dtype)
            np.copyto(out, view, casting="unsafe")
            return [out.reshape(n, oh, ow, kh * kw * c)]
        out = np.empty((n, oh, ow, kh, kw, c), dtype=dtype)
        for i in range(kh):
            for j in range(kw):
                out[:, :, :, i, j, :] = x[
                    :,
                    i * dh : i * dh + sh * (oh - 1) + 1 : sh,
                    j * dw : j * dw + sw * (ow - 1) + 1 : sw,
                ]
        return [out.reshape(n, oh, ow, kh * kw * c)]


class ConvMVAU(Op):
    """A sliding window fused with the MVAU it feeds: the convolution in blocks of output rows.

    Each block's patches are written (cast to the GEMM dtype) into a small buffer, multiplied
    and thresholded, and the result goes straight into the output — no full-size patch matrix
    or accumulator. The blocks stay in the CPU caches and the buffers are reused from call to
    call (per thread and block shape), so large tiles no longer cost fresh pages either.
    Same integers as the two layers run one after the other.

    ``pool`` (set by the engine) fuses a following max-pool whose window equals its stride: the
    max is taken over the float accumulators *before* the thresholds — exact, as a threshold
    count is non-decreasing in its input, so it commutes with max — which thresholds a quarter
    of the values (2x2) and never materialises the full-size map. The patches of a block are
    written phase by phase (rows ``(r, a, j)`` hold output pixel ``(r, j * pw + a)``), so each
    pooling step is a max of whole contiguous rows.
    """

    #: target size of one block's patch buffer (bytes); measured on the shipped FCN-8s at
    #: 256x256 (2 cores, AMD EPYC): 512 KB 9.0, 1 MB 8.4, 2 MB 8.2 ms/tile in batches of 4, but
    #: 8.8 / 9.9 ms for 1 MB / 2 MB with one tile per call
    BLOCK_BYTES = 1 << 20
    #: buffers kept per thread (one set per block shape, i.e. per input width); beyond this the
    #: cache is emptied, so a stream of images of many sizes does not hoard memory
    MAX_BUFFER_SETS = 16

    def __init__(self, swg: ConvolutionInputGenerator, mvau: MVAU):
        super().__init__(mvau.layer, swg.in_ranges)
        self.swg, self.mvau = swg, mvau
        self.out_ranges = mvau.out_ranges
        self.out_dtype = mvau.out_dtype if mvau.thr is None else mvau.thr.out_dtype
        self._local = threading.local()
        #: (ph, pw) of a fused max-pool with window == stride, (1, 1) for none
        self.pool: tuple[int, int] = (1, 1)

    #: window rows shorter than this (bytes) are gathered as single opaque items first
    SHORT_RUN_BYTES = 32

    def _buffers(self, rows: int, ow: int, raw: np.dtype) -> tuple[np.ndarray, ...]:
        cache = self._local.__dict__.setdefault("bufs", {})
        key = (rows, ow, raw)
        if key not in cache:
            if len(cache) >= self.MAX_BUFFER_SETS:
                cache.clear()
            m = rows * ow
            ph, pw = self.pool
            cache[key] = (
                np.empty((m, self.mvau.mw), self.mvau.gemm),
                np.empty((m, self.mvau.mh), self.mvau.gemm),
                np.empty((rows // ph, ow // pw * self.mvau.mh), self.mvau.gemm),
                np.empty((m, self.mvau.mw), raw),
            )
        return cache[key]

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        swg, mvau = self.swg, self.mvau
        n, h, w, c = x.shape
        (kh, kw), (sh, sw), (dh, dw) = swg.k, swg.s, swg.d
        oh, ow = swg.out_dims(h, w)
        if kh * kw * c != mvau.mw:
            raise UserError(f"layer {self.layer.name}: window of {kh}x{kw}x{c} is not MW")
        ph, pw = self.pool
        oh, ow = oh // ph * ph, ow // pw * pw  # rows/columns a pool window covers
        if oh == 0 or ow == 0:
            raise UserError(f"layer {self.layer.name}: input {h}x{w} smaller than its pool")
        mh, qw = mvau.mh, ow // pw
        out = np.empty((n, oh // ph, qw, mh), self.out_dtype)
        rows = self.BLOCK_BYTES // (ow * mvau.mw * mvau.gemm.itemsize)
        rows = min(oh, max(ph, rows // ph * ph))
        x = np.ascontiguousarray(x)
        sn, sh_, sw_, sc = x.strides
        # a view of every window, (n, oh, pw, ow / pw, kh, kw * c) (column j * pw + a at [a, j])
        # when a window row is contiguous in x (the innermost copy run is then kw * c long);
        # one copyto per block writes the patches
        lead = (n, oh, pw, qw), (sn, sh_ * sh, sw_ * sw, sw_ * sw * pw)
        if dw == 1:
            shape, strides = lead[0] + (kh, kw * c), lead[1] + (sh_ * dh, sc)
        else:
            shape, strides = lead[0] + (kh, kw, c), lead[1] + (sh_ * dh, sw_ * dw, sc)
        view = np.lib.stride_tricks.as_strided(x, shape=shape, strides=strides, writeable=False)
        run = kw * c * x.itemsize
        short = dw == 1 and run < self.SHORT_RUN_BYTES
        for i in range(n):
            for r0 in range(0, oh, rows):
                r1 = min(oh, r0 + rows)
                patches, acc, pooled, raw = self._buffers(r1 - r0, ow, x.dtype)
                if short:
                    self._gather_rows(x, raw, i * sn + r0 * sh * sh_, r1 - r0, strides[1:4])
                    np.copyto(patches, raw, casting="unsafe")
                else:
                    np.copyto(patches.reshape(r1 - r0, *shape[2:]), view[i, r0:r1], "unsafe")
                np.matmul(patches, mvau.w, out=acc)
                if (ph, pw) != (1, 1):  # max over the phases: whole rows of qw pixels at once
                    phases = acc.reshape((r1 - r0) // ph, ph, pw, qw * mh)
                    np.maximum(phases[:, 0, 0], phases[:, 0, min(1, pw - 1)], out=pooled)
                    for a in range(ph):
                        for b in range(pw):
                            if a or b > 1:
                                np.maximum(pooled, phases[:, a, b], out=pooled)
                    acc = pooled
                # one row of output pixels per row: long inner loops (ThresholdCounter.into)
                dst = out[i, r0 // ph : r1 // ph].reshape(-1, qw * mh)
                if mvau.thr is None:
                    np.copyto(dst, acc.reshape(dst.shape), casting="unsafe")
                else:
                    mvau.thr.into(acc.reshape(dst.shape), dst)
        return [out]

    def _gather_rows(self, x: np.ndarray, raw: np.ndarray, offset: int, rows: int, strides):
        """Patches of ``rows`` output rows into ``raw`` (x's dtype), one window row at a time.

        A window row (``kw * c`` values, contiguous in ``x``) is copied as one opaque item, so
        numpy's inner loop runs over whole rows of pixels instead of a few values each (3x
        faster on the 3-channel input layer); the caller casts ``raw`` in one contiguous pass.
        """
        (kh, kw), (dh, _) = self.swg.k, self.swg.d
        ph, pw = self.pool
        c, isz, k = x.shape[-1], x.itemsize, raw.shape[1] * raw.itemsize
        item = np.dtype((np.void, kw * c * isz))
        qw = raw.shape[0] // (rows * pw)
        shape = (rows, pw, qw)
        out_strides = (pw * qw * k, qw * k, k)
        for ki in range(kh):
            src = np.ndarray(shape, item, x, offset + ki * dh * x.strides[1], strides)
            dst = np.ndarray(shape, item, raw, ki * kw * c * isz, out_strides)
            np.copyto(dst, src)


class FMPadding(Op):
    """Zero padding ``[top, left, bottom, right]`` of an NHWC map."""

    def __init__(self, layer: Layer, in_ranges: Sequence[Range]):
        super().__init__(layer, in_ranges)
        self.pad = [int(v) for v in self.attr("Padding")]
        self.out_ranges = layer_ranges(layer, self.in_ranges).outputs

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        top, left, bottom, right = self.pad
        n, h, w, c = x.shape
        out = np.zeros((n, h + top + bottom, w + left + right, c), dtype=x.dtype)
        out[:, top : top + h, left : left + w] = x
        return [out]


class Pool(Op):
    """Pooling over the window axis of a (depthwise) sliding window's output.

    ``MaxPool``: max; ``AccPool``: sum; ``QuantAvgPool``: sum then right shift by
    ``bits(k^2 * (2^ibits - 1)) - obits`` (finn's rule). ``AvgPool`` (float mean) is refused.
    """

    def __init__(self, layer: Layer, in_ranges: Sequence[Range]):
        super().__init__(layer, in_ranges)
        self.fn = str(self.attr("Function"))
        kh, kw = (int(v) for v in self.attr("KernelSize"))
        self.k2 = kh * kw
        proven = layer_ranges(layer, self.in_ranges)  # refuses a non-integer function
        self.out_ranges, self.shift = proven.outputs, proven.shift

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        c = x.shape[-1] // self.k2
        v = x.reshape(*x.shape[:-1], self.k2, c)
        if self.fn == "MaxPool":
            return [v.max(axis=-2)]
        dt = storage_dtype(self.out_ranges[0]) if self.fn == "AccPool" else np.int64
        s = v.sum(axis=-2, dtype=np.int64 if self.fn != "AccPool" else dt)
        if self.fn == "QuantAvgPool":
            s = np.right_shift(s, self.shift).astype(storage_dtype(self.out_ranges[0]))
        return [s]


class MaxPoolDirect(Op):
    """A depthwise sliding window fused with its MaxPool: max of the strided window views."""

    def __init__(self, swg: ConvolutionInputGenerator, pool: Pool):
        super().__init__(pool.layer, swg.in_ranges)
        self.swg = swg
        self.out_ranges = pool.out_ranges

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        (kh, kw), (sh, sw), (dh, dw) = self.swg.k, self.swg.s, self.swg.d
        oh, ow = self.swg.out_dims(x.shape[1], x.shape[2])
        out = None
        for i in range(kh):
            for j in range(kw):
                v = x[
                    :,
                    i * dh : i * dh + sh * (oh - 1) + 1 : sh,
                    j * dw : j * dw + sw * (ow - 1) + 1 : sw,
                ]
                out = v.copy() if out is None else np.maximum(out, v, out=out)
        return [out]


class Thresholding(Op):
    """Standalone multi-threshold: ``#{b : x >= T[c, b]} + ActVal`` (BIPOLAR: ``2 count - 1``)."""

    def __init__(self, layer: Layer, in_ranges: Sequence[Range]):
        super().__init__(layer, in_ranges)
        t = layer.arrays["thresholds"]
        ch = int(self.attr("NumChannels", t.shape[0]))
        odt = layer.output_dtypes[0] if layer.output_dtypes else ""
        bias, scale = act_bias_scale(odt, int(self.attr("ActVal", 0)))
        self.thr = ThresholdCounter(t, ch, self.in_ranges[0], bias, scale)
        self.out_ranges = layer_ranges(layer, self.in_ranges).outputs

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return [self.thr(x)]


class DuplicateStreams(Op):
    """Fan-out: the same (read-only) array on every output."""

    def __init__(self, layer: Layer, in_ranges: Sequence[Range]):
        super().__init__(layer, in_ranges)
        self.out_ranges = layer_ranges(layer, self.in_ranges).outputs

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return [x] * len(self.layer.outputs)


class Identity(Op):
    """Layers that only re-pack the stream (data width converters): values unchanged."""

    def __init__(self, layer: Layer, in_ranges: Sequence[Range]):
        super().__init__(layer, in_ranges)
        self.out_ranges = layer_ranges(layer, self.in_ranges).outputs

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return [x]


class Elementwise(Op):
    """Integer elementwise binary op of two streams or a stream and a constant (lhs/rhs)."""

    FUNCS = {
        "ElementwiseAdd": np.add,
        "AddStreams": np.add,
        "ElementwiseSub": np.subtract,
        "ElementwiseMul": np.multiply,
        "ElementwiseMax": np.maximum,
    }

    def __init__(self, layer: Layer, in_ranges: Sequence[Range]):
        super().__init__(layer, in_ranges)
        self.fn = self.FUNCS[layer.kind]
        self.consts = {k: np.asarray(layer.arrays[k]) for k in ("lhs", "rhs") if k in layer.arrays}
        it = iter(self.in_ranges)
        (a0, a1), (b0, b1) = (
            const_range(self.consts[side]) if side in self.consts else next(it)
            for side in ("lhs", "rhs")
        )
        self.out_ranges = layer_ranges(layer, self.in_ranges).outputs
        r = self.out_ranges[0]
        # compute in a dtype holding both operands and the result, store in the result's
        self.dtype = storage_dtype((min(a0, b0, r[0]), max(a1, b1, r[1])))
        self.out_dtype = storage_dtype(r)

    def __call__(self, *xs: np.ndarray) -> list[np.ndarray]:
        it = iter(xs)
        a = self.consts["lhs"] if "lhs" in self.consts else next(it)
        b = self.consts["rhs"] if "rhs" in self.consts else next(it)
        y = self.fn(a.astype(self.dtype, copy=False), b.astype(self.dtype, copy=False))
        return [y.astype(self.out_dtype, copy=False)]


class UpsampleNearestNeighbour(Op):
    """Nearest upsampling by the integer factor ``HO / HI`` (``WO / WI``): pixel repetition.

    For an integer factor this equals finn's reference (ONNX Resize, nearest, half_pixel,
    round_prefer_floor). A non-integer factor has no size-free meaning and is refused.
    """

    def __init__(self, layer: Layer, in_ranges: Sequence[Range]):
        super().__init__(layer, in_ranges)
        hi_, wi, ho, wo = (int(self.attr(k)) for k in ("HI", "WI", "HO", "WO"))
        if ho % hi_ or wo % wi:
            raise UserError(f"layer {layer.name}: upsampling {hi_}x{wi}->{ho}x{wo} not integer")
        self.f = (ho // hi_, wo // wi)
        self.out_ranges = layer_ranges(layer, self.in_ranges).outputs

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        n, h, w, c = x.shape
        fh, fw = self.f
        v = np.broadcast_to(x[:, :, None, :, None, :], (n, h, fh, w, fw, c))
        return [v.reshape(n, h * fh, w * fw, c)]


#: package layer kind -> simulator class
OPS: dict[str, type[Op]] = {
    "MVAU": MVAU,
    "ConvolutionInputGenerator": ConvolutionInputGenerator,
    "FMPadding": FMPadding,
    "Pool": Pool,
    "Thresholding": Thresholding,
    "DuplicateStreams": DuplicateStreams,
    "StreamingDataWidthConverter": Identity,
    "StreamingFIFO": Identity,
    "ElementwiseAdd": Elementwise,
    "ElementwiseSub": Elementwise,
    "ElementwiseMul": Elementwise,
    "ElementwiseMax": Elementwise,
    "AddStreams": Elementwise,
    "UpsampleNearestNeighbour": UpsampleNearestNeighbour,
}
