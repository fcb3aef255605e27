"""Images in and out: decode anything Pillow reads to RGB uint8, write masks/overlays atomically.

Decoding (:func:`load_image`) follows the model card's input convention (RGB, 8 bits per channel,
raw 0..255 values; the net does its own ``/255``):

- EXIF orientation is applied first (a phone photo is segmented the way it is displayed).
- Gray ``L``/``1``, palette ``P``, ``LA``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: Pillow's own
  conversion to RGB (a palette with transparency goes through RGBA, below).
- 16-bit and 32-bit gray (``I;16``, ``I``) and float (``F``): scaled to 0..255 by the type's full
  range (``I;16``: ``v >> 8``; ``I``: 0..65535 clipped, the range PNG 16-bit uses; ``F``: 0..1
  clipped), then replicated to three channels.
- Alpha (``RGBA``, ``LA``, ``PA``, transparent palettes): composited on **black**, i.e. each
  channel times alpha/255. Black is pixel value 0, the same value the canvas is padded with
  (:mod:`fcnseg.host.tiling`) and the value the net's zero padding stands for, so a transparent
  region looks to the net like the outside of the image.
- Decompression bombs: images above ``max_pixels`` (default 2**28 = 268 Mpx, ~800 MB as RGB) are
  refused before decoding, with a :class:`~fcnseg.errors.UserError` naming the file.

Writing: masks are palette PNGs (``P`` mode) with the model's palette (VOC's by default) so the
label value *is* the pixel value; overlays blend the mask colours over the image; raw scores go to
``.npy``. Every write goes to a temporary file in the target folder and is then renamed with
:func:`os.replace`, so a reader never sees a half-written file and an interrupted run leaves no
truncated output. A process killed outright (SIGKILL, power loss) can leave a hidden temporary
``.NAME.*.tmp`` next to an output, never the output itself; :func:`remove_stale_temps` clears them
on the next run.

Large images, in strips (bounded memory)
----------------------------------------
:func:`open_strips` gives a row reader over an image and :func:`png_mask_writer` /
:func:`npy_row_writer` write outputs row by row, so the segmenter can work in bands of tile rows
(:meth:`fcnseg.host.segmenter.Segmenter.stream`). How much of the *input* is held depends on the
format, honestly:

- Binary PPM/PGM (``P6``/``P5``, 8-bit): read row by row from the file (:class:`NetpbmRows`).
- PNG, 8 bits per sample, not interlaced (gray, gray+alpha, RGB, RGBA, palette; what
  cameras, GIS tools and Pillow write): inflated incrementally and unfiltered band by band
  (:class:`PngRows`). Nothing of the image is held beyond a band of rows.
- Everything else (JPEG, TIFF, 16-bit or interlaced PNG, PNG with EXIF, ...): Pillow decodes the
  whole image (its raster is 4 bytes a pixel for RGB: 1.6 GB at 20000x20000); bands are then cut
  from it without another full copy. Pillow has no public API to decode those incrementally, so
  there the bound is the decoded raster, and ``max_pixels`` (the bomb guard) caps it.

Measured (``fcnseg segment --max-pixels 1000000000`` of one generated image, a 256x256-tile
package of stride 2, peak RSS = ``VmHWM`` of the process; the interpreter and imports are
~50 MB of it): 20000x20000 PPM 193 MB, 8-bit PNG 259 MB, JPEG 1724 MB (decoded whole);
6000x6000 PPM 98 MB, PNG 114 MB, JPEG 236 MB; the
same 6000x6000 PNG through the whole-image path (``--overlay``) 1768 MB. Memory grows with the
image *width* (a band is a row of tiles across it), not with its height.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageOps

from fcnseg.atomic import atomic_open
from fcnseg.errors import UserError

#: Largest image accepted (pixels); Pillow's own guard is raised to this, not disabled.
MAX_PIXELS = 2**28
_ORIENTATION = 0x0112  # EXIF tag


def voc_palette(n: int = 256) -> np.ndarray:
    """Pascal VOC's palette ``(n, 3) uint8``: bit ``3k + c`` of a class sets bit ``7 - k`` of ``c``.

    >>> voc_palette(3).tolist()
    [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    """
    index = np.arange(n)
    palette = np.zeros((n, 3), dtype=np.uint8)
    for k in range(8):
        for c in range(3):
            palette[:, c] |= (((index >> (3 * k + c)) & 1) << (7 - k)).astype(np.uint8)
    return palette


def to_rgb(image: Image.Image) -> np.ndarray:
    """Convert a decoded Pillow image to ``(H, W, 3) uint8`` RGB (rules in the module docstring)."""
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint16)
        rgb = rgba[..., :3] * rgba[..., 3:4]
        return ((rgb + 127) // 255).astype(np.uint8)  # rounded, black background
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        gray = (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "I":
        gray = (np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        value = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
        gray = np.round(value * 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def _decode(path: Path, max_pixels: int) -> Image.Image:
    """Open, guard and fully decode ``path``; the upright Pillow image. Errors: UserError."""
    old_limit = Image.MAX_IMAGE_PIXELS
    # Opening parses the header only; the size is checked below, before anything is decoded
    # (Pillow's own check, at open, would name no size). Frames/tiles Pillow sizes later are
    # still capped by its guard at max_pixels.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            # Pillow warns about odd files (TIFF tags past the end, ...): the outcome, an image
            # or one UserError line, is what the user sees, not a multi-line warning.
            warnings.simplefilter("ignore")
            image = Image.open(path)
            Image.MAX_IMAGE_PIXELS = max_pixels
            try:
                width, height = image.size
                if width * height > max_pixels:
                    raise UserError(
                        f"{path}: {width}x{height} pixels is above the limit of {max_pixels} "
                        "(decompression bomb guard)"
                    )
                image.load()
                # exif_transpose copies even an upright image: only call it to rotate
                rotated = image.getexif().get(_ORIENTATION, 1) not in (None, 1)
                upright = ImageOps.exif_transpose(image) if rotated else image
            except BaseException:
                image.close()
                raise
            if upright is not None and upright is not image:
                image.close()
                return upright
            return image
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    except Image.UnidentifiedImageError:
        raise UserError(f"{path}: not an image Pillow can read") from None
    except Image.DecompressionBombError as error:
        raise UserError(f"{path}: {error} (decompression bomb guard)") from None
    except MemoryError:
        raise UserError(f"{path}: out of memory while decoding") from None
    except Exception as error:  # Pillow's plugins raise many kinds on malformed data
        raise UserError(f"{path}: cannot decode ({type(error).__name__}: {error})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit


def load_image(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``path`` to ``(H, W, 3) uint8`` RGB, upright; a bad file raises :class:`UserError`."""
    path = Path(path)
    image = _decode(path, max_pixels)
    try:
        return to_rgb(image)
    except Exception as error:  # a mode to_rgb cannot convert
        reason = f"{type(error).__name__}: {error}"
        raise UserError(f"{path}: cannot convert to RGB ({reason})") from None
    finally:
        image.close()


def as_rgb_array(image: np.ndarray | Image.Image | str | os.PathLike[str]) -> np.ndarray:
    """Accept a uint8 array ``(H, W, 3)`` or ``(H, W)``, a Pillow image or a path; return RGB."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return to_rgb(ImageOps.exif_transpose(image) or image)
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image arrays must be (H, W, 3) or (H, W), got {array.shape}")
    return array


def _palette_bytes(palette: np.ndarray) -> bytes:
    full = np.zeros((256, 3), dtype=np.uint8)
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
    full[: len(palette)] = palette
    return full.tobytes()


def save_mask(path: str | os.PathLike[str], labels: np.ndarray, palette: np.ndarray) -> None:
    """Write ``labels (H, W)`` (< 256 classes) as a palette PNG: pixel value = class index."""
    if labels.ndim != 2 or labels.max(initial=0) > 255:
        raise ValueError(f"masks are (H, W) with labels < 256, got {labels.shape}")
    image = Image.fromarray(labels.astype(np.uint8))  # mode L; putpalette makes it P
    image.putpalette(_palette_bytes(palette))
    with atomic_open(path) as handle:
        image.save(handle, format="PNG")


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    palette: np.ndarray,
    alpha: float = 0.5,
    clear: tuple[int, ...] = (),
) -> np.ndarray:
    """Blend the label colours over ``image``: ``(1 - alpha) * image + alpha * colour``, uint8.

    Pixels labelled with a class in ``clear`` (e.g. VOC's black "background") keep the image.
    """
    colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[labels]
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    out = np.clip(np.round(blend), 0, 255).astype(np.uint8)
    if clear:
        keep = np.isin(labels, clear)
        out[keep] = image[keep]
    return out


def save_overlay(
    path: str | os.PathLike[str],
    image: np.ndarray,
    labels: np.ndarray,
    palette: np.ndarray,
    alpha: float = 0.5,
    clear: tuple[int, ...] = (),
) -> None:
    """Write :func:`overlay` of ``labels`` on ``image``; JPEG (quality 90) if the suffix says so."""
    path = Path(path)
    blended = Image.fromarray(overlay(image, labels, palette, alpha, clear))
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    with atomic_open(path) as handle:
        blended.save(handle, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))


def save_array(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` (no pickle) atomically."""
    with atomic_open(path) as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)


def remove_stale_temps(path: str | os.PathLike[str]) -> int:
    """Delete temporaries :func:`atomic_open` left for ``path`` by a killed run; return how many."""
    path = Path(path)
    removed = 0
    if path.parent.is_dir():
        for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed += 1
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped (``[`` ``*`` ``?`` in user file names)."""
    return "".join(f"[{c}]" if c in "[]*?" else c for c in name)


# ---------------------------------------------------------------------------------------------
# Row-streamed reading and writing (large images; see the module docstring)
# ---------------------------------------------------------------------------------------------


class RowReader(Protocol):
    """Rows of an upright RGB image: ``read(y0, y1) -> (y1 - y0, W, 3) uint8``."""

    height: int
    width: int

    def read(self, y0: int, y1: int) -> np.ndarray:  # pragma: no cover - interface
        ...

    def close(self) -> None:  # pragma: no cover - interface
        ...


class NetpbmRows:
    """Binary PPM (``P6``) / PGM (``P5``) with maxval < 256, read row by row from the file."""

    def __init__(self, path: Path, max_pixels: int | None = None) -> None:
        self.path = path
        self.file = open(path, "rb")  # noqa: SIM115 - closed by close()
        try:
            self.channels, self.width, self.height, self.offset = self._header()
        except BaseException:
            self.file.close()
            raise
        size = os.fstat(self.file.fileno()).st_size
        need = self.offset + self.width * self.height * self.channels
        if size < need:  # a header claiming more than the file holds (truncated, or a bomb)
            self.file.close()
            raise UserError(
                f"{path}: truncated ({self.width}x{self.height} needs {need} bytes, "
                f"the file has {size})"
            )
        if max_pixels and self.width * self.height > max_pixels:
            self.file.close()
            raise UserError(
                f"{path}: {self.width}x{self.height} pixels is above the limit of {max_pixels} "
                "(decompression bomb guard)"
            )

    def _header(self) -> tuple[int, int, int, int]:
        head = self.file.read(512)
        magic = head[:2]
        if magic not in (b"P5", b"P6"):
            raise UserError(f"{self.path}: not a binary PPM/PGM")
        fields: list[int] = []
        i = 2
        while len(fields) < 3:
            while i < len(head) and head[i : i + 1].isspace():
                i += 1
            if head[i : i + 1] == b"#":
                while i < len(head) and head[i : i + 1] not in (b"\n", b"\r"):
                    i += 1
                continue
            j = i
            while j < len(head) and head[j : j + 1].isdigit():
                j += 1
            if j == i or j >= len(head):
                raise UserError(f"{self.path}: malformed PPM/PGM header")
            fields.append(int(head[i:j]))
            i = j
        width, height, maxval = fields
        if width < 1 or height < 1 or not 0 < maxval < 256:
            raise UserError(f"{self.path}: unsupported PPM/PGM ({width}x{height}, max {maxval})")
        return (3 if magic == b"P6" else 1), width, height, i + 1

    def read(self, y0: int, y1: int) -> np.ndarray:
        row = self.width * self.channels
        self.file.seek(self.offset + y0 * row)
        data = self.file.read((y1 - y0) * row)
        if len(data) != (y1 - y0) * row:
            raise UserError(f"{self.path}: truncated at row {y0 + len(data) // row}")
        rows = np.frombuffer(data, dtype=np.uint8).reshape(y1 - y0, self.width, self.channels)
        return rows if self.channels == 3 else np.repeat(rows, 3, axis=2)

    def close(self) -> None:
        self.file.close()


class DecodedRows:
    """Any format Pillow reads: decoded whole (upright), bands converted to RGB on demand."""

    def __init__(self, image: Image.Image) -> None:
        self.image = image
        self.width, self.height = image.size

    def read(self, y0: int, y1: int) -> np.ndarray:
        return to_rgb(self.image.crop((0, y0, self.width, y1)))

    def close(self) -> None:
        self.image.close()


class _NotStreamable(Exception):
    """A PNG this reader does not stream (interlaced, not 8-bit, EXIF): Pillow decodes it."""


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: colour type -> (channels, Pillow mode) of the 8-bit PNGs :class:`PngRows` streams.
_PNG_KINDS = {0: (1, "L"), 2: (3, "RGB"), 3: (1, "P"), 4: (2, "LA"), 6: (4, "RGBA")}


class PngRows:
    """A non-interlaced 8-bit PNG decoded band by band, never whole.

    The compressed stream is inflated incrementally (``zlib``, at most one band of scanlines
    at a time, so a zlib bomb inflates no further than asked). Scanline *filters* (Sub, Up,
    Average, Paeth) chain each row to the one before, which numpy cannot undo fast; Pillow's
    decoder does, so each band is handed to it as a small PNG of its own: the previous row,
    unfiltered (filter byte 0), then the band's filtered rows as they are, with the original
    PLTE/tRNS. The previous row's raw bytes come back from Pillow as the band's last row
    (``tobytes`` of the 8-bit modes L, LA, RGB, RGBA, P is the scanline). Other PNGs
    (16-bit, under 8 bits, interlaced, with EXIF) raise :class:`_NotStreamable`.
    """

    def __init__(self, path: Path, max_pixels: int | None = None) -> None:
        self.path = path
        self.file = open(path, "rb")  # noqa: SIM115 - closed by close()
        try:
            self._header(max_pixels)
        except BaseException:
            self.file.close()
            raise
        self.inflater = zlib.decompressobj()
        self.data = bytearray()  # inflated, not yet used scanlines
        self.idat_left = self.first_idat
        self.prior = bytes(self.rowbytes)  # the row above row 0 is zeros (PNG spec)
        self.next_row = 0
        self.cache = np.zeros((0, self.width, 3), dtype=np.uint8)  # rows [next_row - len, next)

    def _chunk(self) -> tuple[bytes, int]:
        head = self.file.read(8)
        if len(head) != 8:
            raise UserError(f"{self.path}: truncated (PNG chunk header)")
        length, kind = struct.unpack(">I4s", head)
        return kind, length

    def _header(self, max_pixels: int | None) -> None:
        if self.file.read(8) != PNG_SIGNATURE:
            raise _NotStreamable
        kind, length = self._chunk()
        if kind != b"IHDR" or length != 13:
            raise _NotStreamable
        ihdr = self.file.read(17)[:13]
        width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
        if depth != 8 or interlace or colour not in _PNG_KINDS or not width or not height:
            raise _NotStreamable
        if max_pixels and width * height > max_pixels:
            raise UserError(
                f"{self.path}: {width}x{height} pixels is above the limit of {max_pixels} "
                "(decompression bomb guard)"
            )
        self.width, self.height, self.ihdr = width, height, ihdr
        channels, self.mode = _PNG_KINDS[colour]
        self.rowbytes = width * channels
        self.extra = b""  # PLTE and tRNS, copied into every band's PNG
        while True:
            kind, length = self._chunk()
            if kind == b"IDAT":
                self.first_idat = length
                return
            if kind in (b"eXIf", b"IEND"):
                raise _NotStreamable
            body = self.file.read(length + 4)
            if len(body) != length + 4:
                raise UserError(f"{self.path}: truncated ({kind.decode('latin-1')} chunk)")
            if kind in (b"PLTE", b"tRNS"):
                self.extra += _png_chunk(kind, body[:length])

    def _inflate(self, need: int) -> None:
        """Inflate until ``need`` scanline bytes are buffered (or raise: truncated/corrupt)."""
        while len(self.data) < need:
            tail = self.inflater.unconsumed_tail
            if not tail:
                if self.idat_left == 0:
                    self.file.read(4)  # CRC of the finished IDAT
                    kind, length = self._chunk()
                    if kind != b"IDAT":
                        raise UserError(f"{self.path}: truncated (image data ends early)")
                    self.idat_left = length
                tail = self.file.read(min(self.idat_left, 1 << 16))
                if not tail:
                    raise UserError(f"{self.path}: truncated (image data ends early)")
                self.idat_left -= len(tail)
            try:
                self.data += self.inflater.decompress(tail, need - len(self.data))
            except zlib.error as error:
                raise UserError(f"{self.path}: corrupt image data ({error})") from None

    def _band(self, n: int) -> Image.Image:
        """The next ``n`` rows, unfiltered by Pillow, as an image of ``n`` rows."""
        size = n * (self.rowbytes + 1)
        self._inflate(size)
        filtered = bytes(self.data[:size])
        del self.data[:size]
        ihdr = struct.pack(">II", self.width, n + 1) + self.ihdr[8:]
        band_png = (
            PNG_SIGNATURE
            + _png_chunk(b"IHDR", ihdr)
            + self.extra
            + _png_chunk(b"IDAT", zlib.compress(b"\0" + self.prior + filtered, 0))
            + _png_chunk(b"IEND", b"")
        )
        try:
            with Image.open(io.BytesIO(band_png)) as image:
                image.load()
                band = image.crop((0, 1, self.width, n + 1))
        except Exception as error:  # bad filter bytes, palette indices ...
            reason = f"{type(error).__name__}: {error}"
            raise UserError(f"{self.path}: cannot decode ({reason})") from None
        if band.mode != self.mode:  # Pillow and this reader disagree: do not guess
            raise UserError(f"{self.path}: cannot decode (band decoded as {band.mode})")
        self.prior = band.crop((0, n - 1, self.width, n)).tobytes()
        return band

    def read(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)``; rows are decoded forwards, so ``y0`` may go back only into
        rows not yet passed (the segmenter's bands overlap by less than a band)."""
        if y0 < self.next_row - len(self.cache):
            raise ValueError(f"PNG rows are read forwards: {y0} < {self.next_row}")
        if y1 > self.next_row:
            band = to_rgb(self._band(y1 - self.next_row))
            self.cache = np.concatenate([self.cache, band]) if len(self.cache) else band
            self.next_row = y1
        start = self.next_row - len(self.cache)
        out = self.cache[y0 - start : y1 - start]
        self.cache = self.cache[y0 - start :]  # rows before y0 are never asked again
        return out

    def close(self) -> None:
        self.file.close()


def is_netpbm(path: str | os.PathLike[str]) -> bool:
    """True for a binary PPM/PGM (magic ``P5``/``P6``), whatever its suffix."""
    try:
        with open(path, "rb") as f:
            return f.read(2) in (b"P5", b"P6")
    except OSError:
        return False


def open_rows(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS) -> RowReader:
    """A :class:`RowReader` over ``path``: binary PPM/PGM and 8-bit non-interlaced PNG decoded
    band by band (:class:`NetpbmRows`, :class:`PngRows`), others decoded whole by Pillow."""
    path = Path(path)
    if path.is_file() and is_netpbm(path):
        try:
            return NetpbmRows(path, max_pixels)
        except OSError as error:
            raise UserError(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        return PngRows(path, max_pixels)
    except _NotStreamable:
        pass
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory") from None
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror or error})") from None
    image = _decode(path, max_pixels)
    return DecodedRows(image)


def image_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """``(height, width)`` of the upright image from its header only (nothing decoded), or
    None if unreadable. PNG keeps EXIF in an ``eXIf`` chunk Pillow finds only by decoding, so
    for PNG only an ``eXIf`` before the pixels is seen (where the PNG spec wants it)."""
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the header of a huge image is what we want to read
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                width, height = image.size
                if image.format == "PNG":
                    raw = image.info.get("exif")
                    orientation = 1
                    if raw:
                        exif = Image.Exif()
                        exif.load(raw)
                        orientation = exif.get(_ORIENTATION, 1)
                else:
                    orientation = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # unreadable inputs are reported by the normal decoding path
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@contextlib.contextmanager
def png_mask_writer(
    path: str | os.PathLike[str], height: int, width: int, palette: np.ndarray
) -> Iterator[Callable[[np.ndarray], None]]:
    """Write a palette PNG (as :func:`save_mask`) row by row: yields ``write(rows (n, W))``.

    Atomic like every output; exactly ``height`` rows must be written, or nothing is.
    """
    written = 0
    with atomic_open(path) as handle:
        handle.write(b"\x89PNG\r\n\x1a\n")
        handle.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)))
        handle.write(_png_chunk(b"PLTE", _palette_bytes(palette)))
        packer = zlib.compressobj(6)

        def write(rows: np.ndarray) -> None:
            nonlocal written
            rows = np.asarray(rows)
            if rows.ndim != 2 or rows.shape[1] != width or rows.max(initial=0) > 255:
                raise ValueError(f"mask rows must be (n, {width}) labels < 256, got {rows.shape}")
            lines = np.zeros((rows.shape[0], width + 1), dtype=np.uint8)  # filter byte 0: None
            lines[:, 1:] = rows
            data = packer.compress(lines.tobytes())
            if data:
                handle.write(_png_chunk(b"IDAT", data))
            written += rows.shape[0]

        yield write
        if written != height:
            raise ValueError(f"{path}: wrote {written} mask rows of {height}")
        handle.write(_png_chunk(b"IDAT", packer.flush()))
        handle.write(_png_chunk(b"IEND", b""))


@contextlib.contextmanager
def npy_row_writer(
    path: str | os.PathLike[str], shape: tuple[int, ...], dtype: np.dtype | type
) -> Iterator[Callable[[np.ndarray], None]]:
    """Write a ``.npy`` of ``shape`` row block by row block (along axis 0), atomically."""
    dtype = np.dtype(dtype)
    written = 0
    with atomic_open(path) as handle:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
        np.lib.format.write_array_header_1_0(handle, {**header, "shape": tuple(shape)})

        def write(block: np.ndarray) -> None:
            nonlocal written
            block = np.ascontiguousarray(block, dtype=dtype)
            if block.shape[1:] != tuple(shape[1:]):
                raise ValueError(f"rows of shape {block.shape[1:]}, expected {shape[1:]}")
            handle.write(block.tobytes())
            written += block.shape[0]

        yield write
        if written != shape[0]:
            raise ValueError(f"{path}: wrote {written} rows of {shape[0]}")
