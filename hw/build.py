"""Run the finn-plus flow on an export: config, steps with progress, board fit, reports, package.

``compile_export`` is what ``fcnseg compile`` calls. It builds one finn ``DataflowBuildConfig``
and runs it through finn's own Python API (``build_dataflow_cfg``), which saves every step's model
under ``BUILD_DIR/intermediate_models/`` and writes ``BUILD_DIR/report/estimate_*.json``. Around
it we add what finn lacks for this project:

- a progress line per step with its time (finn's own console output goes only to its log),
  and one cumulative log, ``BUILD_DIR/fcnseg_build.log``;
- step exceptions surface as exceptions (finn logs them and returns -1 outside pytest);
- the board fit (:mod:`fcnseg.hw.fit`): re-fold at a lower target FPS until it fits;
- reports (:mod:`fcnseg.hw.report`) and the deployment package (:mod:`fcnseg.hw.to_package`).

Without Vivado the flow stops after the estimates, saying so; with ``XILINX_VIVADO`` set it
continues with finn's own IP generation, FIFO sizing, stitched IP, bitfile and PYNQ driver steps
and puts ``bitfile/`` and ``driver/settings.json`` into the package.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fcnseg import config as config_io
from fcnseg.errors import UserError
from fcnseg.host.card import CARD_FILE, ModelCard
from fcnseg.hw import report as reports
from fcnseg.hw.boards import Board
from fcnseg.hw.compat import check_finn_deps, has_vivado, prepare_finn, restore_stdio
from fcnseg.hw.fit import Fit, added_resources, bisect_fps, check_fit, find_headroom, misfit_message
from fcnseg.hw.folding import estimator
from fcnseg.hw.preflight import check_qonnx
from fcnseg.hw.steps import ESTIMATE_STEPS, HW_GRAPH_STEP, REFOLD_FROM_STEP, VIVADO_STEPS
from fcnseg.hw.steps.exact_thresholds import EXACT_DIR, check_model
from fcnseg.hw.steps.exact_thresholds import REPORT_FILE as EXACT_REPORT
from fcnseg.hw.to_package import FOLDING_ATTRS, base_kind
from fcnseg.quantize.exact.record import copy_net, load_net

if TYPE_CHECKING:
    from finn.builder.build_dataflow_config import DataflowBuildConfig
    from qonnx.core.modelwrapper import ModelWrapper

LOG_NAME = "fcnseg_build.log"
#: the build's options as given, beside its outputs (``BuildOptions.load`` reads it back)
OPTIONS_NAME = "fcnseg_build.json"
#: frame size whose frames/s the report computes from the tiling overlap (Cityscapes, half-res).
DEFAULT_FRAME = (512, 1024)

Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.__stderr__, flush=True)


@dataclass
class BuildOptions:
    """Everything ``fcnseg compile`` was asked to do (saved as ``BUILD_DIR/fcnseg_build.json``).

    Saved and read back with the project's strict round-trip (:mod:`fcnseg.config`): the board
    as its full preset record, paths as strings, unknown keys an error.
    """

    export_dir: Path
    out_dir: Path
    board: Board
    target_fps: float | None = None
    folding_file: Path | None = None
    clock_ns: float | None = None
    margin: float = 0.1
    #: None: run the Vivado steps iff XILINX_VIVADO is set.
    vivado: bool | None = None
    frame: tuple[int, int] = DEFAULT_FRAME
    package: bool = True
    #: widest weight stream (bits) SetFolding may give one MVAU PE. finn's default of 36 caps
    #: the 8-bit first and score layers at SIMD*PE ~ 4, the bottleneck of a 256x256 FCN.
    mvau_wwidth_max: int = 256
    #: thresholds in their own Thresholding layers instead of fused into the MVAUs (finn's
    #: ``standalone_thresholds``; the runtime-writable-weights flow needs them apart).
    standalone_thresholds: bool = False
    #: MVAU weights and Thresholding thresholds writable over AXI-lite at run time (finn's
    #: ``runtime_writeable_weights``; needs ``standalone_thresholds``), the package recording
    #: their memory layout and the graph's fingerprint (:mod:`fcnseg.hw.runtime_weights`)
    runtime_weights: bool = False
    #: generate every node's HLS C++ / RTL (finn's code generation, no Vivado) into
    #: ``BUILD/hardware`` and the package's ``hardware/`` (``fcnseg verify`` runs it).
    hardware_sources: bool = True

    def resolved_clock_ns(self) -> float:
        return float(self.clock_ns if self.clock_ns is not None else self.board.clock_ns)

    def to_dict(self) -> dict[str, Any]:
        """Every field as given, JSON-ready (``clock_ns`` None = the board's clock)."""
        return config_io.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BuildOptions:
        """Inverse of :meth:`to_dict` (unknown keys: :class:`~fcnseg.config.UnknownConfigKeys`)."""
        return config_io.from_dict(cls, data, "build options")

    @classmethod
    def load(cls, path: str | Path) -> BuildOptions:
        """Read a build's saved options (``BUILD_DIR/fcnseg_build.json``)."""
        return config_io.load(cls, path, "build options")

    def save(self, path: str | Path) -> None:
        config_io.save(self, path)


@dataclass
class BuildResult:
    out_dir: Path
    summary: dict[str, Any]
    package_dir: Path | None
    vivado_ran: bool
    step_seconds: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- finn plumbing


def _resolve(step: str) -> Callable:
    from finn.builder.build_dataflow_steps import build_dataflow_step_lookup

    if step in build_dataflow_step_lookup:
        return build_dataflow_step_lookup[step]
    import importlib

    module, _, name = step.rpartition(".")
    return getattr(importlib.import_module(module), name)


def make_config(
    opts: BuildOptions,
    steps: list[str],
    *,
    target_fps: float | None,
    start_step: str | None = None,
    vivado: bool = False,
) -> DataflowBuildConfig:
    """The finn ``DataflowBuildConfig`` for ``opts`` (``steps`` as names; resolved later)."""
    from finn.builder.build_dataflow_config import (
        DataflowBuildConfig,
        DataflowOutputType,
        ShellFlowType,
    )

    outputs = [DataflowOutputType.ESTIMATE_REPORTS]
    if vivado:
        outputs += [
            DataflowOutputType.STITCHED_IP,
            DataflowOutputType.BITFILE,
            DataflowOutputType.PYNQ_DRIVER,
        ]
    return DataflowBuildConfig(
        output_dir=str(opts.out_dir),
        synth_clk_period_ns=opts.resolved_clock_ns(),
        board=opts.board.finn_board,
        fpga_part=opts.board.part,
        shell_flow_type=ShellFlowType.VIVADO_ZYNQ,
        generate_outputs=outputs,
        target_fps=None if target_fps is None else max(1, int(round(target_fps))),
        folding_config_file=opts.folding_file,
        steps=list(steps),
        start_step=start_step,
        mvau_wwidth_max=opts.mvau_wwidth_max,
        save_intermediate_models=True,
        auto_fifo_depths=True,
        # finn's MVAU+threshold fusion keeps the accelerator small; the host simulator reads
        # the thresholds from either form.
        standalone_thresholds=opts.standalone_thresholds,
    )


class _Runner:
    """Runs finn builds with a progress line per step, timing, one log and real exceptions."""

    def __init__(self, out_dir: Path, progress: Progress) -> None:
        self.out_dir = out_dir
        self.progress = progress
        self.seconds: dict[str, float] = {}
        self.log_path = out_dir / LOG_NAME

    def note(self, message: str) -> None:
        self.progress(message)
        with self.log_path.open("a") as f:
            f.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] fcnseg: {message}\n")

    def run(self, model_path: Path, cfg: DataflowBuildConfig) -> None:
        from finn.builder.build_dataflow import build_dataflow_cfg

        names = list(cfg.steps)
        short = [name.rsplit(".", 1)[-1] for name in names]
        start = short.index(cfg.start_step) if cfg.start_step else 0
        stop = short.index(cfg.stop_step) if cfg.stop_step else len(names) - 1
        failure: dict[str, Any] = {}
        wrapped = []
        for index, name in enumerate(names):
            wrapped.append(self._wrap(name, index - start + 1, stop - start + 1, failure))
        cfg = replace(cfg, steps=wrapped)

        saved_out, saved_err = sys.stdout, sys.stderr
        root = logging.getLogger()
        saved_handlers, saved_level = list(root.handlers), root.level
        sink = io.StringIO()
        sys.stdout = sys.stderr = sink  # finn mirrors prints to "the console": keep it quiet
        try:
            rc = build_dataflow_cfg(str(model_path), cfg)
        except Exception as error:  # finn re-raises under pytest
            failure.setdefault("error", error)
            rc = -1
        finally:
            restore_stdio()
            sys.stdout, sys.stderr = saved_out, saved_err
            for handler in list(root.handlers):
                if handler not in saved_handlers:
                    root.removeHandler(handler)
                    handler.close()
            for handler in saved_handlers:
                if handler not in root.handlers:
                    root.addHandler(handler)
            root.setLevel(saved_level)
            self._append_finn_log()
        if rc != 0:
            error = failure.get("error")
            step = failure.get("step", "?")
            if error is None:
                raise UserError(f"finn build failed in {step}; see {self.log_path}")
            from finn.util.exception import FINNUserError

            if isinstance(error, UserError | FINNUserError | ValueError):
                raise UserError(f"{step}: {error} (log: {self.log_path})") from error
            raise error

    def _wrap(self, name: str, number: int, total: int, failure: dict[str, Any]) -> Callable:
        fn = _resolve(name)

        @functools.wraps(fn)
        def step(model: ModelWrapper, cfg: DataflowBuildConfig) -> ModelWrapper:
            short = fn.__name__
            started = time.perf_counter()
            try:
                result = fn(model, cfg)
            except BaseException as error:
                failure.update(step=short, error=error)
                self.note(f"[{number:2}/{total}] {short:36} FAILED: {error}")
                raise
            seconds = time.perf_counter() - started
            self.seconds[short] = self.seconds.get(short, 0.0) + seconds
            self.note(f"[{number:2}/{total}] {short:36} {seconds:6.1f} s")
            return result

        return step

    def _append_finn_log(self) -> None:
        finn_log = self.out_dir / "build_dataflow.log"
        if finn_log.exists():
            with self.log_path.open("a") as f:
                f.write(f"---- finn build_dataflow.log ----\n{finn_log.read_text()}----\n")


