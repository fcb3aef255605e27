"""The command-line options every cluster command shares (click only: no dask imported).

``fcnseg segment`` and ``fcnseg eval`` both join a cluster over ``tls://`` with the same three
files; one decorator gives both the same names, checks and help.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])

_TLS_FILES = (
    ("--tls-ca-file", "the CA that signed the cluster's certificates."),
    ("--tls-cert", "this client's certificate."),
    ("--tls-key", "this client's private key."),
)


def tls_options(command: F) -> F:
    """Add ``--tls-ca-file``, ``--tls-cert`` and ``--tls-key`` (existing files) to ``command``."""
    for flag, what in reversed(_TLS_FILES):
        command = click.option(
            flag,
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help=f"With a tls:// --scheduler: {what}",
        )(command)
    return command
