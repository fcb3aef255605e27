"""fcnseg.hw: the FINN flow with finn-plus, from a QONNX export to a deployment package.

Runs on a build machine (finn-plus, qonnx; Vivado only for IP/bitfile). finn-plus is imported
inside the functions that need it, so ``import fcnseg.hw`` is cheap.
"""
