"""An FCN as exact data: integer weights, rational parameters and the wiring between them.

The record is what ``fcnseg export`` writes next to the QONNX graph (``exact.json`` for the
structure and the rational parameters, ``exact.npz`` for the integer weights) and what the hw
flow's exact-threshold step and the reference forward read. Rationals are stored as ``"p/q"``
strings so that nothing is rounded on the way; the float32 parameters of a checkpoint are
dyadic rationals, derived scales (``value / 15``) are not.

Steps are executed in order; each reads and writes named integer tensors:

- ``conv``: integer convolution (stride 1, zero padding) of ``src`` with ``weight`` (OIHW),
  then, if ``quant`` is set, the per-channel quantizer of :mod:`.levels` (else the output is the
  raw accumulator: FCN-32s's scores);
- ``requant``: the quantizer applied to an integer tensor of scale ``in_scale`` (the skip sum);
- ``pool``: max-pool ``k`` x ``k`` / ``k``; ``upsample``: nearest x ``k``; ``add``: ``src + src2``.

Numpy and the standard library only: the hw flow and the tests read it without torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from fcnseg.atomic import atomic_path, atomic_write_text
from fcnseg.errors import UserError

FORMAT = "fcnseg-exact/1"
JSON_FILE = "exact.json"
NPZ_FILE = "exact.npz"
STEP_OPS = ("conv", "requant", "pool", "upsample", "add")


@dataclass(frozen=True)
class Quantizer:
    """``q = clamp(round_half_even(x / scale), lo, hi)`` (Brevitas ``IntQuant``, zero point 0)."""

    name: str
    scale: Fraction
    lo: int
    hi: int


@dataclass(frozen=True)
class BatchNorm:
    """Eval-mode batch norm: ``(x - mean) / sqrt(var + eps) * gamma + beta`` per channel."""

    mean: tuple[Fraction, ...]
    var: tuple[Fraction, ...]
    gamma: tuple[Fraction, ...]
    beta: tuple[Fraction, ...]
    eps: Fraction


@dataclass(frozen=True)
class Step:
    """One operation of the net; the fields a kind does not use stay at their defaults."""

    op: str
    name: str
    src: str
    dst: str
    src2: str = ""
    k: int = 0
    #: conv: int64 (O, I, kh, kw)
    weight: np.ndarray | None = field(default=None, compare=False, repr=False)
    padding: int = 0
    #: scale of the integers ``src`` holds (conv, requant)
    in_scale: Fraction = Fraction(1)
    #: conv: per output channel
    weight_scale: tuple[Fraction, ...] = ()
    bias: tuple[Fraction, ...] | None = None
    bn: BatchNorm | None = None
    quant: Quantizer | None = None

    @property
    def channels(self) -> int:
        if self.weight is not None:
            return int(self.weight.shape[0])
        return len(self.weight_scale) or 1


@dataclass(frozen=True)
class ExactNet:
    """The exact record of one net: its steps, input and output tensor names."""

    arch: str
    steps: tuple[Step, ...]
    input: str = "pixels"
    output: str = "scores"
    source: dict[str, Any] = field(default_factory=dict)

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def thresholded(self) -> list[Step]:
        """Steps that end in a quantizer (each becomes a thresholding layer in hardware)."""
        return [s for s in self.steps if s.quant is not None]


# ------------------------------------------------------------------------------- (de)serialise


def _q(x: Fraction) -> str:
    return str(Fraction(x))


def _qs(xs: tuple[Fraction, ...] | None) -> list[str] | None:
    return None if xs is None else [_q(x) for x in xs]


def _f(text: Any, where: str) -> Fraction:
    try:
        return Fraction(str(text))
    except (ValueError, ZeroDivisionError) as error:
        raise UserError(f"{where}: {text!r} is not a rational number") from error


def _fs(items: Any, where: str) -> tuple[Fraction, ...]:
    if not isinstance(items, list):
        raise UserError(f"{where}: expected a list of rationals")
    return tuple(_f(x, where) for x in items)


def _step_json(s: Step) -> dict[str, Any]:
    out: dict[str, Any] = {"op": s.op, "name": s.name, "src": s.src, "dst": s.dst}
    if s.src2:
        out["src2"] = s.src2
    if s.k:
        out["k"] = s.k
    if s.op in ("conv", "requant"):
        out["in_scale"] = _q(s.in_scale)
    if s.op == "conv":
        out.update(padding=s.padding, weight_scale=_qs(s.weight_scale), bias=_qs(s.bias))
        if s.bn is not None:
            bn = s.bn
            out["bn"] = {
                "mean": _qs(bn.mean),
                "var": _qs(bn.var),
                "gamma": _qs(bn.gamma),
                "beta": _qs(bn.beta),
                "eps": _q(bn.eps),
            }
    if s.quant is not None:
        q = s.quant
        out["quant"] = {"name": q.name, "scale": _q(q.scale), "lo": q.lo, "hi": q.hi}
    return out


def _step_from_json(d: dict[str, Any], weights: Any, where: str) -> Step:
    op = d.get("op")
    if op not in STEP_OPS:
        raise UserError(f"{where}: unknown op {op!r}")
    name = str(d["name"])
    w = f"{where} step {name}"
    quant = None
    if d.get("quant") is not None:
        q = d["quant"]
        quant = Quantizer(str(q["name"]), _f(q["scale"], w), int(q["lo"]), int(q["hi"]))
    bn = None
    if d.get("bn") is not None:
        b = d["bn"]
        bn = BatchNorm(
            _fs(b["mean"], w),
            _fs(b["var"], w),
            _fs(b["gamma"], w),
            _fs(b["beta"], w),
            _f(b["eps"], w),
        )
    weight = None
    if op == "conv":
        key = f"{name}.weight"
        if key not in weights:
            raise UserError(f"{where}: {NPZ_FILE} has no {key}")
        weight = np.asarray(weights[key]).astype(np.int64)
        if weight.ndim != 4:
            raise UserError(f"{w}: weight must be OIHW, got shape {weight.shape}")
    return Step(
        op=op,
        name=name,
        src=str(d["src"]),
        dst=str(d["dst"]),
        src2=str(d.get("src2", "")),
        k=int(d.get("k", 0)),
        weight=weight,
        padding=int(d.get("padding", 0)),
        in_scale=_f(d.get("in_scale", "1"), w),
        weight_scale=_fs(d.get("weight_scale") or [], w),
        bias=None if d.get("bias") is None else _fs(d["bias"], w),
        bn=bn,
        quant=quant,
    )


def save_net(net: ExactNet, folder: str | Path) -> None:
    """Write ``exact.json`` and ``exact.npz`` into ``folder`` (each atomically)."""
    folder = Path(folder)
    doc = {
        "format": FORMAT,
        "arch": net.arch,
        "input": net.input,
        "output": net.output,
        "source": net.source,
        "steps": [_step_json(s) for s in net.steps],
    }
    arrays = {
        f"{s.name}.weight": s.weight.astype(
            np.int8 if np.abs(s.weight).max(initial=0) < 128 else np.int32
        )
        for s in net.steps
        if s.weight is not None
    }
    with atomic_path(folder / NPZ_FILE) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    atomic_write_text(folder / JSON_FILE, json.dumps(doc, indent=1) + "\n")


def copy_net(src: str | Path, dst: str | Path) -> None:
    """Copy the record files of folder ``src`` into folder ``dst`` (created)."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for name in (JSON_FILE, NPZ_FILE):
        data = (Path(src) / name).read_bytes()
        with atomic_path(dst / name) as tmp:
            Path(tmp).write_bytes(data)


def has_net(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / JSON_FILE).is_file() and (folder / NPZ_FILE).is_file()


def load_net(folder: str | Path) -> ExactNet:
    """Read the record in ``folder``; one-line :class:`UserError` if it is missing or malformed."""
    folder = Path(folder)
    where = str(folder / JSON_FILE)
    if not has_net(folder):
        raise UserError(
            f"{folder} has no exact record ({JSON_FILE} + {NPZ_FILE}); re-export the checkpoint "
            "with `fcnseg export` (exports made before 2026-12 lack it)"
        )
    try:
        doc = json.loads((folder / JSON_FILE).read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{where}: not readable JSON ({error})") from error
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UserError(f"{where}: format must be {FORMAT!r}")
    try:
        with np.load(folder / NPZ_FILE, allow_pickle=False) as weights:
            steps = tuple(_step_from_json(d, weights, where) for d in doc["steps"])
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{where}: malformed record ({error})") from error
    return ExactNet(
        arch=str(doc["arch"]),
        steps=steps,
        input=str(doc.get("input", "pixels")),
        output=str(doc.get("output", "scores")),
        source=dict(doc.get("source") or {}),
    )
