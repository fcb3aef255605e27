"""Where the hardware libraries the generated nodes compile against are, and which versions.

Every verification records the libraries it used (:class:`Library`), because a node proven
against one finn-hlslib is not proven against another. Three are looked up:

- :func:`finn_hlslib`: the HLS C++ layer library finn's generated HLS code includes. finn-plus
  1.6.1 pins one commit in ``finn/interface/external_dependencies.yaml``; ``finn deps update``
  clones it into finn's deps folder (``get_settings().finn_deps``). Search order:
  ``$FCNSEG_FINN_HLSLIB``, finn's deps folder (``pinned`` when its git HEAD is the pinned
  commit), then the offline copy at ``$FCNSEG_VENDOR/finn-hlslib`` or
  ``<repo>/../shared/vendor/finn-hlslib`` (never pinned: a snapshot plus an overlay).
- :func:`ap_int_headers`: the ``ap_int.h`` family: ``$XILINX_HLS/include`` (Vitis), then
  ``$FCNSEG_AP_INT``, then the vendored open-source HLS_arbitrary_Precision_Types.
- :func:`finn_rtllib`: finn-plus's own ``finn-rtllib`` (it ships in the wheel: its version is
  finn-plus's).

Missing libraries raise a one-line :class:`~fcnseg.errors.UserError` saying how to get them.
Nothing here needs finn; finn's deps folder is only looked for when finn-plus is installed.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fcnseg.errors import UserError

#: what finn-plus 1.6.1 pins (``external_dependencies.yaml``); read from finn when installed.
PINNED_FINN_HLSLIB = "8d979e2bdced486dd25d26607d1ff5ae327ed6a8"
VENDOR_ENV = "FCNSEG_VENDOR"
HLSLIB_ENV = "FCNSEG_FINN_HLSLIB"
AP_INT_ENV = "FCNSEG_AP_INT"
HLSLIB_HINT = (
    f"run `finn deps update` on a machine with network, or set {HLSLIB_ENV} to a finn-hlslib "
    f"checkout or {VENDOR_ENV} to the vendor folder"
)
AP_INT_HINT = (
    f"set XILINX_HLS (Vitis), {AP_INT_ENV} to HLS_arbitrary_Precision_Types/include, or "
    f"{VENDOR_ENV} to the vendor folder"
)
_HEADER_SUFFIXES = (".h", ".hpp", ".hh", ".inc", ".def")


@dataclass(frozen=True)
class Library:
    """One library: its folder, a version string, whether it is the one finn-plus pins, and how
    it was found (``origin``: the environment variable or place)."""

    name: str
    path: Path
    version: str
    pinned: bool
    origin: str

    def headers_digest(self) -> str:
        """SHA-256 over the relative names and bytes of every header below :attr:`path` (part of
        every build cache key: a changed library is a different build)."""
        return _headers_digest(self.path)


@functools.cache
def _headers_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _HEADER_SUFFIXES):
        digest.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()


def repo_root() -> Path | None:
    """The checkout holding fcnseg: the first folder above the package with a pyproject.toml."""
    import fcnseg

    for parent in Path(fcnseg.__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return None


def vendor_dir() -> Path | None:
    """``$FCNSEG_VENDOR``, else ``<repo>/../shared/vendor`` if it exists."""
    env = os.environ.get(VENDOR_ENV)
    if env:
        return Path(env)
    root = repo_root()
    if root is not None and (root.parent / "shared" / "vendor").is_dir():
        return root.parent / "shared" / "vendor"
    return None


def _git_head(path: Path) -> str | None:
    """The commit a checkout is at; None unless ``path`` is the top of its own git checkout (a
    folder merely inside some other repository has no version of its own)."""
    if not (path / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    head = out.stdout.strip()
    return head if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", head) else None


def pinned_finn_hlslib() -> str:
    """The finn-hlslib commit finn-plus pins (its ``external_dependencies.yaml``), or ours."""
    spec = importlib.util.find_spec("finn")
    if spec is None or spec.origin is None:
        return PINNED_FINN_HLSLIB
    deps = Path(spec.origin).parent / "interface" / "external_dependencies.yaml"
    match = re.search(
        r"finn-hlslib:\s*\n(?:\s+\w+:.*\n)*?\s+commit:\s*\"?([0-9a-f]{40})",
        deps.read_text() if deps.is_file() else "",
    )
    return match.group(1) if match else PINNED_FINN_HLSLIB


def finn_deps_dir() -> Path | None:
    """finn's dependency folder (``get_settings().finn_deps``) when finn-plus is installed."""
    if importlib.util.find_spec("finn") is None:
        return None
    from finn.interface.settings import FINNSettings
    from finn.util.exception import FINNUserError
    from finn.util.settings import get_settings

    try:
        return Path(get_settings().finn_deps)
    except FINNUserError:  # settings not booted: the same defaults finn would use
        settings = FINNSettings.init(
            flow_config=Path("dummy.yaml"), auto_set_environment_vars=False
        )
        return Path(settings.finn_deps)


