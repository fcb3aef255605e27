"""One quantizer channel as an exact function of its integer input, and its thresholds.

For a ``conv`` step with accumulator ``a`` (the integer dot product of integer weights and
integer inputs) the value reaching the quantizer of channel ``c`` is, in exact arithmetic::

    y = in_scale * weight_scale[c] * a + bias[c]                 (the convolution's output)
    z = (y - mean[c]) / sqrt(var[c] + eps) * gamma[c] + beta[c]  (batch norm, if any)
    q = clamp(round_half_even(z / s), lo, hi)                     (the quantizer)

and for a ``requant`` step ``z = in_scale * a``. ``q >= k`` holds exactly when ``z > (k - 1/2) s``,
or ``z == (k - 1/2) s`` and ``k`` is even (the tie rounds to the even neighbour). The square root
is never evaluated: ``sign(A - B sqrt(D))`` is decided from the signs of ``A``, ``B`` and of
``A^2 - B^2 D`` in rationals, so the comparison is exact even at ties.

The hardware counts ``q = lo + #{k : x >= T_k}``. The exact threshold ``T_k`` is therefore the
least integer accumulator value with ``q >= k``: the solver starts from a float64 estimate of the
root and moves by whole steps until the exact predicate changes between ``T_k - 1`` and ``T_k``.
Thresholds are clipped to the accumulator's reachable range ``[lo, hi + 1]``, which changes no
count. ``sign`` (per channel, +1 or -1) is the hardware's orientation: finn absorbs a negative
batch-norm factor into the weights, so its accumulator is ``sign * a``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from fcnseg.quantize.exact.record import Step

HALF = Fraction(1, 2)
#: how far (in whole accumulator steps) the float64 estimate may be off before we call it a bug.
MAX_ADJUST = 64


def sign_a_minus_b_sqrt_d(a: Fraction, b: Fraction, d: Fraction) -> int:
    """``sign(a - b * sqrt(d))`` for rationals with ``d > 0``, exactly."""
    if b == 0:
        return (a > 0) - (a < 0)
    if b > 0 and a <= 0:
        return -1
    if b < 0 and a >= 0:
        return 1
    diff = a * a - b * b * d  # a and b*sqrt(d) have the same sign here
    s = (diff > 0) - (diff < 0)
    return s if a > 0 else -s


@dataclass(frozen=True)
class Channel:
    """One output channel of a quantized step: ``z(a) - t`` decided exactly.

    With batch norm, ``z(a) - t`` has the sign of ``slope * a + offset - (t - beta) * sqrt(d)``
    (multiplying by ``sqrt(d) > 0``); without, of ``slope * a + offset - t``.
    """

    slope: Fraction
    offset: Fraction
    beta: Fraction
    d: Fraction | None  # var + eps, or None without batch norm
    scale: Fraction  # the quantizer's
    lo: int
    hi: int

    def compare(self, a: int, t: Fraction) -> int:
        """``sign(z(a) - t)``."""
        lhs = self.slope * a + self.offset
        if self.d is None:
            diff = lhs - t
            return (diff > 0) - (diff < 0)
        return sign_a_minus_b_sqrt_d(lhs, t - self.beta, self.d)

    def reaches(self, a: int, k: int) -> bool:
        """``q(a) >= k``: ``z > (k - 1/2) s``, or equal with ``k`` even."""
        c = self.compare(a, (k - HALF) * self.scale)
        return c > 0 or (c == 0 and k % 2 == 0)

    def level(self, a: int) -> int:
        """``q(a)``, the quantizer's output for accumulator ``a`` (model orientation)."""
        q = self.lo
        for k in range(self.lo + 1, self.hi + 1):
            if not self.reaches(a, k):
                break
            q = k
        return q

    def increasing(self) -> int:
        """+1 if ``z`` grows with ``a``, -1 if it falls, 0 if constant."""
        s = self.slope
        return (s > 0) - (s < 0)

    def root(self, k: int) -> float:
        """float64 estimate of the real ``a`` where ``z(a) = (k - 1/2) s`` (nan if constant)."""
        if self.slope == 0:
            return math.nan
        t = float((k - HALF) * self.scale)
        if self.d is None:
            return (t - float(self.offset)) / float(self.slope)
        return ((t - float(self.beta)) * math.sqrt(float(self.d)) - float(self.offset)) / float(
            self.slope
        )


def channels(step: Step) -> list[Channel]:
    """The exact per-channel functions of a step that ends in a quantizer."""
    q = step.quant
    if q is None:
        raise ValueError(f"step {step.name} has no quantizer")
    if step.op == "requant":
        return [Channel(step.in_scale, Fraction(0), Fraction(0), None, q.scale, q.lo, q.hi)]
    out = []
    for c in range(step.channels):
        alpha = step.in_scale * step.weight_scale[c]
        bias = step.bias[c] if step.bias is not None else Fraction(0)
        if step.bn is None:
            out.append(Channel(alpha, bias, Fraction(0), None, q.scale, q.lo, q.hi))
            continue
        bn = step.bn
        gamma = bn.gamma[c]
        # (y - mean) * gamma with y = alpha * a + bias
        out.append(
            Channel(
                alpha * gamma,
                (bias - bn.mean[c]) * gamma,
                bn.beta[c],
                bn.var[c] + bn.eps,
                q.scale,
                q.lo,
                q.hi,
            )
        )
    return out


def natural_signs(step: Step) -> np.ndarray:
    """Per channel +1 where the level grows with the accumulator (or is constant), else -1:
    the orientation in which every channel's thresholds count upwards (what finn builds)."""
    return np.array([-1 if ch.increasing() < 0 else 1 for ch in channels(step)], dtype=np.int64)


def _least_reaching(ch: Channel, k: int, sign: int, lo: int, hi: int) -> int:
    """Least ``x`` in ``[lo, hi + 1]`` with ``q(sign * x) >= k`` (``hi + 1`` if none in range)."""

    def p(x: int) -> bool:
        return x > hi or ch.reaches(sign * x, k)

    direction = ch.increasing() * sign
    if direction == 0:  # constant channel: every x or none
        return lo if p(lo) else hi + 1
    if direction < 0:
        raise ValueError("the channel falls with the hardware accumulator (orientation wrong)")
    r = sign * ch.root(k)
    x = lo if not math.isfinite(r) else int(min(max(math.ceil(r), lo), hi + 1))
    for _ in range(MAX_ADJUST):
        if x > lo and p(x - 1):
            x -= 1
        elif not p(x):
            x += 1
        else:
            return x
    raise ValueError(f"threshold search did not settle near {r} (level {k})")


def thresholds(
    step: Step, acc_range: tuple[int, int], signs: np.ndarray | None = None
) -> np.ndarray:
    """Exact integer thresholds ``(C, hi - lo)`` of ``step``, clipped to ``acc_range``.

    ``signs``: the hardware orientation per channel (default +1). For a ``requant`` step the
    result has one row (the same quantizer for every channel).
    """
    chans = channels(step)
    lo, hi = (int(v) for v in acc_range)
    if signs is None:
        signs = np.ones(len(chans), dtype=np.int64)
    out = np.empty((len(chans), chans[0].hi - chans[0].lo), dtype=np.int64)
    for c, ch in enumerate(chans):
        for j, k in enumerate(range(ch.lo + 1, ch.hi + 1)):
            out[c, j] = _least_reaching(ch, k, int(signs[c]), lo, hi)
    return out
