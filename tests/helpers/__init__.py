"""Shared test helpers, one module per topic; test modules import from here, never from each
other or from a ``conftest.py`` (which holds fixtures only).

- :mod:`.toy_engine`: an integer FCN-32s/8s in numpy with the engine interface (no package).
- :mod:`.images`: test images (real photos where scikit-image is installed, else synthetic
  scenes), scikit-image photo tiles for the hw tests, a decompression-bomb PNG.
- :mod:`.packages`: a hand-made deployment package (conv, pool, score) and its parts.
- :mod:`.sim_graph`: small Brevitas FCNs converted with the hw flow's steps into packages
  (torch, brevitas and finn-plus: build environment only).
- :mod:`.fcn_nets`: tiny nets of the shipped model family, calibrated, and photos for them
  (imports torch: import it after skipping where torch is missing).
- :mod:`.exact_nets`, :mod:`.boundary`: nets and inputs for the exact-threshold tests.
- :mod:`.files`: small file readers.

Apart from :mod:`.fcn_nets`, helpers import heavy libraries inside their functions, so
importing one is as cheap as importing numpy; the tests that call them skip where a library is
missing.
"""
