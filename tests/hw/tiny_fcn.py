"""Tiny Brevitas FCN-32s / FCN-8s used to develop and test the hw flow without trained models.

They follow the model conventions of CONTRACTS.md (raw 0..255 pixels in, x/255 into an 8-bit
unsigned quantizer with a fixed 1/255 scale, 4-bit weights/activations, "same" convs, 2x2 pools,
output stride 32 or 8, skips fused by addition under one shared quantizer) but are a few hundred
parameters, so a finn-plus build of them takes seconds. Real exports come from ``fcnseg export``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _build(arch: str, classes: int = 3, width: int = 8, seed: int = 0):
    import brevitas.nn as qnn
    import torch
    from brevitas.quant import Int8Bias  # noqa: F401  (kept for parity with real exports)
    from torch import nn

    torch.manual_seed(seed)

    def conv(cin: int, cout: int, k: int = 3, bias: bool = False) -> nn.Module:
        return qnn.QuantConv2d(cin, cout, k, padding=k // 2, bias=bias, weight_bit_width=4)

    def act(bits: int = 4) -> nn.Module:
        return qnn.QuantReLU(bit_width=bits, return_quant_tensor=True)

    class TinyFCN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.arch = arch
            self.input_quant = qnn.QuantIdentity(
                bit_width=8,
                signed=False,
                scaling_impl_type="const",
                scaling_init=1.0,
                return_quant_tensor=True,
            )
            w = width
            chans = [3, w, w, 2 * w, 2 * w, 2 * w]
            self.blocks = nn.ModuleList()
            for i in range(5):  # 1/2 ... 1/32
                self.blocks.append(
                    nn.Sequential(
                        conv(chans[i], chans[i + 1]),
                        nn.BatchNorm2d(chans[i + 1]),
                        act(),
                        nn.MaxPool2d(2, 2),
                    )
                )
            self.fc6 = nn.Sequential(conv(2 * w, 2 * w), nn.BatchNorm2d(2 * w), act())
            self.score_fr = conv(2 * w, classes, 1, bias=True)
            if arch == "fcn8s":
                self.score_pool4 = conv(2 * w, classes, 1, bias=True)
                self.score_pool3 = conv(2 * w, classes, 1, bias=True)
                self.fuse4 = qnn.QuantIdentity(bit_width=8, return_quant_tensor=True)
                self.fuse3 = qnn.QuantIdentity(bit_width=8, return_quant_tensor=True)
                self.up = nn.Upsample(scale_factor=2, mode="nearest")

        def forward(self, x):
            x = self.input_quant(x / 255.0)
            feats = []
            for block in self.blocks:
                x = block(x)
                feats.append(x)
            score = self.score_fr(self.fc6(x))  # 1/32
            if self.arch == "fcn32s":
                return score
            # skips fused by addition under one shared quantizer (equal scales for AddStreams)
            s4 = self.fuse4(self.score_pool4(feats[3]))  # 1/16
            up = self.up(self.fuse4(score))
            x = self.fuse3(up + s4)
            s3 = self.fuse3(self.score_pool3(feats[2]))  # 1/8
            x = self.up(x) + s3
            return x.value  # plain tensor: one graph output, like `fcnseg export`

    model = TinyFCN()
    # give the batch norms non-trivial statistics, like a trained model has
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.3)
    model.eval()
    return model


def make_export(arch: str, tile: tuple[int, int], out_dir: Path, classes: int = 3):
    """Write ``model.onnx`` (QONNX) + ``model.json`` for a tiny ``arch`` net at ``tile``.

    Returns the Brevitas model (eval mode) that was exported, the reference for exactness tests.
    """
    import torch
    from brevitas.export import export_qonnx

    out_dir.mkdir(parents=True, exist_ok=True)
    model = _build(arch, classes)
    h, w = tile
    x = torch.zeros(1, 3, h, w)
    export_qonnx(model, x, export_path=str(out_dir / "model.onnx"), dynamo=False)
    _mark_uint8_input(out_dir / "model.onnx")
    stride = 32 if arch == "fcn32s" else 8
    card = {
        "format": "fcnseg-export/1",
        "arch": arch,
        "classes": [f"class{i}" for i in range(classes)],
        "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0]][:classes],
        "input": {"dtype": "UINT8", "layout": "NCHW", "normalisation": "x/255"},
        "tile": [h, w],
        "output_stride": stride,
        "output_scale": [1.0] * classes,
        "output_bias": [0.0] * classes,
        "receptive_field": 96,
        "config": {"arch": arch},
    }
    (out_dir / "model.json").write_text(json.dumps(card, indent=2))
    return model


def _mark_uint8_input(path: Path) -> None:
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(str(path))
    model.set_tensor_datatype(model.graph.input[0].name, DataType["UINT8"])
    model.save(str(path))


def photo_tile(name: str, tile: tuple[int, int]) -> np.ndarray:
    """A real scikit-image photo resized to ``tile``, as float NCHW 0..255 integers."""
    import skimage.data
    from skimage.transform import resize

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = resize(img[..., :3], tile, preserve_range=True, anti_aliasing=True)
    return np.round(img).astype(np.float32).transpose(2, 0, 1)[None]
