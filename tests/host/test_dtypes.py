"""The datatype helpers beside the package format: ranges, bit widths, the integer check.

``dtype_bits`` is the one bit-width rule the simulator (AccPool shifts), the pynq backend and
the emulated board (stream packing) share; here it is checked against qonnx's own ``DataType``
where qonnx is installed (the build env), and against hand-written values everywhere.
"""

from __future__ import annotations

import pytest

from fcnseg.errors import UserError
from fcnseg.host.package import dtype_bits, is_integer_dtype, parse_dtype

NAMES = ["UINT8", "UINT4", "UINT1", "INT4", "INT8", "INT16", "INT9", "INT2", "BIPOLAR", "BINARY",
         "TERNARY", "INT32", "UINT24"]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "bits", "signed", "lo", "hi"),
    [
        ("UINT8", 8, False, 0, 255),
        ("INT4", 4, True, -8, 7),
        ("INT9", 9, True, -256, 255),
        ("UINT1", 1, False, 0, 1),
        ("BINARY", 1, False, 0, 1),
        ("BIPOLAR", 1, False, -1, 1),
        ("TERNARY", 2, True, -1, 1),
    ],
)
def test_bits_and_ranges(name: str, bits: int, signed: bool, lo: int, hi: int) -> None:
    assert dtype_bits(name) == (bits, signed)
    assert parse_dtype(name) == (lo, hi)
    assert is_integer_dtype(name)


@pytest.mark.parametrize("name", NAMES)
def test_bits_agree_with_qonnx(name: str) -> None:
    datatype = pytest.importorskip("qonnx.core.datatype").DataType[name]
    bits, signed = dtype_bits(name)
    assert bits == datatype.bitwidth()
    assert parse_dtype(name) == (int(datatype.min()), int(datatype.max()))
    if name != "BIPOLAR":  # qonnx calls BIPOLAR signed; on the stream it is one unsigned bit
        assert signed == datatype.signed()


@pytest.mark.parametrize("name", ["FLOAT32", "INT", "UINT0", "INT100", "int8", "", "FIXED<8,4>"])
def test_non_integer_names_are_refused(name: str) -> None:
    assert not is_integer_dtype(name)
    with pytest.raises(UserError, match="unsupported datatype"):
        dtype_bits(name)