# --------------------------------------------------------------------------- model helpers


def _intermediate(out_dir: Path, step: str) -> Path:
    return out_dir / "intermediate_models" / f"{step.rsplit('.', 1)[-1]}.onnx"


def folding_of(model: ModelWrapper) -> dict[str, dict[str, Any]]:
    """Node name -> folding attributes (those the node has) of a folded HW graph."""
    from qonnx.custom_op.registry import getCustomOp

    out: dict[str, dict[str, Any]] = {}
    for node in model.graph.node:
        if not node.domain.startswith("finn.custom_op.fpgadataflow"):
            continue
        inst = getCustomOp(node)
        types = inst.get_nodeattr_types()
        out[node.name] = {a: inst.get_nodeattr(a) for a in FOLDING_ATTRS if a in types}
    return out


def annotate_folding(hw_graph: ModelWrapper, folded: ModelWrapper) -> dict[str, dict[str, Any]]:
    """Copy the folding of ``folded`` (after SpecializeLayers) onto ``hw_graph`` (before it).

    Specialisation renames nodes (``MVAU_0`` -> ``MVAU_hls_0``) but keeps one node per HW layer
    in the same order, so the k-th node of a kind before matches the k-th of that kind after.
    Returns the folding keyed by ``hw_graph``'s node names.
    """
    from qonnx.custom_op.registry import getCustomOp

    after: dict[str, list] = {}
    for node in folded.graph.node:
        after.setdefault(base_kind(node.op_type), []).append(node)
    seen: dict[str, int] = {}
    folding: dict[str, dict[str, Any]] = {}
    for node in hw_graph.graph.node:
        if not node.domain.startswith("finn.custom_op.fpgadataflow"):
            continue
        k = seen.get(node.op_type, 0)
        seen[node.op_type] = k + 1
        twins = after.get(node.op_type, [])
        if k >= len(twins):
            continue
        src, dst = getCustomOp(twins[k]), getCustomOp(node)
        types = dst.get_nodeattr_types()
        fold = {}
        for attr in FOLDING_ATTRS:
            if attr in types and attr in src.get_nodeattr_types():
                value = src.get_nodeattr(attr)
                dst.set_nodeattr(attr, value)
                fold[attr] = value
        folding[node.name] = fold
    return folding


