"""fcnseg.testing: stand-ins for hardware, for tests and off-board experiments; never on a board.

The runtime (:mod:`fcnseg.host`) must not import anything from here
(``tests/test_import_contract.py`` checks it), the way PYNQ keeps its mock devices
(``tests/mock_devices.py``) apart from ``pynq``.

- :mod:`.emulated_zynq`: an emulated Zynq UltraScale+ board (IODMA registers, DDR, clocks,
  bitstream metadata) that the real pynq 4.0.0 + finn-plus-driver code drives; needs pynq.
- :mod:`.farm`: a Dask worker plugin giving each farm worker its own emulated board (the
  board tests and the farm benchmark); needs pynq and distributed.
"""
