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

#: coins left to the exact dynamic programme.
DP_COINS = 6
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
    big, small = order[:-DP_COINS], order[-DP_COINS:]
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
