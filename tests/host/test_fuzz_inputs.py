"""Issue 9, item 5: property tests (hypothesis) over the image decoding path and the package loader.

Any byte string, random or a mutated valid file, must give a mask (decoded, then segmented) or
a clean :class:`~fcnseg.errors.UserError`; never another exception, never a hang (each example
has a deadline). Package files are mutated, then either left damaged (the sha256 check refuses
them) or re-hashed, so the JSON and npz parsers themselves see the damage.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fcnseg.errors import UserError
from fcnseg.host.images import load_image, open_rows
from fcnseg.host.package import (
    JSON_NAME,
    MANIFEST_KEY,
    NPZ_NAME,
    load_package,
    manifest_digest,
    sha256_file,
)
from fcnseg.host.segmenter import Segmenter
from tests.helpers.images import image
from tests.helpers.packages import tiny_package

# Damaged files make Pillow warn (e.g. "Truncated File Read") on the way to the outcome these
# tests check; the library leaves warnings to the application (fcnseg.host.images.decode).
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FUZZ = settings(
    max_examples=150,
    deadline=2000,  # ms per example: a hang or a runaway decode fails the test
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same examples every run (CI must be reproducible)
)


def _encoded(fmt: str) -> bytes:
    rgb = image(23, 31, seed=1)
    buf = io.BytesIO()
    if fmt == "PPM":
        buf.write(b"P6\n31 23\n255\n" + rgb.tobytes())
    elif fmt == "PNG-P":
        Image.fromarray(rgb).convert("P").save(buf, format="PNG")
    else:
        Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


SEEDS = {
    fmt: _encoded(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "PNG-P")
}


@st.composite
def mutated(draw: st.DrawFn, seeds: dict[str, bytes]) -> bytes:
    """A valid file with a few byte flips, a truncation, or an inserted run of bytes."""
    data = bytearray(seeds[draw(st.sampled_from(sorted(seeds)))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "header"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:  # damage the header, where sizes and modes live
            at = draw(st.integers(0, min(len(data), 48) - 1))
            data[at] = draw(st.integers(0, 255))
    return bytes(data)


@pytest.fixture(scope="module")
def seg(tmp_path_factory: pytest.TempPathFactory) -> Segmenter:
    return Segmenter.load(tiny_package(tmp_path_factory.mktemp("pkg") / "tiny-pynq-z2"))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _mask_or_user_error(data: bytes, path: Path, seg: Segmenter) -> None:
    path.write_bytes(data)
    try:
        rgb = load_image(path, max_pixels=1 << 22)
    except UserError as error:
        assert str(path) in str(error) and "\n" not in str(error)
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    if rgb.shape[0] * rgb.shape[1] <= 1 << 14:  # big decodes are decoding, not segmenting, tests
        labels = seg(rgb)
        assert labels.shape == rgb.shape[:2]


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes_decode_or_user_error(data: bytes, seg, scratch) -> None:
    _mask_or_user_error(data, scratch / "random.jpg", seg)


@FUZZ
@given(data=mutated(SEEDS))
def test_mutated_images_decode_or_user_error(data: bytes, seg, scratch) -> None:
    _mask_or_user_error(data, scratch / "mutated.png", seg)


@FUZZ
@given(data=mutated({k: SEEDS[k] for k in ("PPM", "PNG", "PNG-P")}))
def test_mutated_row_readers_or_user_error(data: bytes, scratch) -> None:
    """The strip readers (PPM/PGM from disk, PNG band by band) on damaged files."""
    path = scratch / "mutated-rows"
    path.write_bytes(data)
    try:
        rows = open_rows(path, max_pixels=1 << 22)
    except UserError:
        return
    try:
        for y0 in range(0, rows.height, 7):
            band = rows.read(y0, min(rows.height, y0 + 9))
            assert band.shape[1:] == (rows.width, 3) and band.dtype == np.uint8
    except UserError as error:
        assert str(path) in str(error) and "\n" not in str(error)
    finally:
        rows.close()


# --- the package loader ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_package(tmp_path_factory.mktemp("pkg") / "tiny-pynq-z2")


def _rehash(folder: Path) -> None:
    meta_path = folder / JSON_NAME
    meta = json.loads(meta_path.read_text())
    if isinstance(meta, dict) and isinstance(meta.get("files"), dict):
        meta["files"] = {
            rel: sha256_file(folder / rel) if (folder / rel).is_file() else digest
            for rel, digest in meta["files"].items()
        }
        meta[MANIFEST_KEY] = manifest_digest(meta)  # a consistent forger: the checks behind it
        meta_path.write_text(json.dumps(meta))


def _load_or_user_error(folder: Path) -> None:
    try:
        pkg = load_package(folder)
    except UserError as error:
        assert "\n" not in str(error)
        return
    assert pkg.layers and pkg.num_classes >= 1


def _copy(package_dir: Path) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="fuzz-pkg-"))
    shutil.rmtree(folder)
    shutil.copytree(package_dir, folder)
    return folder


@FUZZ
@given(data=st.data(), rehash=st.booleans())
def test_mutated_npz(data: st.DataObject, rehash: bool, package_dir: Path) -> None:
    folder = _copy(package_dir)
    try:
        npz = folder / NPZ_NAME
        npz.write_bytes(data.draw(mutated({"npz": npz.read_bytes()})))
        if rehash:
            _rehash(folder)
        _load_or_user_error(folder)
    finally:
        shutil.rmtree(folder)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)


def _paths(obj: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path inside a JSON document."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


@FUZZ
@given(data=st.data())
def test_mutated_accelerator_json(data: st.DataObject, package_dir: Path) -> None:
    """A value anywhere in accelerator.json replaced or deleted (files re-hashed), or the text
    itself damaged."""
    folder = _copy(package_dir)
    try:
        path = folder / JSON_NAME
        meta = json.loads(path.read_text())
        if data.draw(st.booleans()):
            where = data.draw(st.sampled_from(_paths(meta)[1:]))
            parent = meta
            for key in where[:-1]:
                parent = parent[key]
            if data.draw(st.booleans()) and isinstance(parent, dict):
                del parent[where[-1]]
            else:
                parent[where[-1]] = data.draw(JSON_VALUES)
            if data.draw(st.booleans()):  # re-signed, to reach the checks behind the digest
                meta[MANIFEST_KEY] = manifest_digest(meta)
            path.write_text(json.dumps(meta))
        else:
            path.write_bytes(data.draw(mutated({"json": path.read_bytes()})))
        _load_or_user_error(folder)
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize("files", [5, ["accelerator.npz"], {"accelerator.npz": 3}, None])
def test_files_entry_of_the_wrong_type(package_dir: Path, files: object) -> None:
    """Shapes of ``files`` the random replacement rarely hits, checked one by one."""
    folder = _copy(package_dir)
    try:
        meta = json.loads((folder / JSON_NAME).read_text())
        meta["files"] = files
        (folder / JSON_NAME).write_text(json.dumps(meta))
        with pytest.raises(UserError):
            load_package(folder)
    finally:
        shutil.rmtree(folder)
