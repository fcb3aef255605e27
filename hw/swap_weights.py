"""``fcnseg swap-weights PACKAGE CHECKPOINT -o NEW_PACKAGE``: a retrained net on the same bitfile.

A package built with ``fcnseg compile --runtime-weights`` records what its bitfile fixes (the
fingerprint of its folded HW graph, :func:`fcnseg.hw.runtime_weights.fingerprint`) and where
each writable layer's words go. :func:`swap_weights` exports the checkpoint at the package's
tile, runs the same flow on it (same board, clock and folding: the folding is read back from
the fingerprint and applied with finn's folding config, so nothing is re-searched) and then:

1. compares the new fingerprint with the package's; the first difference refuses the swap
   with one line naming the layer and what differs (``layer MVAU_rtl_3: SIMD old 2 vs new 4``);
2. checks every writable layer's new parameters lie within the datatype its memory was built
   for, and that an RTL MVAU built for narrow-range weights (finn's ``NARROW_WEIGHTS``, fixed
   in the bitfile) gets no weight at the datatype's minimum (a -8 in a narrow 4-bit layer
   would be computed wrongly, silently);
3. writes the new package atomically: new layers (the simulator's), new ``.dat`` weight files
   and output scale/bias, the *old* bitfile, its ``.hwh`` and ``driver/settings.json`` copied,
   the old estimates (the hardware did not change) and a ``swapped_from`` note; the generated
   hardware sources and their verification are left out, since they embed the old weights.
   The new package is loaded with every check before it replaces anything.

Nothing is written when any check fails. click and the standard library at import; torch,
finn and qonnx inside the command.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fcnseg.errors import UserError

if TYPE_CHECKING:
    from qonnx.core.modelwrapper import ModelWrapper

    from fcnseg.host.package import Package

Progress = Callable[[str], None]

#: the node attributes carried into the rebuild's folding config (finn's own list of
#: folding-related ``hw_attrs`` in ``step_apply_folding_config``)
FOLDING_KEYS = (
    "PE",
    "SIMD",
    "EmbFold",
    "SeqFold",
    "parallel_window",
    "ram_style",
    "ram_style_thresholds",
    "ram_style_mask",
    "depth",
    "impl_style",
    "resType",
    "mac_resource",
    "mem_mode",
    "runtime_writeable_weights",
    "depth_trigger_uram",
    "depth_trigger_bram",
)
#: files of the old package the new one keeps (the hardware): by prefix
KEPT_PREFIXES = ("bitfile/", "driver/settings.json")


@dataclass
class SwapResult:
    package_dir: Path
    seconds: float
    #: writable layers whose words changed, of all writable layers
    changed_layers: int
    layers: int


def _stderr(message: str) -> None:
    print(message, file=sys.__stderr__, flush=True)


def folding_config(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """finn's folding config (node name -> attributes) of the graph a fingerprint describes."""
    config: dict[str, Any] = {"Defaults": {}}
    for node in fingerprint["nodes"]:
        attrs = {k: node["attributes"][k] for k in FOLDING_KEYS if k in node["attributes"]}
        if attrs:
            config[node["name"]] = attrs
    return config


def _runtime_record(package: Package) -> dict[str, Any]:
    from fcnseg.host.package import RUNTIME_WEIGHTS_KEY

    record = package.meta.get(RUNTIME_WEIGHTS_KEY)
    if record is None:
        raise UserError(
            f"{package.path}: not built with runtime-writable weights (fcnseg compile "
            "--runtime-weights); its weights are in the bitfile"
        )
    return record


def check_parameters(folded: ModelWrapper, record: Mapping[str, Any], where: str) -> None:
    """Every writable layer's new parameters fit its memory: within the layer's datatype, and
    no minimum weight in an RTL MVAU the bitfile was built narrow for (``record``'s
    ``narrow_weights``). One line naming the layer otherwise."""
    from qonnx.custom_op.registry import getCustomOp

    from fcnseg.hw.runtime_weights import writable_nodes

    nodes = {n.name: n for n in writable_nodes(folded)}
    for entry in record["layers"]:
        node = nodes[entry["node"]]
        inst = getCustomOp(node)
        dtype = inst.get_input_datatype(1)
        values = folded.get_initializer(node.input[1])
        lo, hi = float(values.min()), float(values.max())
        what = "weights" if entry["kind"] == "MVAU" else "thresholds"
        if dtype.name != entry["dtype"]:
            raise UserError(
                f"{where}: layer {entry['layer']}: {what} datatype old {entry['dtype']} vs "
                f"new {dtype.name}"
            )
        if lo < dtype.min() or hi > dtype.max():
            raise UserError(
                f"{where}: layer {entry['layer']}: {what} span [{lo:g}, {hi:g}], outside "
                f"{dtype.name} [{dtype.min():g}, {dtype.max():g}] its memory holds"
            )
        if entry.get("narrow_weights") and lo == dtype.min():
            raise UserError(
                f"{where}: layer {entry['layer']}: weight {lo:g} is the {dtype.name} minimum, "
                f"but the bitfile was built for narrow weights [{-dtype.max():g}, "
                f"{dtype.max():g}] (finn's NARROW_WEIGHTS); retrain with narrow-range weights"
            )


def _kept_files(package: Package) -> dict[str, Path]:
    return {
        rel: package.path / rel for rel in package.meta["files"] if rel.startswith(KEPT_PREFIXES)
    }


