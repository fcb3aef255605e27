"""How a farm's client talks to its scheduler: ``tls://`` with mutual certificates, or plain
``tcp://`` on a trusted network (:mod:`fcnseg.host.farm`).

Dask's ``tcp://`` has no authentication and no encryption: anyone who reaches the scheduler can
run code on every worker. So the client warns when a ``tcp://`` scheduler is not on loopback,
and ``tls://`` takes a CA file and this client's certificate and key (``--tls-ca-file``,
``--tls-cert``, ``--tls-key``), checked here before anything connects: all three or none, and
only with a ``tls://`` address. The scheduler and the workers are started with their own
certificates from the same CA (``dask scheduler --tls-ca-file ... --tls-cert ... --tls-key
...``, the same options for ``dask worker``) and, with ``require_encryption``, refuse anything
else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from fcnseg.errors import UserError

_LOOPBACK = ("127.", "localhost", "::1")


def scheme(address: str) -> str:
    """The protocol of a scheduler address (``tcp`` when none is written, as Dask reads it)."""
    return urlsplit(address).scheme if "://" in address else "tcp"


def warn_if_open(address: str, say: Callable[[str], None]) -> None:
    """Plain ``tcp://`` has no authentication: say so when the scheduler is not on loopback."""
    host = urlsplit(address if "://" in address else f"tcp://{address}").hostname or ""
    if scheme(address) == "tcp" and not host.startswith(_LOOPBACK):
        say(
            f"fcnseg: warning: {address} is plain tcp:// (no authentication, no encryption): "
            "use it only on a trusted network, or tls:// with certificates"
        )


def client_security(
    address: str | None, ca_file: str | None, cert: str | None, key: str | None
) -> Any:
    """A ``distributed.Security`` for a ``tls://`` scheduler (encryption required, this
    client's certificate), None for ``tcp://``; a combination that cannot work is one line."""
    given = [name for name, value in (("--tls-ca-file", ca_file), ("--tls-cert", cert),
                                      ("--tls-key", key)) if value]  # fmt: skip
    if address is None or scheme(address) != "tls":
        if given:
            where = f"--scheduler {address}" if address else "--local-workers"
            raise UserError(f"{', '.join(given)}: only for a tls:// scheduler, not {where}")
        return None
    if len(given) != 3:
        raise UserError(
            f"--scheduler {address}: tls:// needs --tls-ca-file, --tls-cert and --tls-key "
            "(the CA that signed the cluster's certificates, this client's certificate and key)"
        )
    from distributed.security import Security

    return Security(
        tls_ca_file=ca_file, tls_client_cert=cert, tls_client_key=key, require_encryption=True
    )
