"""Export a trained FCN at one fixed tile size: QONNX for finn-plus, QCDQ for onnxruntime, a card.

``export_model`` writes, into a fresh directory that replaces ``out_dir`` atomically:

- ``model.onnx``: QONNX (``brevitas.export.export_qonnx(..., dynamo=False)``), static shape
  ``[1, 3, H, W]``, input ``global_in`` annotated ``UINT8``, output ``global_out`` (float logits
  NCHW at ``output_stride``), cleaned up and shape-inferred with qonnx;
- ``model_qcdq.onnx``: the QCDQ export for onnxruntime (a speed reference; not bit-exact);
- ``model.json``: the model card (see :func:`model_card`);
- ``exact.json`` + ``exact.npz``: the exact record of a quantized model (integer weights,
  rational scales, biases and batch-norm parameters; :mod:`fcnseg.quantize.exact`), from which
  ``fcnseg compile`` computes thresholds that finn's float32 folding would misplace.

The integer scores of the accelerator are ``(logits - output_bias[c]) / output_scale[c]``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcnseg.atomic import replace_dir
from fcnseg.errors import UserError
from fcnseg.host.card import CARD_FILE, CARD_FORMAT, ModelCard
from fcnseg.host.images import voc_palette
from fcnseg.host.package import sha256_file
from fcnseg.quantize.exact.record import JSON_FILE as EXACT_JSON
from fcnseg.quantize.exact.record import NPZ_FILE as EXACT_NPZ
from fcnseg.quantize.exact.record import save_net
from fcnseg.quantize.models.common import FCNBase, receptive_field

INPUT_NAME = "global_in"
OUTPUT_NAME = "global_out"
QONNX_FILE = "model.onnx"
QCDQ_FILE = "model_qcdq.onnx"


def check_tile(tile: tuple[int, int], stride: int = 32) -> tuple[int, int]:
    """A tile is two positive multiples of the net's stride (32 for the five-pool backbones;
    a user's classifier (:mod:`fcnseg.quantize.own_classifier`) says its own)."""
    h, w = (int(t) for t in tile)
    if h < stride or w < stride or h % stride or w % stride:
        raise UserError(f"tile must be two positive multiples of {stride}, got {h}x{w}")
    return h, w


def default_palette(n: int) -> list[list[int]]:
    """The Pascal VOC colour map (:func:`fcnseg.host.images.voc_palette`), for checkpoints
    without one."""
    return voc_palette(n).tolist()


def model_card(
    model: FCNBase,
    meta: dict[str, Any],
    tile: tuple[int, int],
    source: Path | None = None,
) -> dict[str, Any]:
    """The model.json contents: everything the hw and host stages need besides the graph.

    The keys are :class:`fcnseg.host.card.ModelCard`'s (checked by parsing the result with it,
    so the writer cannot drift from the readers); ``input``/``output``/``files``/``metrics`` are
    informative extras."""
    cfg = model.cfg
    h, w = tile
    s = cfg.output_stride
    scale, bias = model.output_scale_bias()
    classes = list(meta.get("classes") or [f"class{i}" for i in range(cfg.num_classes)])
    palette = [list(map(int, c)) for c in (meta.get("palette") or default_palette(len(classes)))]
    if len(classes) != cfg.num_classes or len(palette) != cfg.num_classes:
        raise UserError(
            f"checkpoint has {len(classes)} classes / {len(palette)} colours "
            f"but the model {cfg.num_classes} outputs"
        )
    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "arch": cfg.arch,
        "quantized": cfg.quantized,
        "classes": classes,
        "palette": palette,
        "input": {
            "name": INPUT_NAME,
            "dtype": "UINT8",
            "layout": "NCHW",
            "shape": [1, 3, h, w],
            "normalisation": "pixel/255 inside the net into an unsigned "
            f"{cfg.io_bits}-bit quantizer with fixed scale 1/255 (feed raw 0..255 RGB)",
        },
        "output": {
            "name": OUTPUT_NAME,
            "layout": "NCHW",
            "shape": [1, cfg.num_classes, *output_cells(model, tile)],
            "meaning": "logits = q * output_scale[c] + output_bias[c] with integer scores q",
        },
        "tile": [h, w],
        "output_stride": s,
        "net_stride": cfg.net_stride,
        "output_scale": [float(v) for v in scale],
        "output_bias": [float(v) for v in bias],
        "receptive_field": (
            model.receptive_field() if hasattr(model, "receptive_field") else receptive_field(cfg)
        ),
        "model_config": cfg.to_dict(),
        "files": {"qonnx": QONNX_FILE, "qcdq": QCDQ_FILE},
    }
    # a converted classifier adds what the host needs to classify ("task", "window")
    card.update(model.card_facts() if hasattr(model, "card_facts") else {})
    if "metrics" in meta:
        card["metrics"] = meta["metrics"]
    if source is not None:
        card["source_checkpoint"] = {"file": source.name, "sha256": sha256_file(source)}
    ModelCard.from_json(card, where=CARD_FILE)
    return card


def output_cells(model: FCNBase, tile: tuple[int, int]) -> tuple[int, int]:
    """The score map's (rows, columns) at ``tile``: ``tile / output_stride`` for the same-padded
    FCNs; a converted classifier (``models.classifier.ConvClassifier``) says its own."""
    if hasattr(model, "output_cells"):
        return tuple(model.output_cells(tile))
    s = model.cfg.output_stride
    return tile[0] // s, tile[1] // s


