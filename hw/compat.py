"""The one place where fcnseg adapts finn-plus 1.6.1 so its Python API runs without Vivado.

finn-plus expects to be started by its ``finn`` CLI (``run_finn.py``), which boots global settings,
checks Vivado and builds the XSI simulator before anything else. The estimate-only part of the
flow (streamline -> HW layers -> partition -> fold -> estimates) is pure Python and runs on any CPU,
but four things stop it from being reached here (measured, see docs/finn-notes.md):

1. ``finn.util.settings.get_settings()`` raises unless ``FINN_BUILD_DIR`` (or a booted settings
   object) exists. We point it at a directory of our own (``<build>/finn_tmp`` or a temp dir) when
   the user has not set one. Not a patch: it is the documented way to run finn outside its CLI.
2. ``finn.builder.build_dataflow_steps`` does ``from finn.xsi import SimEngine``; the lazy
   ``finn.xsi.__getattr__`` then calls ``ensure_available()``, which raises ``OSError`` without
   ``XILINX_VIVADO``. The name is only used as a type annotation there, so without Vivado we bind
   ``finn.xsi.SimEngine`` to a placeholder class that refuses to be instantiated. With
   ``XILINX_VIVADO`` set nothing is patched and finn loads the real simulator.
3. ``finn.builder.build_dataflow.exit_buildflow`` reads ``XILINX_VIVADO`` (for a "tool_version"
   field of ``metadata_builder.json``) and raises without it, after every build. We wrap
   ``get_vivado_root`` *in that module only* to return ``"none"`` when the variable is missing.
4. ``psutil`` is imported by finn but not declared by finn-plus; it is in our ``compile`` extra.
   :func:`check_dependencies` turns its absence into a one-line error instead of a traceback.

Everything is applied once, idempotently, by :func:`prepare_finn`, and nothing is patched when
Vivado is present. Keep this module in sync with finn-plus when its version changes.

Two environment checks live here too, because finn turns both into late tracebacks:

- :func:`check_vivado_install`: a set ``XILINX_VIVADO`` must be a Vivado install (a folder with
  ``bin/vivado``). finn trusts any value, skips nothing and fails minutes later in a subprocess;
  ``prepare_finn`` checks it before finn is imported.
- :func:`check_finn_deps`: the HLS/IP and bitfile steps read finn-hlslib and board files from
  finn's ``FINN_DEPS`` folder, which ``finn deps update`` fills with the commits finn-plus pins
  (``finn/interface/external_dependencies.yaml``). Checked before a build that will need them.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from fcnseg.errors import UserError

if TYPE_CHECKING:
    from fcnseg.hw.boards import Board

#: finn-plus version this module was written and measured against.
FINN_PLUS_VERSION = "1.6.1"

_PREPARED = False


def has_vivado() -> bool:
    """True when ``XILINX_VIVADO`` is set, i.e. the IP/bitfile part of the flow can run."""
    return bool(os.environ.get("XILINX_VIVADO"))


def check_dependencies() -> None:
    """Fail with one line if the ``compile`` extra (finn-plus and what it imports) is missing."""
    missing = [
        name
        for name in ("finn", "qonnx", "onnx", "psutil")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise UserError(
            f"missing {', '.join(missing)}: install fcnseg[compile] and "
            f"`pip install --no-deps finn-plus=={FINN_PLUS_VERSION}`"
        )


def check_vivado_install() -> None:
    """Fail with one line if ``XILINX_VIVADO`` is set but is not a Vivado install."""
    root = os.environ.get("XILINX_VIVADO")
    if not root:
        return
    fix = (
        "point it at the Vivado install folder (the one holding bin/vivado, e.g. "
        "/tools/Xilinx/Vivado/2024.2) or unset it for an estimate-only build"
    )
    if not Path(root).is_dir():
        raise UserError(f"XILINX_VIVADO={root} is no folder: {fix}")
    if not (Path(root) / "bin" / "vivado").is_file():
        raise UserError(f"XILINX_VIVADO={root} has no bin/vivado: {fix}")


#: a file whose presence shows a ``finn deps update`` dependency is in place (its main header).
_FINN_HLSLIB_MARKER = Path("finn-hlslib") / "bnn-library.h"


def finn_deps_dir() -> Path:
    """The ``FINN_DEPS`` folder finn-plus will read: its settings from the same sources
    (settings file, environment, default ``<finn>/finn_deps``), built as a private object so
    finn's global settings stay unset until :func:`prepare_finn` has run."""
    from finn.interface.settings import FINNSettings

    build_dir = Path(os.environ.get("FINN_BUILD_DIR") or tempfile.gettempdir())
    settings = FINNSettings.init(
        flow_config=build_dir / "dummy.yaml", auto_set_environment_vars=False
    )
    return Path(settings.finn_deps)


