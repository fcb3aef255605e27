"""Errors shared by every stage.

Following finn's split between ``FINNUserError`` and ``FINNInternalError``: a :class:`UserError`
is a problem with what the user gave us (a missing file, a damaged package, a bad option). The CLI
prints it as one line and exits non-zero without a traceback. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


class ParameterError(UserError):
    """A :class:`UserError` about parameters of the Python API, named as Python names them.

    The library speaks in its own terms (``shift_stitch=3 must be one of (1, 2, 4)``); a front
    end that exposes a parameter under another name (the CLI's ``--shift-stitch``) rewrites the
    message with :meth:`spelled` instead of editing the text. ``template`` writes each parameter
    as ``{name}``; ``parameters`` gives their values (the first is the one at fault)::

        ParameterError("{overlap} must be >= 0", overlap=-32)
        # str(): "overlap=-32 must be >= 0"; .spelled({"overlap": "--overlap"}): "--overlap -32 ..."
    """

    def __init__(self, template: str, **parameters: object) -> None:
        self.template = template
        self.parameters = parameters
        super().__init__(self.spelled({}))

    def spelled(self, flags: Mapping[str, str]) -> str:
        """The message with each parameter in ``flags`` written as its flag (``--flag value``)
        and every other one as Python writes it (``name=value``)."""

        def shown(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.parameters:
                return match.group(0)
            value, flag = self.parameters[name], flags.get(name)
            if flag is None:
                return f"{name}={value!r}"
            return flag if value is None else f"{flag} {value}"

        return re.sub(r"\{(\w+)\}", shown, self.template)  # one pass: values are not templates


def for_flags(error: BaseException, flags: Mapping[str, str]) -> str:
    """``error`` as one line in a front end's terms: :meth:`ParameterError.spelled` for
    parameter errors, ``str(error)`` for anything else."""
    if isinstance(error, ParameterError):
        return error.spelled(flags)
    return str(error)
