"""A package's generated hardware as one archive: ``hardware.tar.xz``.

The generated hardware (``fcnseg.hw.verify``: one folder per node with finn's HLS C++ or RTL and
a ``graph.json`` wiring them) repeats the same library files in every node folder — finn-plus's
npy glue in each HLS node, finn-rtllib's sliding-window package in each RTL node — so as plain
files it is 1.2 MB for a 39-node test net; as an xz tarball, 46 KB. A package therefore carries
it as ``hardware.tar.xz`` under ``hardware/`` (one sha256 in ``accelerator.json`` like every
file); ``tar -xJf hardware.tar.xz`` shows the sources.

- :func:`pack` writes a *deterministic* archive (sorted names, zero times and owners), so the
  same hardware gives the same bytes and a rebuild does not churn git.
- :func:`read_member` reads one file (``hardware/graph.json``) without extracting.
- :func:`extract` unpacks safely: regular files and folders only, every name inside
  ``hardware/``, sizes bounded — a package is untrusted input.
- :func:`materialize` extracts once into a cache folder named by the archive's sha256 (published
  by one rename), which runners build from.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from fcnseg.errors import UserError

ARCHIVE_NAME = "hardware.tar.xz"
#: the folder every member lives in
ROOT = "hardware"
#: extraction bounds (the shipped FCN-8s hardware is ~5 MB unpacked)
MAX_MEMBERS = 20_000
MAX_BYTES = 512 * 1024 * 1024


def pack(folder: str | os.PathLike) -> bytes:
    """``folder``'s files as a deterministic ``hardware/``-rooted tar.xz."""
    root = Path(folder)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            info = tarfile.TarInfo(f"{ROOT}/{path.relative_to(root).as_posix()}")
            info.size = path.stat().st_size
            info.mode = 0o644
            info.mtime = 0
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()


def _open(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, mode="r:xz")
    except (OSError, tarfile.TarError, EOFError, lzma.LZMAError) as exc:
        raise UserError(f"{archive}: not a readable tar.xz ({type(exc).__name__})") from None


def _checked_name(name: str, archive: Path) -> PurePosixPath:
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or rel.parts[0] != ROOT:
        raise UserError(f"{archive}: member {name!r} is outside {ROOT}/")
    return rel


def read_member(archive: str | os.PathLike, name: str) -> bytes | None:
    """The bytes of ``name`` (e.g. ``hardware/graph.json``) in the archive, or None."""
    archive = Path(archive)
    try:
        with _open(archive) as tar:
            try:
                member = tar.getmember(name)
            except KeyError:
                return None
            if not member.isfile():
                raise UserError(f"{archive}: {name} is not a regular file")
            handle = tar.extractfile(member)
            return handle.read() if handle else None
    except (OSError, tarfile.TarError, EOFError, lzma.LZMAError) as exc:
        raise UserError(f"{archive}: damaged ({type(exc).__name__})") from None


def extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack into ``dest`` (created) and return ``dest/hardware``; refuses links, devices,
    names outside ``hardware/`` and archives over the bounds, with one line."""
    archive, dest = Path(archive), Path(dest)
    total = 0
    try:
        with _open(archive) as tar:
            members = tar.getmembers()
            if len(members) > MAX_MEMBERS:
                raise UserError(f"{archive}: {len(members)} members (at most {MAX_MEMBERS})")
            for member in members:
                rel = _checked_name(member.name, archive)
                if member.isdir():
                    (dest / rel).mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isfile():
                    raise UserError(f"{archive}: {member.name} is not a regular file")
                total += member.size
                if total > MAX_BYTES:
                    raise UserError(f"{archive}: unpacks to more than {MAX_BYTES >> 20} MiB")
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                handle = tar.extractfile(member)
                with target.open("wb") as out:
                    shutil.copyfileobj(handle, out)  # type: ignore[arg-type]
    except (OSError, tarfile.TarError, EOFError, lzma.LZMAError) as exc:
        raise UserError(f"{archive}: damaged ({type(exc).__name__}: {exc})") from None
    return dest / ROOT


def default_cache() -> Path:
    """``$FCNSEG_HARDWARE_CACHE`` or ``~/.cache/fcnseg/hardware``."""
    env = os.environ.get("FCNSEG_HARDWARE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fcnseg" / "hardware"


def materialize(archive: str | os.PathLike, cache: Path | None = None) -> Path:
    """The archive unpacked under ``<cache>/<sha256>/hardware`` (unpacked once; the folder is
    published by a rename, so concurrent callers never see half of it)."""
    archive = Path(archive)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    root = (cache or default_cache()).expanduser()
    final = root / digest
    if (final / ROOT).is_dir():
        return final / ROOT
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}.", dir=root))
    try:
        extract(archive, work)
        try:
            os.rename(work, final)
        except OSError:  # another process published it first
            if not (final / ROOT).is_dir():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final / ROOT


def package_hardware(package, cache: Path | None = None) -> Path:
    """The unpacked ``hardware/`` folder of a loaded :class:`~fcnseg.host.package.Package`
    (:func:`materialize`); a one-line error when the package carries none."""
    if package.hardware is None:
        raise UserError(
            f"{package.path}: the package carries no generated hardware ({ARCHIVE_NAME}); "
            "rebuild it with `fcnseg compile` (which generates it) or run on the simulator"
        )
    return materialize(package.file(ARCHIVE_NAME), cache)