def missing_finn_deps(board: Board, deps: Path) -> list[str]:
    """What the Vivado steps for ``board`` need from ``deps`` and is not there."""
    missing = []
    if not (deps / _FINN_HLSLIB_MARKER).is_file():
        missing.append(f"finn-hlslib ({deps / _FINN_HLSLIB_MARKER.parent})")
    if board.board_files and not (deps / "board_files" / board.board_files).is_dir():
        missing.append(f"the {board.name} board files ({deps / 'board_files' / board.board_files})")
    return missing


def check_finn_deps(board: Board) -> None:
    """Fail with one line, before any step runs, if the HLS/IP/bitfile steps would miss a
    dependency that ``finn deps update`` fetches."""
    deps = finn_deps_dir()
    missing = missing_finn_deps(board, deps)
    if missing:
        raise UserError(
            f"the Vivado steps need {' and '.join(missing)}: run `finn deps update` (fetches the "
            f"commits finn-plus {FINN_PLUS_VERSION} pins into FINN_DEPS={deps}), or set FINN_DEPS "
            "to a folder that holds them; --no-vivado builds without them"
        )


class _NoSimEngine:
    """Stands in for ``finn.xsi.SimEngine`` without Vivado: RTL simulation is unavailable."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("RTL simulation (finn_xsi) needs Vivado: set XILINX_VIVADO")


def prepare_finn(finn_build_dir: Path | None = None) -> None:
    """Make finn-plus importable and runnable for an estimate-only build (see module docstring).

    ``finn_build_dir`` becomes ``FINN_BUILD_DIR`` unless the user set one; finn writes generated
    code and partition models there.
    """
    global _PREPARED
    check_dependencies()
    check_vivado_install()
    if not os.environ.get("FINN_BUILD_DIR"):
        build_dir = finn_build_dir or Path(tempfile.mkdtemp(prefix="fcnseg-finn-"))
        build_dir.mkdir(parents=True, exist_ok=True)
        os.environ["FINN_BUILD_DIR"] = str(build_dir.resolve())
    Path(os.environ["FINN_BUILD_DIR"]).mkdir(parents=True, exist_ok=True)
    if _PREPARED:
        return
    if not has_vivado():
        import finn.xsi

        if "SimEngine" not in vars(finn.xsi):
            finn.xsi.SimEngine = _NoSimEngine  # type: ignore[attr-defined]
        import finn.builder.build_dataflow as build_dataflow

        original = build_dataflow.get_vivado_root

        def get_vivado_root() -> str:
            return os.environ.get("XILINX_VIVADO") or "none"

        get_vivado_root.__wrapped__ = original  # type: ignore[attr-defined]
        build_dataflow.get_vivado_root = get_vivado_root
    _PREPARED = True


def restore_stdio() -> None:
    """Undo finn's ``PrintLogger`` replacement of ``sys.stdout``/``sys.stderr``.

    ``build_dataflow_cfg`` wraps both streams to mirror prints into its log and never restores
    them; a second build or the rest of our CLI would otherwise print through a stale logger.
    """
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        console = getattr(stream, "console", None)
        if console is not None and type(stream).__name__ == "PrintLogger":
            setattr(sys, name, console)
