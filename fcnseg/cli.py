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
    "segment": ("fcnseg.host.cli:segment", "Segment images with a deployment package."),
    "bench": ("fcnseg.benchmarks.cli:bench", "Run the benchmark suite."),
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


def _unavailable(name: str, short_help: str, error: Exception) -> click.Command:
    @click.command(name, short_help=short_help, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        raise UserError(f"`fcnseg {name}` is not available in this environment ({error})")

    return command


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
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="fcnseg", standalone_mode=False)
    except UserError as error:
        if debug:
            raise
        click.echo(f"fcnseg: error: {error}", err=True)
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
