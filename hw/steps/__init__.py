"""FINN-style build steps for FCNs and the step lists ``fcnseg compile`` runs.

A step is ``step_x(model, cfg) -> model`` (finn's convention), so finn's own steps and ours mix
in one list. Names without a dot are finn-plus 1.6.1 built-ins; dotted names are ours:

- ``streamline.step_fcn_streamline``: finn's streamlining + fork/join moves for skip branches,
  repeated to a fixed point; convs lowered, pools and ``Resize`` made NHWC; the identity input
  threshold of the UINT8 pixels dropped.
- ``tail.step_cut_float_tail``: removes the float ``Mul``/``Add``/``Transpose`` after the last
  integer op and records the per-class ``scale``/``bias`` (report/output_affine.json).
- ``convert.step_fcn_convert_to_hw``: ``Resize`` -> ``UpsampleNearestNeighbour``, then finn's
  conversion (MVAU, ConvolutionInputGenerator, FMPadding, Pool, DuplicateStreams, ElementwiseAdd).
- ``exact_thresholds.step_fcn_exact_thresholds``: every threshold replaced by the exact integer
  solved from the export's exact record (finn's float32 folding misplaces some);
  ``exact_thresholds.step_fcn_check_thresholds`` refuses a graph whose thresholds drifted since.
"""

from __future__ import annotations

_OURS = "fcnseg.hw.steps"

#: CPU-only part of the flow: through folding and estimate reports.
ESTIMATE_STEPS: list[str] = [
    "step_qonnx_to_finn",
    "step_tidy_up",
    f"{_OURS}.streamline.step_fcn_streamline",
    f"{_OURS}.tail.step_cut_float_tail",
    f"{_OURS}.convert.step_fcn_convert_to_hw",
    f"{_OURS}.exact_thresholds.step_fcn_exact_thresholds",
    "step_minimize_bit_width_initial",
    "step_create_dataflow_partition",
    "step_specialize_layers",
    "step_target_fps_parallelization",
    "step_apply_folding_config",
    "step_minimize_bit_width",
    f"{_OURS}.exact_thresholds.step_fcn_check_thresholds",
    "step_generate_estimate_reports",
]

#: the step whose output is the HW graph before SpecializeLayers (hw_graph.onnx of the package).
HW_GRAPH_STEP = "step_create_dataflow_partition"
#: the step whose output is re-folded when fitting a board (specialised, not yet folded).
REFOLD_FROM_STEP = "step_specialize_layers"

#: Vivado part: HLS/IP generation + FIFO sizing, stitched IP, bitfile, PYNQ driver.
VIVADO_STEPS: list[str] = [
    "step_generate_hardware",
    "step_create_stitched_ip",
    "step_prepare_synthesis",
    "step_synthesize_bitfile",
    "step_make_driver",
]
