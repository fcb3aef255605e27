"""Checks on what ``fcnseg compile`` is given, made before finn runs (milliseconds, not a build).

finn-plus accepts any ONNX file and fails deep inside a step: a QCDQ export (the
``QuantizeLinear``/``DequantizeLinear`` form ``fcnseg export`` writes for onnxruntime) gets 25 s
into streamlining before an unrelated-looking error, a float model converts to nothing useful,
and a damaged file surfaces as a protobuf traceback. Reading the graph's op types first tells the
three apart from the QONNX export finn needs (``Quant`` nodes, qonnx's quantizer op), in one line.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fcnseg.errors import UserError

#: the QONNX export ``fcnseg export`` writes (and ``fcnseg compile`` reads) in an export folder.
QONNX_FILE = "model.onnx"
#: qonnx's quantizer ops: a QONNX model carries its quantization in these.
QONNX_QUANT_OPS = frozenset({"Quant", "BipolarQuant", "Trunc"})
#: the standard ONNX quantize/dequantize pair of a QCDQ export.
QCDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def op_types(path: Path) -> Counter[str]:
    """How often each op type occurs in the ONNX graph at ``path`` (UserError if it is none)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf and onnx raise assorted types on a damaged file
        raise UserError(f"{path} is not an ONNX model ({type(error).__name__})") from None
    if not model.graph.node:
        raise UserError(f"{path} is not an ONNX model (no graph nodes)")
    return Counter(node.op_type for node in model.graph.node)


def check_qonnx(path: Path) -> None:
    """Refuse ``path`` unless it is a QONNX model: a QCDQ export, a float or a junk file each
    get their own one-line error saying what to give instead."""
    ops = op_types(path)
    quant = sum(ops[op] for op in QONNX_QUANT_OPS)
    qcdq = sum(ops[op] for op in QCDQ_OPS)
    if quant:
        return
    if qcdq:
        sibling = path.parent / QONNX_FILE
        where = (
            f"`fcnseg compile {path.parent}` uses {sibling}"
            if sibling.is_file() and sibling.resolve() != Path(path).resolve()
            else f"{QONNX_FILE} in the folder `fcnseg export` wrote"
        )
        raise UserError(
            f"{path} is a QCDQ export ({qcdq} QuantizeLinear/DequantizeLinear nodes, no Quant "
            f"nodes); finn-plus compiles the QONNX export: {where}"
        )
    common = ", ".join(op for op, _ in ops.most_common(4))
    raise UserError(
        f"{path} is not a quantized QONNX model (no Quant nodes; ops {common}, ...): "
        "export a quantized checkpoint with `fcnseg export`"
    )


def resolve_export(path: Path) -> Path:
    """The export folder for what the user named: the folder, or its ``model.onnx``.

    Any ``.onnx`` file is checked first, so a QCDQ or float file gets its own message rather
    than "give the folder".
    """
    path = Path(path)
    if path.is_dir():
        model = path / QONNX_FILE
        if model.is_file():
            check_qonnx(model)
        return path
    if path.suffix == ".onnx":
        check_qonnx(path)
        if path.name == QONNX_FILE:
            return path.parent
    raise UserError(
        f"{path} is a file; give the export folder (model.onnx + model.json from `fcnseg export`)"
        + (f", e.g. {path.parent}" if (path.parent / QONNX_FILE).is_file() else "")
    )