def _headroom(opts: BuildOptions, tiles_per_s: float, runner: _Runner) -> dict[str, Any] | None:
    """A faster folding that still fits the board (:func:`fcnseg.hw.fit.find_headroom`: a few
    in-process re-foldings of the specialised model, 0.5 s each), noted and reported."""
    with tempfile.TemporaryDirectory(dir=opts.out_dir) as scratch:
        spec = _intermediate(opts.out_dir, REFOLD_FROM_STEP)
        room = find_headroom(estimator(spec, opts, Path(scratch)), tiles_per_s)
    if room is None:
        return None
    runner.note(
        f"a faster fold fits {opts.board.name}: {room.tiles_per_s:.1f} tiles/s (estimated by "
        f"re-folding; try --target-fps {room.suggested_target()})"
    )
    return room.to_json()


def specialise_export(opts: BuildOptions, progress: Progress = _stderr) -> Path:
    """Run the flow on ``opts.export_dir`` up to ``REFOLD_FROM_STEP`` in ``opts.out_dir`` (the
    tile search's one streamlining); returns the specialised, unfolded graph's path."""
    model_path, _card, opts = _prepare(opts)
    cfg = make_config(opts, ESTIMATE_STEPS, target_fps=None)
    cfg = replace(cfg, stop_step=REFOLD_FROM_STEP)
    _Runner(opts.out_dir, progress).run(model_path, cfg)
    return _intermediate(opts.out_dir, REFOLD_FROM_STEP)