def export_qonnx_file(model: FCNBase, tile: tuple[int, int], path: Path) -> None:
    """QONNX export at a static ``[1, 3, H, W]``; input annotated UINT8; names global_in/out."""
    from brevitas.export import export_qonnx
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model

    x = torch.zeros(1, 3, *tile)
    export_qonnx(model, args=x, export_path=str(path), dynamo=False)
    wrapper = cleanup_model(ModelWrapper(str(path)))
    graph = wrapper.graph
    old_in, old_out = graph.input[0].name, graph.output[0].name
    wrapper.rename_tensor(old_in, INPUT_NAME)
    wrapper.rename_tensor(old_out, OUTPUT_NAME)
    wrapper.set_tensor_datatype(INPUT_NAME, DataType["UINT8"])
    wrapper = wrapper.transform(InferShapes())
    wrapper.save(str(path))


def export_qcdq_file(model: FCNBase, tile: tuple[int, int], path: Path) -> None:
    """QCDQ (QuantizeLinear/Clip/DequantizeLinear) export for onnxruntime."""
    import onnx
    from brevitas.export import export_onnx_qcdq

    x = torch.zeros(1, 3, *tile)
    export_onnx_qcdq(
        model, args=x, export_path=str(path), dynamo=False,
        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
    )  # fmt: skip
    # The TorchScript exporter lists weights as graph inputs too; onnxruntime then warns and
    # skips constant folding. Keep only the pixel input.
    proto = onnx.load(str(path))
    weights = {init.name for init in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in weights]
    del proto.graph.input[:]
    proto.graph.input.extend(inputs)
    onnx.save(proto, str(path))


def write_exact_record(model: FCNBase, folder: Path, source: Path | None) -> None:
    """The exact record of the quantized model (``exact.json`` + ``exact.npz``, see
    :mod:`fcnseg.quantize.exact`): what ``fcnseg compile`` solves the exact thresholds from."""
    from fcnseg.quantize.exact.extract import exact_net

    net = model.exact_net() if hasattr(model, "exact_net") else exact_net(model)
    if source is not None:
        net = replace(net, source={"file": source.name, "sha256": sha256_file(source)})
    save_net(net, folder)


def export_model(
    model: FCNBase,
    meta: dict[str, Any],
    tile: tuple[int, int],
    out_dir: str | os.PathLike[str],
    source: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Export ``model`` at ``tile`` into ``out_dir`` (replaced atomically); returns the card.

    The files are written into a temporary sibling directory that is renamed to ``out_dir`` at
    the end, so readers see either the old export or the complete new one.
    """
    tile = check_tile(tile, model.cfg.net_stride)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        with torch.no_grad():
            card = model_card(model, meta, tile, Path(source) if source else None)
            if model.cfg.quantized:
                write_exact_record(model, tmp, Path(source) if source else None)
                card["files"]["exact"] = [EXACT_JSON, EXACT_NPZ]
            export_qonnx_file(model, tile, tmp / QONNX_FILE)
            export_qcdq_file(model, tile, tmp / QCDQ_FILE)
        card["export_seconds"] = round(time.perf_counter() - started, 3)
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
        if out_dir.exists() and not out_dir.is_dir():
            raise UserError(f"output exists and is not a directory: {out_dir}")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return card


def export_checkpoint(
    checkpoint: str | os.PathLike[str], tile: tuple[int, int], out_dir: str | os.PathLike[str]
) -> dict[str, Any]:
    """Load a checkpoint (``io.load_checkpoint``) and :func:`export_model` it; a classifier's
    (``models.classifier``) is made fully convolutional by ``fc_to_conv`` first."""
    from fcnseg.quantize.models import classifier
    from fcnseg.quantize.models.io import load_checkpoint

    tile = check_tile(tile)
    if classifier.is_classifier_checkpoint(checkpoint):
        net, meta = classifier.load_classifier(checkpoint)
        model = classifier.convert(net)
        model.output_cells(tile)  # a tile smaller than the window is refused here, by name
    else:
        model, meta = load_checkpoint(checkpoint)
    return export_model(model, meta, tile, out_dir, source=checkpoint)


def tiling_warning(card: dict[str, Any]) -> str | None:
    """The line ``fcnseg compile`` and ``info`` print when ``card``'s tile is too small for an
    exact stitch (:func:`fcnseg.hw.info.tiling_warning`), said already at export time."""
    from fcnseg.hw.info import tiling_warning as geometry_warning

    return geometry_warning(ModelCard.from_json(card, where=CARD_FILE).geometry())


def integer_scores(logits: np.ndarray, card: dict[str, Any]) -> np.ndarray:
    """Logits NCHW -> the integer scores ``round((logits - bias) / scale)`` (int64)."""
    scale = np.asarray(card["output_scale"], dtype=np.float64).reshape(1, -1, 1, 1)
    bias = np.asarray(card["output_bias"], dtype=np.float64).reshape(1, -1, 1, 1)
    return np.rint((np.asarray(logits, dtype=np.float64) - bias) / scale).astype(np.int64)
