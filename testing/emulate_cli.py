"""``fcnseg emulate``: the emulated board (:mod:`fcnseg.testing.emulated_zynq`) as a command.

So anyone can check a package "on the board" without one, with the code a board runs:

- ``fcnseg emulate board-files PACKAGE -o OUT``: a copy of ``PACKAGE`` (every file byte for
  byte) plus what Vivado and finn's driver step would have added, the emulator's stand-in
  ``bitfile/finn-accel.bit`` + ``.hwh`` and ``driver/settings.json``
  (:func:`~fcnseg.testing.emulated_zynq.write_board_files`,
  :func:`~fcnseg.testing.emulated_zynq.make_settings`), added with the package writer
  (:func:`fcnseg.host.package.add_package_files`: sha256 recorded, the copy verified) and moved
  into place only when whole. For a runtime-weights package the stand-in bitstream carries the
  memories' words of ``PACKAGE``: that is "the bitfile" a later ``fcnseg swap-weights`` keeps.
- ``fcnseg emulate run [OPTIONS] -- COMMAND ARGS...``: runs the fcnseg ``COMMAND`` (segment,
  classify, video, eval, each given ``--backend pynq``) in this process with an
  :class:`~fcnseg.testing.emulated_zynq.EmulatedZynq` installed as pynq's active device, so
  pynq, finn-plus-driver and our ``pynq`` backend run unchanged. The fabric is made when pynq
  downloads the bitfile, from the package that holds it (``EmulatedZynq(make_accelerator=)``):
  the bit-exact simulator (``--fabric sim``, which computes with what the writable memories
  hold) or the package's generated hardware (``--fabric generated``: C++ simulation and
  Verilator; its weights are the ones it was generated with, so not for runtime-weights
  packages). Afterwards one line says what the board saw: DMA jobs, tiles, runtime-weight words
  written and read back, faults. A fault the command did not notice (a write outside every
  memory, a DMA started while running) is exit 2, one line; a command that failed has said why
  in its own line and exits with its own code.

Why ``--``: the command's own options (``--package``, ``-o``) must reach it untouched, and the
line must say where ``emulate run``'s options end. The emulator refuses to start on a real
PYNQ board (:func:`real_board_signs`): there pynq must drive the real fabric, and a stand-in
installed as its active device would hide it.

A testing aid (it needs pynq, the ``board`` extra); pynq and the emulator are imported only
inside the commands.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fcnseg.errors import UserError

if TYPE_CHECKING:
    from fcnseg.host.package import Package
    from fcnseg.testing.emulated_zynq import Accelerator, EmulatedZynq

#: the fcnseg commands that drive a board through ``--backend pynq``
BOARD_COMMANDS = ("segment", "classify", "video", "eval")

#: what a PYNQ image has and a PC does not: the FPGA manager pynq programs bitstreams through
#: (``EmbeddedDevice._probe_`` of pynq 4.0.0), the PYNQ 2.x contiguous-memory driver, and the
#: ``BOARD`` variable the image sets (:func:`fcnseg.host.segmenter.running_board`)
BOARD_PATHS = ("/sys/class/fpga_manager/fpga0/firmware", "/dev/xlnk")

#: how :class:`~fcnseg.testing.emulated_zynq.GeneratedAccelerator` ends its refusal of nodes it
#: cannot build, and what this command says instead
API_BRIDGE_ADVICE = "pass bridge= to compute them with the simulator"
CLI_BRIDGE_ADVICE = "pass --bridge to compute them with the simulator"

#: the emulated board's contiguous memory (DMA buffers of every call in flight fit it)
DEFAULT_DDR_MB = 256


def real_board_signs(
    environ: Mapping[str, str] | None = None, paths: Sequence[str] = BOARD_PATHS
) -> list[str]:
    """What says this process runs on a real PYNQ board ([] on a PC)."""
    env = os.environ if environ is None else environ
    signs = [path for path in paths if os.path.exists(path)]
    if env.get("BOARD"):
        signs.append(f"BOARD={env['BOARD']}")
    return signs


def refuse_real_board(
    environ: Mapping[str, str] | None = None, paths: Sequence[str] = BOARD_PATHS
) -> None:
    """One-line refusal to install an emulated board where a real one is (module docstring)."""
    signs = real_board_signs(environ, paths)
    if signs:
        raise UserError(
            f"this is a PYNQ board ({', '.join(signs)}): the emulated board runs on a PC only; "
            "on the board run the command itself with --backend pynq"
        )


# --------------------------------------------------------------------------------------------
# board-files
# --------------------------------------------------------------------------------------------


def write_board_copy(package: Package, out: Path, *, overwrite: bool = False) -> Path:
    """``package`` copied to ``out`` with the emulated board files added (module docstring);
    atomic: built in a temporary sibling, verified, then moved into place."""
    from fcnseg.atomic import replace_dir
    from fcnseg.host.package import add_package_files
    from fcnseg.testing.emulated_zynq import BITSTREAM_MAGIC, make_settings, write_board_files

    for bit in sorted(package.file("bitfile").glob("*.bit")):
        if not bit.read_bytes().startswith(BITSTREAM_MAGIC):
            raise UserError(
                f"{bit}: {package.path} has a real bitfile; the emulated board files are for "
                "a package built without Vivado"
            )
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists (pass --overwrite to replace it)")
    if out.resolve() == package.path.resolve():
        raise UserError(f"{out}: the output must not be the package itself")
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        copy = scratch / "package"
        shutil.copytree(package.path, copy)
        bit = write_board_files(scratch / "bitfile", package)
        settings = (json.dumps(make_settings(package), indent=2) + "\n").encode()
        add_package_files(
            copy,
            {
                f"bitfile/{bit.name}": bit.read_bytes(),
                f"bitfile/{bit.with_suffix('.hwh').name}": bit.with_suffix(".hwh").read_bytes(),
                "driver/settings.json": settings,
            },
        )
        replace_dir(copy, out)  # add_package_files has loaded the copy with every check
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------


class _CommandAfterDashes(click.Command):
    """A click command whose own options end at ``--``; the words after it are kept whole in
    ``ctx.meta["emulated_command"]`` (click drops the ``--`` itself, and with it the only
    sign of where the inner command's options begin)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" not in args:
            if any(word in ("-h", "--help") for word in args):
                return super().parse_args(ctx, args)
            raise UserError(
                "fcnseg emulate run: give the command after `--`, e.g. "
                "`fcnseg emulate run -- segment IMG --package PKG --backend pynq`"
            )
        i = args.index("--")
        ctx.meta["emulated_command"] = list(args[i + 1 :])
        return super().parse_args(ctx, args[:i])


def check_command(words: Sequence[str]) -> str:
    """The board command named by ``words`` (module docstring); one line for anything else."""
    if not words:
        raise UserError("fcnseg emulate run: no command after `--`")
    name = words[0]
    if name not in BOARD_COMMANDS:
        raise UserError(
            f"fcnseg emulate run: `{name}` is not a command that drives a board (one of: "
            f"{', '.join(BOARD_COMMANDS)})"
        )
    backend = None
    for i, word in enumerate(words):
        if word == "--backend" and i + 1 < len(words):
            backend = words[i + 1]
        elif word.startswith("--backend="):
            backend = word.split("=", 1)[1]
    if backend != "pynq":
        raise UserError(
            f"fcnseg emulate run: give `{name}` --backend pynq (the emulated board is reached "
            f"through the pynq backend; got {backend or 'the default, sim'})"
        )
    return name


def fabric_maker(
    device: EmulatedZynq,
    fabric: str,
    *,
    paced: bool = False,
    cache: Path | None = None,
    jobs: int = 1,
    bridge: bool = False,
) -> Any:
    """The ``make_accelerator`` of ``device``: the fabric ``fabric`` for the bitfile's package,
    and (``paced``) that package's estimated timing (II and latency) for the fabric."""
    from fcnseg.testing import emulated_zynq as ez

    def make(package: Package) -> Accelerator:
        if paced:
            device.timing = ez.FabricTiming.of_package(package)
            device.fabric_fps = 1.0 / device.timing.interval_s if device.timing.interval_s else None
        if fabric == "sim":
            return ez.sim_accelerator(package)
        if package.meta.get("runtime_weights"):
            raise UserError(
                f"{package.path}: --fabric generated computes with the weights the hardware was "
                "generated with, not the runtime-writable memories; use --fabric sim"
            )
        try:
            return ez.generated_accelerator(
                package, cache, bridge="simulator" if bridge else None, jobs=jobs
            )
        except UserError as error:  # the API's advice (``bridge=``), in this command's words
            raise UserError(str(error).replace(API_BRIDGE_ADVICE, CLI_BRIDGE_ADVICE)) from None

    return make


def summary(device: EmulatedZynq) -> str:
    """One line of what the emulated board saw."""
    stats = device.stats
    return (
        f"emulated board: {stats['jobs']} DMA jobs, {stats['tiles']} tiles, "
        f"{stats['weight_writes']} runtime-weight words written, {stats['weight_reads']} read "
        f"back, {len(device.faults)} faults"
    )


@click.group("emulate")
def emulate() -> None:
    """The emulated Zynq board on a PC: board files for a package, and fcnseg commands run on
    it with --backend pynq (the real pynq and finn-plus-driver code)."""


@emulate.command("board-files")
@click.argument("package", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="The copy's folder.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def board_files(package: str, output: str, overwrite: bool) -> None:
    """Copy PACKAGE with the emulated board's bitfile/ and driver/settings.json added."""
    from fcnseg.host.package import load_package

    out = write_board_copy(load_package(package), Path(output), overwrite=overwrite)
    click.echo(
        f"{out}: {package} with bitfile/finn-accel.bit + .hwh and driver/settings.json; the "
        "bitfile is an emulator stand-in that no real board can load (fcnseg emulate run)"
    )


@emulate.command("run", cls=_CommandAfterDashes, options_metavar="[OPTIONS] -- COMMAND [ARGS]...")
@click.option(
    "--fabric",
    type=click.Choice(["sim", "generated"]),
    default="sim",
    show_default=True,
    help="What computes the tiles: the bit-exact simulator, or the package's generated "
    "hardware (C++ simulation + Verilator).",
)
@click.option(
    "--fabric-fps", type=click.FloatRange(min=0, min_open=True), default=None,
    help="Pace the fabric at this many tiles/s.",
)  # fmt: skip
@click.option("--paced", is_flag=True, help="Pace the fabric at the package's estimated II/L.")
@click.option(
    "--cache", type=click.Path(), default=None,
    help="--fabric generated: keep the built nodes here (a re-run only runs).",
)  # fmt: skip
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="--fabric generated: parallel node builds.")  # fmt: skip
@click.option("--bridge", is_flag=True,
              help="--fabric generated: compute nodes that cannot be built here with the "
              "simulator (named in the summary).")  # fmt: skip
@click.option("--ddr-mb", type=click.IntRange(min=1), default=DEFAULT_DDR_MB, show_default=True,
              help="The emulated board's contiguous memory.")  # fmt: skip
@click.pass_context
def run(
    ctx: click.Context,
    fabric: str,
    fabric_fps: float | None,
    paced: bool,
    cache: str | None,
    jobs: int,
    bridge: bool,
    ddr_mb: int,
) -> None:
    """Run `-- COMMAND ARGS...` (segment, classify, video or eval with --backend pynq) on the
    emulated board."""
    words = ctx.meta.get("emulated_command", [])
    check_command(words)
    if paced and fabric_fps:
        raise UserError("fcnseg emulate run: give --fabric-fps or --paced, not both")
    refuse_real_board()
    from fcnseg.cli import main
    from fcnseg.testing.emulated_zynq import EmulatedZynq

    device = EmulatedZynq(fabric_fps=fabric_fps, ddr_bytes=ddr_mb << 20)
    device.make_accelerator = fabric_maker(
        device, fabric, paced=paced, cache=Path(cache) if cache else None, jobs=jobs, bridge=bridge
    )
    with device:
        code = main(list(words))
    if code:  # the command said why, in its one line: nothing to add to it
        raise SystemExit(code)
    if device.faults:
        raise UserError(f"{summary(device)}; the first: {device.faults[0]}")
    bridged = getattr(device.accelerator, "bridged", None)
    click.echo(summary(device) + (f"; simulator-bridged: {', '.join(bridged)}" if bridged else ""))