def _prepare(opts: BuildOptions) -> tuple[Path, ModelCard, BuildOptions]:
    """Check the export (QONNX, model card, exact record: refused up front if missing or
    malformed) and set up the build folder: the exact record copied in, a fresh log, finn's
    scratch. Returns the model's path, its card and ``opts`` with the folder resolved."""
    model_path, card = _read_card(Path(opts.export_dir))
    load_net(opts.export_dir)
    out_dir = Path(opts.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_net(opts.export_dir, out_dir / EXACT_DIR)
    (out_dir / LOG_NAME).write_text("")
    prepare_finn(out_dir / "finn_tmp")
    return model_path, card, replace(opts, out_dir=out_dir)


# --------------------------------------------------------------------------- the flow


def _build_fit(opts: BuildOptions) -> tuple[Fit, dict[str, Any], ModelWrapper]:
    """The board fit of the build's folded graph: finn's resource report
    (``estimate_layer_resources.json``) plus what finn leaves at 0
    (:func:`fcnseg.hw.fit.added_resources`); with that report and the folded graph."""
    from qonnx.core.modelwrapper import ModelWrapper

    resources = json.loads((opts.out_dir / "report" / "estimate_layer_resources.json").read_text())
    folded = ModelWrapper(str(_intermediate(opts.out_dir, ESTIMATE_STEPS[-1])))
    added = added_resources(folded, resources)
    return check_fit(resources["total"], opts.board, opts.margin, added), resources, folded


def _read_card(export_dir: Path) -> tuple[Path, ModelCard]:
    model_path = export_dir / "model.onnx"
    if not model_path.exists():
        raise UserError(f"{model_path} not found: give the folder written by `fcnseg export`")
    check_qonnx(model_path)  # a QCDQ, float or junk file: one line now, not a finn traceback later
    return model_path, ModelCard.load(export_dir / CARD_FILE)


def compile_export(opts: BuildOptions, progress: Progress = _stderr) -> BuildResult:
    """Run the flow for ``opts``; see the module docstring. Returns the reports and package."""
    if opts.target_fps is not None and opts.folding_file is not None:
        raise UserError("give either --target-fps or --folding, not both")
    if opts.folding_file is not None and not Path(opts.folding_file).exists():
        raise UserError(f"folding file {opts.folding_file} not found")
    if opts.runtime_weights and not opts.standalone_thresholds:
        raise UserError("runtime-writable weights need standalone thresholds")
    model_path, card, opts = _prepare(opts)
    out_dir = opts.out_dir
    opts.save(out_dir / OPTIONS_NAME)
    runner = _Runner(out_dir, progress)
    vivado = has_vivado() if opts.vivado is None else opts.vivado
    if vivado and not has_vivado():
        raise UserError("Vivado steps requested but XILINX_VIVADO is not set")
    if vivado:
        check_finn_deps(opts.board)
    target = opts.target_fps
    if target is None and opts.folding_file is None:
        target = float(opts.board.default_target_fps)
    steps = ESTIMATE_STEPS + (VIVADO_STEPS if vivado else [])
    if opts.runtime_weights:
        from fcnseg.hw.runtime_weights import with_runtime_step

        steps = with_runtime_step(steps)

    started = time.perf_counter()
    runner.note(
        f"compiling {model_path} for {opts.board.name} ({opts.board.part}) at "
        f"{1e3 / opts.resolved_clock_ns():.0f} MHz, "
        + (f"target {target:g} tiles/s" if target else f"folding {opts.folding_file}")
    )
    from fcnseg.hw.info import tiling_warning

    warning = tiling_warning(card.geometry())
    if warning:
        runner.note(f"warning: {warning}")
    estimate_cfg = make_config(opts, steps, target_fps=target)
    estimate_cfg = replace(estimate_cfg, stop_step=ESTIMATE_STEPS[-1].rsplit(".", 1)[-1])
    runner.run(model_path, estimate_cfg)

    fit, resources, folded = _build_fit(opts)
    refold = None
    if not fit.fits:
        if target is None:
            raise UserError(misfit_message(fit, resources, opts.board))
        runner.note(f"estimate does not fit {opts.board.name}: re-folding at a lower target rate")
        with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
            estimate = estimator(_intermediate(out_dir, REFOLD_FROM_STEP), opts, Path(scratch))
            best, probes = bisect_fps(estimate, high_fps=target)
        for p in probes:
            verdict = "fits" if p.fit.fits else "over " + ",".join(p.fit.over)
            runner.note(f"  target {p.target_fps:8.1f} -> {p.fps:8.1f} tiles/s, {verdict}")
        if best is None:
            raise UserError(misfit_message(probes[0].fit, resources, opts.board))
        refold = {
            "requested_fps": target,
            "reached_fps": best.fps,
            "target_fps": best.target_fps,
            "probes": [
                {"target_fps": p.target_fps, "fps": p.fps, "fits": p.fit.fits} for p in probes
            ],
        }
        target = best.target_fps
        cfg = make_config(
            opts, steps, target_fps=target, start_step="step_target_fps_parallelization"
        )
        cfg = replace(cfg, stop_step=ESTIMATE_STEPS[-1].rsplit(".", 1)[-1])
        runner.run(model_path, cfg)
        fit, resources, folded = _build_fit(opts)

    from qonnx.core.modelwrapper import ModelWrapper

    summary = _summary(opts, card, fit, folding_of(folded), target, refold)
    if refold is None and fit.fits:
        summary["headroom"] = _headroom(opts, summary["estimated_fps"], runner)
    if summary["output_affine"].get("matches_model_card") is False:
        runner.note(
            "warning: the output scale/bias of the HW graph differ from model.json's; the "
            "package uses the graph's (report/output_affine.json)"
        )
    exact_report = out_dir / "report" / EXACT_REPORT
    if exact_report.exists():
        exact = json.loads(exact_report.read_text())
        summary["exact_thresholds"] = {"thresholds": exact["thresholds"], "moved": exact["moved"]}
        runner.note(
            f"thresholds: {exact['thresholds']} recomputed exactly from the checkpoint's "
            f"parameters, {exact['moved']} moved from finn's float32 values"
        )
    hw_graph = ModelWrapper(str(_intermediate(out_dir, HW_GRAPH_STEP)))
    annotate_folding(hw_graph, folded)
    hw_graph.save(str(out_dir / "hw_graph.onnx"))
    summary["frames"] = frames_per_second(card, opts.frame, summary, hw_graph)
    summary["tiling_warning"] = warning
    if opts.hardware_sources:
        summary["hardware_sources_seconds"] = _generate_sources(opts, out_dir, runner)

    if vivado:
        cfg = make_config(opts, steps, target_fps=target, start_step=VIVADO_STEPS[0], vivado=True)
        runner.run(model_path, cfg)
        post_synth = out_dir / "report" / "post_synth_resources.json"
        if post_synth.exists():  # measured by Vivado: kept next to the estimates
            summary["post_synth_resources"] = json.loads(post_synth.read_text())
    else:
        runner.note(
            "stopping after the estimates: HLS/IP generation, FIFO sizing, stitched IP and the "
            "bitfile need Vivado (set XILINX_VIVADO and re-run to continue)"
        )
    summary["build_seconds"] = time.perf_counter() - started
    summary["step_seconds"] = dict(runner.seconds)
    reports.write_reports(summary, out_dir / "report")

    package_dir = None
    if opts.package:
        package_dir = _write_package(opts, card, summary, out_dir, vivado, folded)
        runner.note(f"deployment package: {package_dir}")
    return BuildResult(out_dir, summary, package_dir, vivado, dict(runner.seconds))


def _generate_sources(opts: BuildOptions, out_dir: Path, runner: _Runner) -> float:
    """Every node's generated code into ``BUILD/hardware`` (finn-plus code generation only);
    returns the seconds it took."""
    from fcnseg.hw.verify.generate import HARDWARE_DIR, Target, generate_hardware

    started = time.perf_counter()
    target = Target(out_dir, opts.board.part, opts.resolved_clock_ns(), out_dir / "package", True)
    graph = generate_hardware(target, out_dir / HARDWARE_DIR)
    seconds = time.perf_counter() - started
    runner.note(
        f"hardware sources: {len(graph.nodes)} nodes generated (HLS C++, RTL) in "
        f"{seconds:.0f} s -> {out_dir / HARDWARE_DIR} (`fcnseg verify` runs them)"
    )
    return seconds


def _close(a: list[float], b: list[float], rel: float = 1e-6) -> bool:
    return len(a) == len(b) and all(
        abs(x - y) <= rel * max(abs(x), abs(y)) + 1e-9 for x, y in zip(a, b, strict=True)
    )


def _summary(
    opts: BuildOptions,
    card: ModelCard,
    fit: Fit,
    folding: dict[str, dict[str, Any]],
    target: float | None,
    refold: dict[str, Any] | None,
) -> dict[str, Any]:
    affine_path = opts.out_dir / "report" / "output_affine.json"
    affine = json.loads(affine_path.read_text()) if affine_path.exists() else {}
    if affine and card.output_scale is not None:
        # the package uses the graph's own scale/bias; the card's should be the same numbers
        bias = card.output_bias or (0.0,) * len(affine["bias"])
        affine["matches_model_card"] = _close(affine["scale"], list(card.output_scale)) and _close(
            affine["bias"], list(bias)
        )
    summary = reports.summarize(
        opts.out_dir / "report",
        folding=folding,
        board=opts.board.to_json(),
        clock_ns=opts.resolved_clock_ns(),
        fit=fit.to_json(),
        extra={
            "target_fps": target,
            "folding_file": str(opts.folding_file) if opts.folding_file else None,
            "refold": refold,
            "output_affine": affine,
            "finn_plus": "1.6.1",
        },
    )
    return summary


def feeding(figures: dict[str, Any], hw_graph: ModelWrapper) -> tuple[Any, Any, int | None]:
    """``(fabric, host, streaming latency cycles)`` of a HW graph with finn's ``figures``
    (``max_cycles``, ``critical_path_cycles``, ``clock_ns``, ``board.dma_port_width``,
    per-layer ``layers`` cycles): the pipeline (:func:`fcnseg.hw.info.fabric_of`), the pynq
    backend's default feeding of its io (:func:`~fcnseg.hw.info.pynq_host`) and the row
    model's latency (:mod:`fcnseg.hw.latency`; None without per-layer cycles)."""
    from fcnseg.hw.info import fabric_of, pynq_host
    from fcnseg.hw.latency import streaming_of
    from fcnseg.hw.to_package import layers_from_model

    layers, io = layers_from_model(hw_graph)
    streamed = streaming_of(layers, figures, io)
    cycles = None if streamed is None else streamed.latency_cycles
    return fabric_of(figures, io), pynq_host(io), cycles


def frames_per_second(
    card: ModelCard, frame: tuple[int, int], summary: dict[str, Any], hw_graph: ModelWrapper
) -> dict[str, Any]:
    """Frames/s on ``frame``-sized images, counting the tiles the host's exact tiling plan runs,
    at the steady rate and, in ``["latency"]`` / ``["streaming"]``, at the pynq backend's default
    feeding with finn's latency / the row model's (:func:`feeding`,
    :func:`fcnseg.hw.info.frames`: what ``fcnseg info --frame`` computes on the package
    ``hw_graph`` becomes, so the package records what ``info`` prints by default)."""
    from fcnseg.hw.info import frames

    fabric, host, streaming_cycles = feeding(summary, hw_graph)
    return frames(
        card.geometry(),
        frame,
        float(summary["estimated_fps"]),
        fabric=fabric,
        host=host,
        streaming_cycles=streaming_cycles,
    )


def _write_package(
    opts: BuildOptions,
    card: ModelCard,
    summary: dict[str, Any],
    out_dir: Path,
    vivado: bool,
    folded: ModelWrapper,
) -> Path:
    from fcnseg.hw.to_package import build_package

    affine = summary.get("output_affine") or {}
    extra: dict[str, Path] = {}
    if vivado:
        for path in sorted((out_dir / "bitfile").glob("*")):
            if path.suffix in (".bit", ".hwh"):
                extra[f"bitfile/{path.name}"] = path
        settings = out_dir / "driver" / "settings.json"
        if settings.exists():
            extra["driver/settings.json"] = settings
    hardware = out_dir / "hardware"
    if opts.hardware_sources and hardware.is_dir():
        from fcnseg.atomic import atomic_open
        from fcnseg.host.hardware import ARCHIVE_NAME, pack

        with atomic_open(out_dir / ARCHIVE_NAME) as handle:
            handle.write(pack(hardware))
        extra[ARCHIVE_NAME] = out_dir / ARCHIVE_NAME
    from qonnx.core.modelwrapper import ModelWrapper

    # the package's thresholds must be the exact ones (refused otherwise, before writing)
    hw_graph = ModelWrapper(str(out_dir / "hw_graph.onnx"))
    check_model(hw_graph, load_net(out_dir / EXACT_DIR))
    runtime = None
    if opts.runtime_weights:
        from fcnseg.hw.runtime_weights import runtime_files

        runtime, files = runtime_files(folded, hw_graph, opts.board, out_dir)
        extra.update(files)
    return build_package(
        out_dir / "hw_graph.onnx",
        out_dir / "package",
        model_card=card,
        estimates=summary,
        board=opts.board.name,
        output_scale=affine.get("scale"),
        output_bias=affine.get("bias"),
        extra_files=extra or None,
        runtime_weights=runtime,
    )
