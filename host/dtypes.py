"""The integer datatypes of a deployment package: canonical qonnx names -> ranges and widths.

A package names every stream's and array's type as qonnx does (``"UINT8"``, ``"INT4"``,
``"BIPOLAR"``; :mod:`fcnseg.host.package`). This module turns those names into what the loader,
the validation (:mod:`fcnseg.host.validation`) and the simulator's range proofs
(:mod:`fcnseg.host.sim.ranges`) reason with. It is its own small module, below all of them, so
that they can share it without importing each other; :mod:`fcnseg.host.package` re-exports it.
"""

from __future__ import annotations

import re

from fcnseg.errors import UserError

_DTYPE_RE = re.compile(r"^(U?INT([1-9][0-9]?)|BIPOLAR|BINARY|TERNARY)$")


def parse_dtype(name: str) -> tuple[int, int]:
    """Return the integer range ``(min, max)`` of a canonical qonnx datatype name.

    Only the integer types a dataflow accelerator streams are accepted (``UINT8``, ``INT4``,
    ``BIPOLAR`` ...); floats or unknown names raise :class:`UserError`.
    """
    m = _DTYPE_RE.match(str(name))
    if not m:
        raise UserError(f"unsupported datatype {name!r} (expected e.g. UINT8, INT4, BIPOLAR)")
    if name == "BIPOLAR":
        return -1, 1
    if name == "BINARY":
        return 0, 1
    if name == "TERNARY":
        return -1, 1
    bits = int(m.group(2))
    if name.startswith("U"):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def is_integer_dtype(name: str) -> bool:
    """Whether ``name`` is one of the integer datatypes :func:`parse_dtype` accepts."""
    return _DTYPE_RE.match(str(name)) is not None


def dtype_bits(name: str) -> tuple[int, bool]:
    """``(bit width, signed)`` of an integer qonnx datatype name, as qonnx's
    ``DataType.bitwidth()`` and ``signed()`` give them: the width of one value on the stream.

    ``UINT8`` -> (8, False), ``INT4`` -> (4, True), ``BINARY`` -> (1, False); ``BIPOLAR``
    (-1/+1) travels as one bit 0/1, so (1, False); ``TERNARY`` (-1/0/+1) takes two signed bits.
    """
    if name == "BIPOLAR":
        return 1, False
    if name == "TERNARY":
        return 2, True
    lo, hi = parse_dtype(name)
    return int(hi - lo).bit_length(), lo < 0