def _rebuild(
    package: Package, record: Mapping[str, Any], checkpoint: Path, scratch: Path, progress: Progress
) -> Path:
    """Export ``checkpoint`` at the package's tile and run the flow with the package's board,
    clock and folding; returns the build folder."""
    from fcnseg.hw.boards import get_board
    from fcnseg.hw.build import BuildOptions, compile_export
    from fcnseg.quantize.export import export_checkpoint

    if package.board is None:
        raise UserError(f"{package.path}: the package names no board")
    export_dir = scratch / "export"
    export_checkpoint(checkpoint, package.tile, export_dir)
    folding = scratch / "folding.json"
    folding.write_text(json.dumps(folding_config(record["fingerprint"]), indent=1))
    clock = package.estimates.get("clock_ns")
    opts = BuildOptions(
        export_dir=export_dir,
        out_dir=scratch / "build",
        board=get_board(package.board),
        folding_file=folding,
        clock_ns=float(clock) if clock is not None else None,
        vivado=False,
        package=False,
        hardware_sources=False,
        standalone_thresholds=True,
        runtime_weights=True,
    )
    return compile_export(opts, progress=progress).out_dir


def swap_weights(
    package_dir: str | Path,
    checkpoint: str | Path,
    out_dir: str | Path,
    progress: Progress = _stderr,
) -> SwapResult:
    """See the module docstring. Returns the new package and how many layers changed."""
    from qonnx.core.modelwrapper import ModelWrapper

    from fcnseg.host.card import CARD_FILE, ModelCard
    from fcnseg.host.package import load_package
    from fcnseg.hw.boards import get_board
    from fcnseg.hw.runtime_weights import fingerprint, first_difference, read_dat, runtime_files
    from fcnseg.hw.steps import ESTIMATE_STEPS
    from fcnseg.hw.steps.exact_thresholds import EXACT_DIR, check_model
    from fcnseg.hw.to_package import build_package
    from fcnseg.quantize.exact.record import load_net

    started = time.perf_counter()
    package_dir, checkpoint, out_dir = Path(package_dir), Path(checkpoint), Path(out_dir)
    if not checkpoint.is_file():
        raise UserError(f"checkpoint not found: {checkpoint}")
    if out_dir.resolve() == package_dir.resolve():
        raise UserError(f"{out_dir}: give a new package folder, not the package itself")
    package = load_package(package_dir)
    record = _runtime_record(package)
    where = f"{checkpoint} on {package_dir}"
    with tempfile.TemporaryDirectory(prefix="fcnseg-swap-") as tmp:
        build = _rebuild(package, record, checkpoint, Path(tmp), progress)
        step = ESTIMATE_STEPS[-1].rsplit(".", 1)[-1]
        folded = ModelWrapper(str(build / "intermediate_models" / f"{step}.onnx"))
        difference = first_difference(record["fingerprint"], fingerprint(folded))
        if difference is not None:
            raise UserError(f"{where}: does not fit the bitfile: {difference}")
        check_parameters(folded, record, where)
        hw_graph = ModelWrapper(str(build / "hw_graph.onnx"))
        check_model(hw_graph, load_net(build / EXACT_DIR))
        new, files = runtime_files(folded, hw_graph, get_board(package.board), build)
        changed = 0
        for old_entry, new_entry in zip(record["layers"], new["layers"], strict=True):
            # the bitfile's property, not the new weights': kept from the old record
            new_entry["narrow_weights"] = old_entry["narrow_weights"]
            old_words = read_dat(package.path / old_entry["file"])
            changed += int(not (old_words == read_dat(build / new_entry["file"])).all())
        new["swapped_from"] = {
            "manifest_sha256": package.meta["manifest_sha256"],
            "checkpoint": checkpoint.name,
        }
        affine = json.loads((build / "report" / "output_affine.json").read_text())
        card = ModelCard.load(build.parent / "export" / CARD_FILE)
        staged = Path(tmp) / "package"
        build_package(
            hw_graph,
            staged,
            model_card=card,
            estimates=package.estimates,
            board=package.board,
            output_scale=affine.get("scale"),
            output_bias=affine.get("bias"),
            extra_files={**_kept_files(package), **files},
            runtime_weights=new,
        )
        load_package(staged)  # every check, before anything is replaced
        _replace(staged, out_dir)
    seconds = time.perf_counter() - started
    progress(
        f"{out_dir}: {changed} of {len(new['layers'])} writable layers changed, bitfile of "
        f"{package_dir} kept ({seconds:.1f} s)"
    )
    return SwapResult(out_dir, seconds, changed, len(new["layers"]))


def _replace(staged: Path, out_dir: Path) -> None:
    """Move the finished package ``staged`` onto ``out_dir`` atomically (a sibling first, then
    :func:`fcnseg.atomic.replace_dir`), so ``out_dir`` is either the old folder or the new."""
    from fcnseg.atomic import replace_dir

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    sibling = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        shutil.copytree(staged, sibling, dirs_exist_ok=True)
        replace_dir(sibling, out_dir)
    finally:
        if sibling.exists():
            shutil.rmtree(sibling, ignore_errors=True)


@click.command("swap-weights")
@click.argument("package", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="NEW_PACKAGE",
    help="The new package (written atomically; nothing is written if the swap is refused).",
)
def swap_weights_command(package: Path, checkpoint: Path, out_dir: Path) -> None:
    """Put CHECKPOINT (a retrained net of the same architecture) on PACKAGE's bitfile.

    PACKAGE must be built with `fcnseg compile --runtime-weights`. The checkpoint is exported
    at the package's tile and run through the same flow and folding; a graph the bitfile
    cannot run (another shape, folding, datatype or threshold count, a constant baked into
    the hardware, a weight outside its memory's range) is refused with the first difference.
    """
    from fcnseg.hw.compat import check_dependencies

    check_dependencies()
    result = swap_weights(package, checkpoint, out_dir)
    click.echo(
        f"package: {result.package_dir}  ({result.changed_layers} of {result.layers} writable "
        f"layers changed, {result.seconds:.1f} s)"
    )
