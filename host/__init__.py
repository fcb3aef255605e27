"""fcnseg.host: the runtime that runs on a PYNQ board and on a PC.

Its import path holds numpy and Pillow only (a PYNQ image has Python 3.10 and numpy 1.x; no torch,
onnx or finn). The board backend imports pynq and finn-plus-driver only when chosen.
"""
