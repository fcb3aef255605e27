"""Inputs that land a layer's accumulator exactly on given values (its thresholds and their
neighbours), for the boundary tests of the exact thresholds.

For a channel with integer weights ``w`` and inputs in ``[lo, hi]``, ``w . x`` is the least
possible sum plus ``sum |w_i| m_i`` with ``m_i`` in ``[0, hi - lo]`` (how far input ``i`` moves
from its minimising end). Reaching a target is a bounded coin problem: the large coins are
taken greedily (vectorised over all targets of the channel), the remainder is solved exactly by a
dynamic programme over the six smallest coins (built once per channel); where the greedy choice
leaves an unreachable remainder, the last large coin gives some back. Targets that no input can
reach (outside the range, or not a multiple of the weights' gcd) come back as None.
"""

from __future__ import annotations

import numpy as np

#: coins left to the exact dynamic programme (all of them when that costs under DP_WORK).
DP_COINS = 6
DP_WORK = 5 * 10**7
#: times the greedy part may give back one unit of its last coin when the remainder fails.
GIVE_BACK = 8


class _SmallCoins:
    """Exact solver for ``sum a_k m_k = r`` with ``0 <= m_k <= cap`` over a few coins."""

    def __init__(self, coins: np.ndarray, cap: int):
        self.coins = [int(c) for c in coins]
        self.cap = cap
        self.size = sum(self.coins) * cap + 1
        reach = np.zeros(self.size, dtype=bool)
        reach[0] = True
        self.stages = [reach]
        for c in self.coins:
            nxt = reach.copy()
            for m in range(1, cap + 1):
                nxt[m * c :] |= reach[: self.size - m * c]
            reach = nxt
            self.stages.append(reach)

    def solve(self, r: int) -> list[int] | None:
        if not 0 <= r < self.size or not self.stages[-1][r]:
            return None
        counts = []
        for k in range(len(self.coins) - 1, -1, -1):
            c, before = self.coins[k], self.stages[k]
            for m in range(self.cap + 1):
                if r - m * c >= 0 and before[r - m * c]:
                    counts.append(m)
                    r -= m * c
                    break
        return counts[::-1]


