"""The one-line messages about inputs and input images, each written once.

Every problem with an input file reaches the user as one line, ``PATH: reason``, through a
:class:`~fcnseg.errors.UserError` built here, so the same problem reads the same whether the
whole-image decoder, a row reader or the size probe met it. Inputs that never become images
(a link loop, an unreadable folder: :mod:`fcnseg.host.inputs`) take their reasons from here too;
a frame of a multi-frame file is named ``PATH (frame K)`` (:func:`frame_label`).
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
    # multi-frame files (fcnseg.host.images.frames)
    "frame_count": "cannot count its frames ({reason})",
    "frames_claimed": "claims {count} frames in {size} bytes (corrupt frame count)",
    "too_many_frames": "{count} frames is above the limit of {limit} for --frames all",
    # inputs that never become images (fcnseg.host.inputs)
    "link_loop": "symbolic link loop",
    "link_cycle": "symbolic link loop (to {target}, a folder that contains it)",
    "link_broken": "broken symbolic link (to {target})",
    "no_images": "no images in this folder",
    "no_match": "no such file or folder, and no file matches it",
    "not_a_file": "not a file or folder ({kind})",
}


def image_error(path: str | os.PathLike[str], key: str, **fields: object) -> UserError:
    """The :class:`UserError` ``"PATH: reason"`` for the message ``key`` of :data:`MESSAGES`."""
    return UserError(f"{path}: {MESSAGES[key].format(**fields)}")


def frame_label(path: str | os.PathLike[str], frame: int | None) -> str:
    """How messages name one frame of a multi-frame file (``a.gif (frame 2)``); ``None``: the
    file's first (or only) image, named as the file."""
    return str(path) if frame is None else f"{path} (frame {frame})"


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
