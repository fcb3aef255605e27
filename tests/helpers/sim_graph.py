"""Small Brevitas FCN-32s/FCN-8s nets (random weights, non-trivial batch norms) exported to QONNX,
converted with the hw flow's steps (streamline -> cut the float tail -> HW layers) and written as
a package by :func:`fcnseg.hw.to_package.build_package`: the whole-graph exactness tests and the
board tests' fixture (tests/board/data/make_fixture.py) use them. Needs torch, brevitas and finn
(imported inside the functions; callers skip first where they are missing)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

TILE = (64, 64)


def make_fcn(arch: str, wbits: int, abits: int, width: int, classes: int, seed: int):
    """A small VGG-style FCN following the model conventions (docs/contracts.md), random weights."""
    import brevitas.nn as qnn
    import torch
    from torch import nn

    torch.manual_seed(seed)

    def conv(cin, cout, k=3, bias=False):
        return qnn.QuantConv2d(cin, cout, k, padding=k // 2, bias=bias, weight_bit_width=wbits)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.input_quant = qnn.QuantIdentity(
                bit_width=8,
                signed=False,
                scaling_impl_type="const",
                scaling_init=1.0,
                return_quant_tensor=True,
            )
            chans = [3, width, width, 2 * width, 2 * width, 2 * width]
            self.blocks = nn.ModuleList(
                nn.Sequential(
                    conv(chans[i], chans[i + 1]),
                    nn.BatchNorm2d(chans[i + 1]),
                    qnn.QuantReLU(bit_width=abits, return_quant_tensor=True),
                    nn.MaxPool2d(2, 2),
                )
                for i in range(5)
            )
            self.fc6 = nn.Sequential(
                conv(2 * width, 2 * width),
                nn.BatchNorm2d(2 * width),
                qnn.QuantReLU(bit_width=abits, return_quant_tensor=True),
            )
            self.score_fr = conv(2 * width, classes, 1, bias=True)
            if arch == "fcn8s":
                self.score_pool4 = conv(2 * width, classes, 1, bias=True)
                self.score_pool3 = conv(2 * width, classes, 1, bias=True)
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
            if arch == "fcn32s":
                return score
            s4 = self.fuse4(self.score_pool4(feats[3]))  # 1/16
            x = self.fuse3(self.up(self.fuse4(score)) + s4)
            s3 = self.fuse3(self.score_pool3(feats[2]))  # 1/8
            return (self.up(x) + s3).value

    net = Net()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.3)
    return net.eval()


def quantize_fcn(arch: str, wbits: int, abits: int, width: int, classes: int, seed: int):
    """The shipped model family (fcnseg.quantize.models), small, random weights."""
    import torch
    from torch import nn

    models = pytest.importorskip("fcnseg.quantize.models")

    torch.manual_seed(seed)
    cfg = models.ModelConfig(
        arch=arch,
        num_classes=classes,
        widths=(width, width, 2 * width, 2 * width, 2 * width),
        depths=(1, 1, 2, 1, 1),
        head_width=2 * width,
        weight_bits=wbits,
        act_bits=abits,
    )
    net = models.build_model(cfg)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def build(arch, wbits, abits, width, classes, seed, out: Path, standalone: bool = False, tile=TILE):
    """Export at ``tile``, convert with the hw flow's steps, write the package.

    Returns (net, hw model, package path).
    """
    steps = pytest.importorskip("fcnseg.hw.steps.streamline")
    tail = pytest.importorskip("fcnseg.hw.steps.tail")
    convert = pytest.importorskip("fcnseg.hw.steps.convert")
    import torch
    from brevitas.export import export_qonnx
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    from fcnseg.hw.compat import prepare_finn
    from fcnseg.hw.to_package import build_package

    prepare_finn(out / "finn_build")
    from finn.builder.build_dataflow_config import DataflowBuildConfig
    from finn.builder.build_dataflow_steps import step_qonnx_to_finn, step_tidy_up

    if arch.startswith("quantize:"):
        net = quantize_fcn(arch.split(":", 1)[1], wbits, abits, width, classes, seed)
        arch = arch.split(":", 1)[1]
    else:
        net = make_fcn(arch, wbits, abits, width, classes, seed)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    export_qonnx(net, torch.zeros(1, 3, *tile), export_path=str(onnx_path), dynamo=False)
    model = ModelWrapper(str(onnx_path))
    model.set_tensor_datatype(model.graph.input[0].name, DataType["UINT8"])
    cfg = DataflowBuildConfig(
        output_dir=str(out / "build"),
        synth_clk_period_ns=10.0,
        generate_outputs=[],
        standalone_thresholds=standalone,
    )
    model = step_tidy_up(step_qonnx_to_finn(model, cfg), cfg)
    model = steps.step_fcn_streamline(model, cfg)
    model, affine = tail.cut_float_tail(model)
    model = model.transform(InferShapes()).transform(InferDataTypes())
    model = convert.step_fcn_convert_to_hw(model, cfg)
    card = {
        "name": f"{arch}-w{wbits}a{abits}",
        "arch": arch,
        "classes": [f"c{i}" for i in range(classes)],
        "palette": [[i, i, i] for i in range(classes)],
        "tile": list(tile),
        "output_stride": 32 if arch == "fcn32s" else 8,
    }
    (out / "model.json").write_text(json.dumps(card))
    pkg = build_package(
        model,
        out / "package",
        model_card=out / "model.json",
        board="pynq-z2",
        output_scale=affine["scale"],
        output_bias=affine["bias"],
        estimates={},
    )
    return net, model, pkg


def brevitas_scores(net, pkg, x: np.ndarray) -> np.ndarray:
    """Brevitas logits mapped back to integer scores (float error checked, then rounded)."""
    import torch

    with torch.no_grad():
        logits = net(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32)))
    logits = np.asarray(getattr(logits, "value", logits), dtype=np.float64).transpose(0, 2, 3, 1)
    s = (logits - pkg.output_bias) / pkg.output_scale
    r = np.round(s)
    assert np.abs(s - r).max() < 1e-2, "Brevitas logits are not on the package's integer grid"
    return r.astype(np.int64)
