"""The quantized model computed exactly: the reference every other execution is held to.

A Brevitas FCN is, once trained, a chain of integer operations and per-channel real-valued
quantizers. Its *exact* meaning takes every stored parameter (float32 weights, scales, biases,
batch-norm statistics) as the rational number it is and evaluates the chain with no rounding
except the quantizers' own round-half-to-even and clamp. That is what the integer hardware can
implement bit for bit, and what the hardware's thresholds must encode.

- :mod:`.record` — the net as an :class:`~.record.ExactNet`: integer weights, rational scales,
  biases and batch-norm parameters, and the wiring (written by ``fcnseg export`` as
  ``exact.json`` + ``exact.npz``; numpy and the standard library only).
- :mod:`.levels` — one quantizer channel as an exact function of its integer accumulator, and
  the solver for its thresholds (the least accumulator value that reaches each level).
- :mod:`.forward` — the whole net on integer pixels, in integers (the exact reference).
- :mod:`.extract` — the record of a Brevitas model (imports torch), checked against Brevitas.

float32 execution (qonnx, finn's streamlining, float32 Brevitas) can round a value that lies on
or near a quantizer boundary to the other side; float64 Brevitas agrees with this module unless
an accumulator lies within about 1e-12 (relative) of a threshold's exact value. See
``docs/exactness.md``.
"""
