"""fcnseg: quantized fully convolutional segmentation on Xilinx Zynq FPGAs.

The distribution holds three import packages, one per stage, each in its own top-level folder:

- ``fcnseg.quantize`` (``quantize/``): Brevitas QAT FCN-32s/16s/8s, FC->conv surgery, data, export.
- ``fcnseg.hw`` (``hw/``): the finn-plus flow from a QONNX export to a deployment package.
- ``fcnseg.host`` (``host/``): the numpy-only runtime (simulator or PYNQ board).

Importing this package imports nothing heavy: a PYNQ image has numpy and Pillow, not torch.
"""

__version__ = "0.1.0"