def _vendored_version(path: Path) -> str:
    """The version line of a vendored finn-hlslib, from its PROVENANCE.md where it says."""
    text = (path / "PROVENANCE.md").read_text() if (path / "PROVENANCE.md").is_file() else ""
    match = re.search(r"finn-hlslib ([0-9a-f]{7})[0-9a-f]*", text)
    base = match.group(1) if match else "unknown"
    pinned = pinned_finn_hlslib()[:7]
    return f"{base}+overlay (vendored, not the pinned {pinned})"


def _is_hlslib(path: Path) -> bool:
    return (path / "bnn-library.h").is_file()


def finn_hlslib() -> Library:
    """The finn-hlslib to compile against (search order in the module docstring)."""
    pinned = pinned_finn_hlslib()
    env = os.environ.get(HLSLIB_ENV)
    if env:
        path = Path(env)
        if not _is_hlslib(path):
            raise UserError(f"{HLSLIB_ENV}={env} holds no finn-hlslib (no bnn-library.h)")
        head = _git_head(path)
        version = head or (_vendored_version(path) if (path / "PROVENANCE.md").is_file() else "")
        return Library("finn-hlslib", path, version or "unknown", head == pinned, HLSLIB_ENV)
    deps = finn_deps_dir()
    if deps is not None and _is_hlslib(deps / "finn-hlslib"):
        path = deps / "finn-hlslib"
        head = _git_head(path)
        return Library("finn-hlslib", path, head or "unknown", head == pinned, "finn deps")
    vendor = vendor_dir()
    if vendor is not None and _is_hlslib(vendor / "finn-hlslib"):
        path = vendor / "finn-hlslib"
        origin = VENDOR_ENV if os.environ.get(VENDOR_ENV) else "vendor"
        return Library("finn-hlslib", path, _vendored_version(path), False, origin)
    raise UserError(f"finn-hlslib is missing: {HLSLIB_HINT}")


def ap_int_headers() -> Library:
    """The ``ap_int.h`` headers: Vitis's, ``$FCNSEG_AP_INT``, or the vendored open-source ones."""
    vitis = os.environ.get("XILINX_HLS")
    if vitis and (Path(vitis) / "include" / "ap_int.h").is_file():
        path = Path(vitis) / "include"
        return Library("ap_int", path, f"Vitis HLS ({Path(vitis).name})", True, "XILINX_HLS")
    env = os.environ.get(AP_INT_ENV)
    if env:
        if not (Path(env) / "ap_int.h").is_file():
            raise UserError(f"{AP_INT_ENV}={env} has no ap_int.h: {AP_INT_HINT}")
        head = _git_head(Path(env))
        return Library("ap_int", Path(env), head or "unknown", False, AP_INT_ENV)
    vendor = vendor_dir()
    if vendor is not None:
        path = vendor / "HLS_arbitrary_Precision_Types" / "include"
        if (path / "ap_int.h").is_file():
            origin = VENDOR_ENV if os.environ.get(VENDOR_ENV) else "vendor"
            readme = vendor / "README.md"
            match = re.search(
                r"`HLS_arbitrary_Precision_Types/`[^|]*\|[^|]*\|\s*([0-9a-f]{7,40})",
                readme.read_text() if readme.is_file() else "",
            )
            commit = match.group(1) if match else "unknown"
            version = f"HLS_arbitrary_Precision_Types {commit} (vendored)"
            return Library("ap_int", path, version, False, origin)
    raise UserError(f"the ap_int.h headers are missing: {AP_INT_HINT}")


def finn_rtllib() -> Library:
    """finn-plus's ``finn-rtllib`` (shipped in the finn-plus wheel; needs finn-plus)."""
    spec = importlib.util.find_spec("finn")
    if spec is None or spec.origin is None:
        raise UserError(
            "finn-rtllib comes with finn-plus: `pip install --no-deps finn-plus==1.6.1`"
        )
    path = Path(spec.origin).parent / "finn-rtllib"
    if not path.is_dir():
        raise UserError(f"finn-plus at {path.parent} has no finn-rtllib folder: reinstall it")
    version = f"finn-plus {importlib.metadata.version('finn-plus')}"
    return Library("finn-rtllib", path, version, True, "finn-plus")
