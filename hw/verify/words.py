"""Stream words in finn's rtlsim convention, packed and unpacked with numpy (no finn, no loops).

finn-plus feeds a node's RTL one *word* per transfer: the innermost dimension of the folded
shape (``get_folded_input_shape``: ``(..., SIMD)`` values of ``bits`` each) is packed into one
integer of ``width`` bits (``get_instream_width``). ``npy_to_rtlsim_input`` (with its default
``reverse_inner=True``) reverses that dimension and writes it most significant value first, so
value ``i`` of the innermost dimension lands on bits ``[i * bits, (i + 1) * bits)``: value 0 is
the least significant. Signed values are stored in two's complement of ``bits`` bits,
``BIPOLAR`` -1/+1 as one bit 0/1; the bits above ``SIMD * bits`` are zero.
``rtlsim_output_to_npy`` reads words back the same way and sign-extends signed types (the
padding bits above the values are ignored, as there).

On the wire (the harness protocol of :mod:`.verilator_build`) a word is ``(width + 7) // 8``
little-endian bytes. Here a word is built as a bit matrix (one row per word, bit ``j`` of the
row is bit ``j`` of the word) and turned into bytes by ``np.packbits(bitorder="little")``, so
any width, 1 to thousands of bits, costs a few numpy passes over the tensor and no Python loop
per value: the part of finn's rtlsim path that took most of its time (its Python integers and
hex strings per word).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fcnseg.errors import UserError
from fcnseg.host.package import dtype_bits, parse_dtype

#: the widest value :func:`pack`/:func:`unpack` handle (values travel as int64)
MAX_VALUE_BITS = 64
_INT64 = np.iinfo(np.int64)


def word_bytes(width: int) -> int:
    """Bytes per word on the wire: the stream width rounded up to whole bytes."""
    return (int(width) + 7) // 8


def _layout(dtype: str, width: int, per_word: int) -> tuple[int, bool]:
    """``(bits, signed)`` of ``dtype``; one-line error unless ``per_word`` values fit ``width``."""
    bits, signed = dtype_bits(dtype)
    if bits > MAX_VALUE_BITS:
        raise UserError(f"{dtype}: values wider than {MAX_VALUE_BITS} bits are not supported")
    if width < 1:
        raise UserError(f"stream width {width} bits: must be at least 1")
    if per_word * bits > width:
        raise UserError(
            f"{per_word} values of {dtype} ({per_word * bits} bits) do not fit a {width}-bit word"
        )
    return bits, signed


def _check_range(values: np.ndarray, dtype: str) -> None:
    lo, hi = parse_dtype(dtype)
    lo, hi = max(lo, _INT64.min), min(hi, _INT64.max)
    bad = (values < lo) | (values > hi)
    if dtype == "BIPOLAR":
        bad |= values == 0
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        raise UserError(
            f"value {int(values[at])} at {list(at)} is outside {dtype} [{lo}, {hi}]"
            + (" (BIPOLAR is -1 or +1)" if dtype == "BIPOLAR" else "")
        )


def pack(values: np.ndarray, dtype: str, width: int) -> bytes:
    """Integer ``values`` in a folded shape ``(..., per_word)`` -> the stream's bytes.

    One word per index of the leading dimensions (C order), ``word_bytes(width)`` bytes each;
    value ``i`` of the last dimension on bits ``[i * bits, (i + 1) * bits)`` (module docstring).
    One-line :class:`UserError` when a value is outside ``dtype`` or the values do not fit.
    """
    a = np.asarray(values)
    if a.ndim == 0:
        a = a.reshape(1, 1)
    if a.dtype.kind not in "iub":
        if not np.array_equal(a, np.round(a)):
            raise UserError(f"pack: {dtype} values must be integers, got {a.dtype} fractions")
    a = a.astype(np.int64)
    per_word = a.shape[-1]
    bits, _ = _layout(dtype, width, per_word)
    _check_range(a, dtype)
    if dtype == "BIPOLAR":
        a = (a + 1) // 2
    nbytes = word_bytes(width)
    # each value's low bytes (little-endian two's complement), then its low ``bits`` bits
    vbytes = (bits + 7) // 8
    low = a.reshape(-1, per_word).astype("<i8").view(np.uint8).reshape(-1, per_word, 8)
    low = low[:, :, :vbytes]
    out = np.zeros((low.shape[0], nbytes), dtype=np.uint8)
    if bits % 8 == 0:  # whole bytes: no bit matrix needed
        out[:, : per_word * vbytes] = low.reshape(low.shape[0], -1)
        return out.tobytes()
    matrix = np.unpackbits(low, axis=2, bitorder="little")[:, :, :bits]
    row = np.zeros((low.shape[0], nbytes * 8), dtype=np.uint8)
    row[:, : per_word * bits] = matrix.reshape(low.shape[0], per_word * bits)
    return np.packbits(row, axis=1, bitorder="little").tobytes()


def unpack(data: bytes, dtype: str, width: int, folded_shape: Sequence[int]) -> np.ndarray:
    """The stream's bytes -> int64 values in ``folded_shape`` (inverse of :func:`pack`).

    Signed types are sign-extended, ``BIPOLAR`` bits become -1/+1; bits above the values are
    ignored, as finn's ``rtlsim_output_to_npy`` does. One-line :class:`UserError` when ``data``
    does not hold exactly one word per index of the leading dimensions of ``folded_shape``.
    """
    shape = tuple(int(v) for v in folded_shape)
    per_word = shape[-1] if shape else 1
    bits, signed = _layout(dtype, width, per_word)
    nbytes = word_bytes(width)
    count = int(np.prod(shape[:-1], dtype=np.int64)) if shape else 1
    if len(data) != count * nbytes:
        raise UserError(
            f"{len(data)} bytes are {len(data) / nbytes:g} words of {width} bits, "
            f"expected {count} for shape {shape}"
        )
    raw = np.frombuffer(data, dtype=np.uint8).reshape(count, nbytes)
    vbytes = (bits + 7) // 8
    low = np.zeros((count, per_word, 8), dtype=np.uint8)
    if bits % 8 == 0:  # whole bytes: no bit matrix needed
        low[:, :, :vbytes] = raw[:, : per_word * vbytes].reshape(count, per_word, vbytes)
    else:
        row = np.unpackbits(raw, axis=1, bitorder="little")[:, : per_word * bits]
        matrix = np.zeros((count, per_word, vbytes * 8), dtype=np.uint8)
        matrix[:, :, :bits] = row.reshape(count, per_word, bits)
        low[:, :, :vbytes] = np.packbits(matrix, axis=2, bitorder="little")
    out = low.view("<i8").reshape(count, per_word).astype(np.int64)
    if dtype == "BIPOLAR":
        out = 2 * out - 1
    elif signed and bits < 64:
        sign = np.int64(1) << np.int64(bits - 1)
        out = (out ^ sign) - sign
    return out.reshape(shape)
