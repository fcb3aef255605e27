"""The ``fcnseg`` console script: one command, a subcommand per stage.

Subcommands live with their stage (``quantize/cli.py``, ``hw/cli.py``, ``host/cli.py``) and are
imported only when invoked, so ``fcnseg segment`` on a board never imports torch or finn, and
``fcnseg --help`` stays fast. Each stage's CLI module must itself import heavy libraries inside its
command functions only.
"""

from __future__ import annotations

import importlib
import sys

import click

from fcnseg import __version__
from fcnseg.errors import UserError

#: subcommand name -> "module:attribute" of its click command, and a one-line help shown by --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("fcnseg.quantize.cli:train", "Train an FCN (float or quantization-aware)."),
    "export": ("fcnseg.quantize.cli:export", "Export a checkpoint to QONNX at a fixed tile size."),
    "eval": ("fcnseg.quantize.cli:evaluate", "Report the FCN metrics of a checkpoint or package."),
    "compile": ("fcnseg.hw.cli:compile_", "Run the finn-plus flow: export -> deployment package."),
    "info": ("fcnseg.hw.cli:info", "Print the reports of a build or deployment package."),
    "upgrade": (
        "fcnseg.hw.cli:upgrade",
        "Upgrade a deployment package to the current format, keeping its files.",
    ),
    "swap-weights": (
        "fcnseg.hw.swap_weights:swap_weights_command",
        "Put a retrained checkpoint on a runtime-weights package's bitfile.",
    ),
    "verify": (
        "fcnseg.hw.verify.cli:verify",
        "Run the generated HLS/RTL hardware and compare it with the simulator.",
    ),
    "segment": ("fcnseg.host.cli:segment", "Segment images with a deployment package."),
    "classify": ("fcnseg.host.classify_cli:classify", "Classify images with a classifier package."),
    "video": ("fcnseg.host.video.cli:video", "Segment a video file, image sequence or camera."),
    "bench": ("fcnseg.benchmarks.cli:bench", "Run the benchmark suite."),
    "emulate": (
        "fcnseg.testing.emulate_cli:emulate",
        "Run a package on an emulated board (a PC, no FPGA).",
    ),
}

#: the extra each stage's commands need beyond the base install (the host runtime)
COMMAND_EXTRAS: dict[str, str] = {
    "train": "train",
    "export": "train",
    "eval": "train",
    "compile": "compile",
    "upgrade": "compile",
    "swap-weights": "compile",
    "video": "video",
    "emulate": "board",
}

#: top-level module -> (extras that provide it, the distribution to name); modules a command
#: may miss on a host-only install (tests/test_cli_extras.py checks them against pyproject)
MODULE_EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "torch": (("train",), "torch"),
    "brevitas": (("train",), "brevitas"),
    "onnx": (("train",), "onnx"),
    "onnxoptimizer": (("train",), "onnxoptimizer"),
    "onnxruntime": (("train",), "onnxruntime"),
    "safetensors": (("train",), "safetensors"),
    "skimage": (("train",), "scikit-image"),
    "qonnx": (("train", "compile"), "qonnx"),
    "finn": (("compile",), "finn-plus"),
    "pynq": (("board",), "pynq"),
    "av": (("video",), "av"),
}

#: what to add to the install line, per extra
EXTRA_NOTES: dict[str, str] = {
    "train": " (it pins torch==2.13.0; an unpinned torch pulls a multi-GB CUDA build)",
    "compile": " and pip install --no-deps finn-plus==1.6.1 (finn-plus pins an older brevitas)",
    "board": " (pynq==4.0.0 needs numpy<2)",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        target, short_help = COMMANDS[cmd_name]
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
            command = getattr(module, attribute)
        except (ImportError, AttributeError) as error:
            # A stage whose extras are not installed (e.g. `compile` on a board) or not yet built.
            return _unavailable(cmd_name, short_help, error)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Show one-line help without importing every stage.
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, short) in COMMANDS.items()])


def missing_extra_message(command: str | None, error: ImportError) -> str | None:
    """One line saying which extra to install for a missing third-party module, or None.

    None for modules fcnseg knows nothing about and for fcnseg's own modules (a broken install
    or a bug, which the traceback of ``--debug`` explains better).
    """
    module = (getattr(error, "name", None) or "").split(".")[0]
    if not module or module == "fcnseg" or module not in MODULE_EXTRAS:
        return None
    extras, distribution = MODULE_EXTRAS[module]
    wanted = COMMAND_EXTRAS.get(command or "")
    extra = wanted if wanted in extras else extras[0]
    what = f"`fcnseg {command}`" if command else "this command"
    return (
        f"{what} needs {distribution}, which this environment lacks: "
        f"pip install 'fcnseg[{extra}]'{EXTRA_NOTES.get(extra, '')}"
    )


def _unavailable(name: str, short_help: str, error: Exception) -> click.Command:
    @click.command(name, short_help=short_help, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        if isinstance(error, ImportError) and (hint := missing_extra_message(name, error)):
            raise UserError(hint)
        raise UserError(f"`fcnseg {name}` is not available in this environment ({error})")

    return command


def _subcommand(argv: list[str]) -> str | None:
    """The subcommand named on a command line (the first word that is one), if any."""
    return next((word for word in argv if word in COMMANDS), None)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fcnseg")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """fcnseg: semantic segmentation with quantized FCNs on Zynq FPGAs."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning :class:`UserError` into one line on stderr and exit 2."""
    words = argv if argv is not None else sys.argv[1:]
    debug = "--debug" in words
    try:
        cli.main(args=argv, prog_name="fcnseg", standalone_mode=False)
    except UserError as error:
        if debug:
            raise
        click.echo(f"fcnseg: error: {error}", err=True)
        return 2
    except ImportError as error:
        # A stage's command imports its heavy libraries when it runs: on an install without
        # that stage's extra, say which extra to install instead of printing a traceback.
        hint = missing_extra_message(_subcommand(words), error)
        if debug or hint is None:
            raise
        click.echo(f"fcnseg: error: {hint}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("fcnseg: aborted", err=True)
        return 130
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
