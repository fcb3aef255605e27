"""The one-line messages about input images, each written once.

Every problem with an input file reaches the user as one line, ``PATH: reason``, through a
:class:`~fcnseg.errors.UserError` built here, so the same problem reads the same whether the
whole-image decoder, a row reader or the size probe met it.
"""

from __future__ import annotations

import os

from fcnseg.errors import UserError

#: key -> reason (a ``str.format`` template); the path is prefixed by :func:`image_error`.
MESSAGES: dict[str, str] = {
    "missing": "no such file",
    "directory": "is a directory",
    "permission": "permission denied",
    "unreadable": "cannot read ({reason})",
    "unidentified": "not an image Pillow can read",
    "too_big": "{width}x{height} pixels is above the limit of {limit} (decompression bomb guard)",
    "pillow_bomb": "{reason} (decompression bomb guard)",
    "memory": "out of memory while decoding",
    "undecodable": "cannot decode ({reason})",
    "unconvertible": "cannot convert to RGB ({reason})",
    "truncated": "truncated ({what})",
    "corrupt": "corrupt image data ({reason})",
    "not_netpbm": "not a binary PPM/PGM",
    "netpbm_header": "malformed PPM/PGM header",
    "netpbm_kind": "unsupported PPM/PGM ({width}x{height}, max {maxval})",
}


def image_error(path: str | os.PathLike[str], key: str, **fields: object) -> UserError:
    """The :class:`UserError` ``"PATH: reason"`` for the message ``key`` of :data:`MESSAGES`."""
    return UserError(f"{path}: {MESSAGES[key].format(**fields)}")


def reason(error: BaseException) -> str:
    """``"Type: message"`` of an exception from a library, for the ``{reason}`` fields."""
    return f"{type(error).__name__}: {error}"


def os_error(path: str | os.PathLike[str], error: OSError) -> UserError:
    """An error opening or reading ``path``, in the words of :data:`MESSAGES`."""
    if isinstance(error, FileNotFoundError):
        return image_error(path, "missing")
    if isinstance(error, IsADirectoryError):
        return image_error(path, "directory")
    if isinstance(error, PermissionError):
        return image_error(path, "permission")
    return image_error(path, "unreadable", reason=error.strerror or error)
