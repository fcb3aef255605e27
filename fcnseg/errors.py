"""Errors shared by every stage.

Following finn's split between ``FINNUserError`` and ``FINNInternalError``: a :class:`UserError`
is a problem with what the user gave us (a missing file, a damaged package, a bad option). The CLI
prints it as one line and exits non-zero without a traceback. Anything else is a bug and keeps its
traceback.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""