def solve_dots(w: np.ndarray, targets: np.ndarray, lo: int, hi: int) -> list[np.ndarray | None]:
    """For each target, an integer ``x`` in ``[lo, hi]^n`` with ``w @ x == target`` (or None)."""
    w = np.asarray(w, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    cap = hi - lo
    base = np.where(w > 0, lo, hi).astype(np.int64)
    r0 = targets - int(w @ base)
    a = np.abs(w)
    order = [int(i) for i in np.argsort(-a, kind="stable") if a[i] > 0]
    size = int(a.sum()) * cap
    whole = len(order) * cap * size <= DP_WORK  # the whole problem is cheap: exact for all
    big, small = ([], order) if whole else (order[:-DP_COINS], order[-DP_COINS:])
    dp = _SmallCoins(a[small], cap)
    m_big = np.zeros((len(targets), len(big)), dtype=np.int64)
    r = r0.copy()
    for j, i in enumerate(big):
        take = np.clip(r // a[i], 0, cap)
        m_big[:, j] = take
        r -= take * a[i]
    out: list[np.ndarray | None] = []
    for t in range(len(targets)):
        if r0[t] < 0:
            out.append(None)
            continue
        rem, mb = int(r[t]), m_big[t].copy()
        counts = dp.solve(rem)
        for _ in range(GIVE_BACK):
            if counts is not None:
                break
            used = np.flatnonzero(mb)
            if used.size == 0:
                break
            j = int(used[-1])
            mb[j] -= 1
            rem += int(a[big[j]])
            counts = dp.solve(rem)
        if counts is None:
            out.append(None)
            continue
        m = np.zeros(w.size, dtype=np.int64)
        m[big] = mb
        m[small] = counts
        x = np.where(w > 0, base + m, base - m)
        out.append(x if int(w @ x) == int(targets[t]) else None)
    return out


# ------------------------------------------------------------------------- witnesses per layer


#: how far from a threshold the search for a reachable accumulator value goes (each side).
REACH = 64


def _channel_cases(w, t_row, lo, hi, xlo, xhi) -> tuple[dict[int, np.ndarray], int, int]:
    """Reachable accumulator values around each threshold of one channel, with their inputs.

    First ``T - 1, T, T + 1``; where no tested value lies below ``T`` (or at/above it), windows
    widening up to ``REACH`` away are searched, nearest first. Returns the inputs by value and
    the number of thresholds inside the channel's reachable range with, and in total, a tested
    value on both sides.
    """
    found: dict[int, np.ndarray] = {}
    tried: set[int] = set()

    def attempt(values) -> None:
        values = np.array(sorted({int(v) for v in values if lo <= v <= hi} - tried), dtype=np.int64)
        tried.update(int(v) for v in values)
        if values.size:
            for v, x in zip(values, solve_dots(w, values, xlo, xhi), strict=True):
                if x is not None:
                    found[int(v)] = x

    # this channel's own reachable range (the layer's is the union over channels)
    ch_lo = int(np.minimum(w * xlo, w * xhi).sum())
    ch_hi = int(np.maximum(w * xlo, w * xhi).sum())
    lo, hi = max(lo, ch_lo), min(hi, ch_hi)
    ts = [int(v) for v in np.unique(t_row) if lo < v <= hi]  # T <= lo or > hi: no boundary

    def sides(t: int) -> tuple[bool, bool]:
        below = any(t - REACH <= v < t for v in found)
        above = any(t <= v <= t + REACH for v in found)
        return below, above

    attempt(v for t in ts for v in (t - 1, t, t + 1))
    for width in (4, 16, REACH):
        missing = [t for t in ts if not all(sides(t))]
        if not missing:
            break
        attempt(v for t in missing for v in range(t - width, t + width + 1))
    both = sum(all(sides(t)) for t in ts)
    return found, both, len(ts)


def boundary_cases(target, layers_by_output: dict) -> dict[str, np.ndarray]:
    """Inputs putting ``target``'s accumulator on (or nearest to) every threshold.

    Returns ``channel``, ``acc`` (hardware orientation), ``bracketed``/``thresholds`` (how many
    thresholds in range have a tested value on both sides, of how many) and, where the
    accumulator comes from an MVAU, ``x`` (its input vectors, (N, MW)) and ``mvau``.
    """
    from fcnseg.host.package import parse_dtype

    layer = target.layer
    mvau = layer if layer.kind == "MVAU" else None
    if mvau is None:  # a Thresholding: its MVAU, if any, through pass-through layers
        src = layers_by_output.get(layer.inputs[0])
        while src is not None and src.kind not in ("MVAU", "ElementwiseAdd"):
            src = layers_by_output.get(src.inputs[0])
        mvau = src if src is not None and src.kind == "MVAU" else None
    t = np.asarray(layer.arrays["thresholds"]).astype(np.int64)
    lo, hi = target.acc_range
    chans, accs, xs = [], [], []
    bracketed = total = 0
    for c in range(t.shape[0]):
        if mvau is None:  # the input is the accumulator itself: every value is reachable
            ts = np.unique((np.unique(t[c])[:, None] + np.array([-1, 0, 1])).ravel())
            ts = ts[(ts >= lo) & (ts <= hi)]
            chans += [c] * len(ts)
            accs += [int(v) for v in ts]
            inner = [v for v in np.unique(t[c]) if lo < v <= hi]
            bracketed += len(inner)
            total += len(inner)
            continue
        w = np.asarray(mvau.arrays["weights"]).astype(np.int64)[:, c]
        xlo, xhi = parse_dtype(mvau.input_dtypes[0])
        found, both, n = _channel_cases(w, t[c], lo, hi, xlo, xhi)
        bracketed += both
        total += n
        for v in sorted(found):
            chans.append(c)
            accs.append(v)
            xs.append(found[v])
    out = {
        "channel": np.array(chans, dtype=np.int64),
        "acc": np.array(accs, dtype=np.int64),
        "bracketed": bracketed,
        "thresholds": total,
    }
    if mvau is not None:
        out["x"] = np.array(xs, dtype=np.int64).reshape(len(xs), -1)
        out["mvau"] = mvau
    return out


def exact_levels(target, cases) -> np.ndarray:
    from fcnseg.quantize.exact.levels import channels

    chans = channels(target.step)
    return np.array(
        [
            chans[c if len(chans) > 1 else 0].level(
                int(target.signs[c if len(target.signs) > 1 else 0]) * int(a)
            )
            for c, a in zip(cases["channel"], cases["acc"], strict=True)
        ]
    )


def _rows(cases, n_channels: int) -> np.ndarray:
    """(N, C) accumulators: each row holds its case's value in every channel."""
    return np.repeat(cases["acc"].reshape(-1, 1), n_channels, axis=1)


def sim_levels(target, cases) -> np.ndarray:
    from fcnseg.host.package import parse_dtype
    from fcnseg.host.sim.layers import MVAU, Thresholding

    layer = target.layer
    n = len(cases["acc"])
    if layer.kind == "MVAU":
        out = MVAU(layer, [parse_dtype(layer.input_dtypes[0])])(cases["x"])[0]
    else:
        channels = int(layer.attributes.get("NumChannels", layer.arrays["thresholds"].shape[0]))
        op = Thresholding(layer, [target.acc_range])
        out = op(_rows(cases, channels))[0]
    return np.asarray(out)[np.arange(n), cases["channel"]].astype(np.int64)


def finn_levels(target, cases, hw_graph) -> np.ndarray:
    """finn-plus's own ``execute_node`` of the package's HW-graph node on the same inputs."""
    from qonnx.custom_op.registry import getCustomOp

    node = next(n for n in hw_graph.graph.node if n.name == target.layer.name)
    inst = getCustomOp(node)
    n = len(cases["acc"])
    if target.layer.kind == "MVAU":
        x = cases["x"]
        width = int(inst.get_nodeattr("MH"))
    else:
        width = int(inst.get_nodeattr("NumChannels"))
        x = _rows(cases, width)
    inst.set_nodeattr("numInputVectors", [n])
    ctx = {t: hw_graph.get_initializer(t) for t in node.input[1:]}
    ctx[node.input[0]] = x.astype(np.float32)
    ctx[node.output[0]] = np.zeros((n, width), dtype=np.float32)
    inst.execute_node(ctx, hw_graph.graph)
    out = ctx[node.output[0]].reshape(n, width)
    return np.rint(out[np.arange(n), cases["channel"]]).astype(np.int64)


def _modules(model, name: str):
    """(conv, batch norm or None, quantizer) of the Brevitas model for a record step name."""
    if name.startswith("conv"):
        stage = getattr(model.features, f"stage{name[4]}")
        suffix = name[4:]
        return getattr(stage, name), getattr(stage, f"bn{suffix}"), getattr(stage, f"relu{suffix}")
    if name in ("fc6", "fc7"):
        k = name[2]
        return getattr(model, name), getattr(model, f"bn{k}"), getattr(model, f"relu{k}")
    if name.startswith("score"):
        return getattr(model, name), None, model.quant_fuse
    if name == "fuse_pool4_q":
        return None, None, model.quant_fuse
    raise KeyError(name)


def brevitas_levels(target, cases, model) -> np.ndarray:
    """float64 Brevitas on the same inputs: the layer's conv/bn/quantizer modules themselves."""
    import torch

    from fcnseg.quantize.exact.extract import float64_copy

    m = float64_copy(model)
    with torch.no_grad():
        m(torch.zeros(1, 3, 32, 32, dtype=torch.float64))
        conv, bn, quant = _modules(m, target.step.name)
        s_in = float(target.step.in_scale)
        if conv is None:  # the skip requantizer on an integer sum
            y = torch.from_numpy(cases["acc"].astype(np.float64) * s_in)
        else:
            k = conv.kernel_size[0]
            cin = conv.in_channels
            x = cases["x"].reshape(-1, k, k, cin).transpose(0, 3, 1, 2)
            y = conv(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64) * s_in))
            y = y[:, :, k // 2, k // 2][:, :, None, None]  # the output that sees the whole patch
            if bn is not None:
                y = bn(y)
            y = y[np.arange(len(cases["acc"])), cases["channel"]].reshape(-1)
        q = quant(y.reshape(-1))
        value = q.value if hasattr(q, "value") else q
        scale = float(quant.act_quant.scale().reshape(-1)[0])
        return np.rint(value.reshape(-1).numpy() / scale).astype(np.int64)
