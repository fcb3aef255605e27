"""Running the generated hardware, not only finn's Python models (issue 14, first step).

- :mod:`.verilator_build`: cached Verilator builds of one RTL top with our AXI-stream harness.
- :mod:`.verilator`: the five ``finn.xsi`` functions on Verilator, so finn-plus's own
  ``execute_node(exec_mode="rtlsim")`` runs without Vivado; installed by one adaptation.
- :mod:`.rtl`: :func:`~.rtl.verify_rtl_nodes`, every ``*_rtl`` node of a folded build against the
  simulator (``fcnseg.host.sim``) and finn's Python model, exactly.

Nothing here is imported by the host runtime; finn is imported inside functions.
"""
