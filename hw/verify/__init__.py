"""The generated hardware, run without Vivado and held against the simulator (docs/hardware.md).

- :mod:`.generate` (finn): the specialised, folded graph of a build or package, and its
  *hardware folder*: one generated node per layer.
- :mod:`.node`: ``node.json``, the finn-free description of a generated node, and the runner
  protocol; :mod:`.hls` (g++, finn's cppsim code) and :mod:`.rtl_node` (Verilator) implement it,
  with :mod:`.libraries` (finn-hlslib, ``ap_int``, finn-rtllib), :mod:`.verilator_build`
  (cached builds + the AXI-stream harness) and :mod:`.words` (stream word packing).
- :mod:`.chain`: the whole graph run node after node, finn-free (also the emulated board's
  fabric); :mod:`.bridge`: the simulator for nodes the library cannot build.
- :mod:`.run` and :mod:`.cli`: ``fcnseg verify``, every node and the final scores vs the
  simulator, per-node report, ``verification.json``.
- :mod:`.verilator` + :mod:`.rtl`: finn's own ``rtlsim`` on Verilator (the five ``finn.xsi``
  functions), for finn's verification steps.

Nothing here is imported by the host runtime; finn is imported inside functions.
"""
