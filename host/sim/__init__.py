"""The ``sim`` backend: a bit-exact, vectorised numpy simulator of a package's HW layers.

- :mod:`.ranges`: proven integer ranges -> storage dtypes and exact GEMM dtypes.
- :mod:`.layers`: one class per finn-plus HW layer kind (MVAU, ConvolutionInputGenerator,
  FMPadding, Pool, Thresholding, DuplicateStreams, Elementwise*, UpsampleNearestNeighbour, ...).
- :mod:`.engine`: :class:`SimEngine` (plan once, run on any multiple of the net stride).

numpy only. Its speed against finn-plus ``execute_onnx``, onnxruntime and Brevitas is measured
by the benchmark suite (``fcnseg bench --only simulator``, :mod:`fcnseg.benchmarks.simulator`).
"""

from fcnseg.host.sim.engine import SimEngine

__all__ = ["SimEngine"]
