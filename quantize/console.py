"""What the training stage shows on a terminal: progress bars on a tty only, no library noise.

Two rules a log file needs (a redirected ``fcnseg train`` once wrote 397 carriage-return lines
for one epoch):

- :func:`progress_wanted` turns progress bars on only when stderr is a terminal.
- :func:`quiet_warnings` keeps warnings that say nothing a user can act on (Brevitas telling it
  uses its plain kernels, the ONNX opset it picked by default, ...) off the console. They are
  written to the run's log file where there is one, so nothing is lost. Warnings not on the
  list still show as usual, and an explicit ``-W``/``PYTHONWARNINGS`` from the user turns the
  filter off.

Standard library only: ``fcnseg eval --package`` imports this on a board.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: (category, message regex) of warnings that are noise to a user of fcnseg: each seen on stderr
#: of `fcnseg train` or `fcnseg export` here (Brevitas 0.13.4, torch 2.13.0), none actionable
NOISE: tuple[tuple[type[Warning], str], ...] = (
    # brevitas.graph.equalize at import: an optional CUDA kernel package is absent
    (UserWarning, r"fast_hadamard_transform package not found"),
    # brevitas' ONNX export managers name the opset they use when none is given
    (UserWarning, r"ONNX opset version set to \d+"),
)

_PATTERNS = tuple((category, re.compile(text)) for category, text in NOISE)


def progress_wanted(requested: bool = True) -> bool:
    """Whether to draw progress bars: only if asked for and stderr is a terminal."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(requested and isatty is not None and isatty())


def is_noise(message: Warning | str, category: type[Warning]) -> bool:
    """Whether a warning is on the :data:`NOISE` list."""
    text = str(message)
    return any(issubclass(category, kind) and p.search(text) for kind, p in _PATTERNS)


@contextmanager
def quiet_warnings(log: Path | None = None) -> Iterator[None]:
    """Route the :data:`NOISE` warnings raised inside the block to ``log`` (or nowhere).

    Other warnings reach the previous ``warnings.showwarning`` unchanged. The log file is opened
    in append mode on the first noise warning only, so a clean run creates no file.
    """
    if sys.warnoptions:  # the user asked for warnings explicitly (-W, PYTHONWARNINGS)
        yield
        return
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            if not is_noise(message, category):
                shown(message, category, filename, lineno, file, line)
                return
            if log is not None:
                text = warnings.formatwarning(message, category, filename, lineno, line)
                log.parent.mkdir(parents=True, exist_ok=True)
                with log.open("a") as handle:
                    handle.write(text)

        warnings.showwarning = show
        yield
