"""The ``runtime_weights`` record on the board's Python (3.10, numpy 1.x): written, loaded, refused.

The build-side tests (tests/hw/test_runtime_weights.py) need finn; here the record is made with
numpy only, from the board fixture's package (its MVAU weights, encoded with the layout of
:mod:`fcnseg.hw.runtime_weights`), so the loader's checks run where a package is deployed. The
words written decode back to exactly the package's weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from fcnseg.errors import UserError


def _record(package, folder: Path) -> tuple[dict, dict[str, Path]]:
    from fcnseg.host.dtypes import dtype_bits
    from fcnseg.host.package import canonical_json
    from fcnseg.hw import runtime_weights as rw

    layers, files = [], {}
    mvaus = [layer for layer in package.layers if layer.kind == "MVAU"]
    for index, layer in enumerate(mvaus):
        pe, simd = layer.folding["PE"], layer.folding["SIMD"]
        mw, mh = layer.attributes["MW"], layer.attributes["MH"]
        bits = dtype_bits(layer.attributes["weightDataType"])[0]
        line_bits = pe * simd * bits
        per_line = 1 << rw.clog2(-(-line_bits // 32))
        lines = (mw // simd) * (mh // pe)
        words = lines * per_line
        n = 2 * index + 2  # partitions as finn's Floorplan makes them: one writable layer each
        entry = {
            "index": index,
            "layer": layer.name,
            "node": f"MVAU_rtl_{index}",
            "kind": "MVAU",
            "impl": "rtl",
            "partition": n,
            "instance": f"StreamingDataflowPartition_{n}",
            "interface": "s_axilite_0",
            "file": f"runtime_weights/{n}_0_MVAU_rtl_{index}.dat",
            "word_bits": 32,
            "words": words,
            "words_per_line": per_line,
            "lines": lines,
            "line_bits": line_bits,
            "lane_bits": bits,
            "address_bits": rw.clog2(words) + 2,
            "range_bytes": max(4096, 1 << (rw.clog2(words) + 2)),
            "predicted_offset": 0,
            "dtype": layer.attributes["weightDataType"],
            "shape": [mw, mh],
            "folding": {"PE": pe, "SIMD": simd},
            "order": rw.MVAU_ORDER,
            "narrow_weights": True,
        }
        path = folder / entry["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "".join(f"{w:08x}\n" for w in rw.encode_mvau(layer.arrays["weights"], entry))
        )
        layers.append(entry)
        files[entry["file"]] = path
    fingerprint = {"format": rw.FINGERPRINT_FORMAT, "version": 1, "nodes": []}
    record = {
        "partitions": 2 * len(mvaus) + 2,
        "zynq": "zynq",
        "axi_base": 0x4000_0000,
        "layers": layers,
        "fingerprint": fingerprint,
        "fingerprint_sha256": hashlib.sha256(canonical_json(fingerprint).encode()).hexdigest(),
    }
    return record, files


@pytest.fixture(scope="module")
def runtime_package(package, tmp_path_factory) -> Path:
    from fcnseg.host.package import write_package

    root = tmp_path_factory.mktemp("rw")
    record, files = _record(package, root / "files")
    return write_package(
        root / "pkg",
        model_card=package.card,
        io=package.meta["io"],
        layers=list(package.layers),
        board=package.board,
        extra_files=files,
        runtime_weights=record,
    )


def test_a_runtime_package_loads_and_its_words_are_the_weights(package, runtime_package) -> None:
    from fcnseg.host.package import load_package
    from fcnseg.hw import runtime_weights as rw

    loaded = load_package(runtime_package)
    weights = {
        layer.name: layer.arrays["weights"] for layer in package.layers if layer.kind == "MVAU"
    }
    entries = loaded.meta["runtime_weights"]["layers"]
    assert [e["layer"] for e in entries] == list(weights)
    for entry in entries:
        words = rw.read_dat(runtime_package / entry["file"])
        np.testing.assert_array_equal(rw.decode_mvau(words, entry, True), weights[entry["layer"]])


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda m: m["runtime_weights"].update(fingerprint={"nodes": [1]}), "not the sha256"),
        (lambda m: m["runtime_weights"]["layers"][1].update(partition=2), "is not partition 2's"),
        (lambda m: m["runtime_weights"]["layers"][0].update(lines=1), "words must be lines x"),
    ],
)
def test_a_tampered_record_is_refused(runtime_package, tmp_path, edit, needle) -> None:
    from fcnseg.host.package import load_package
    from tests.helpers.tamper import copy_package, tamper

    copy = copy_package(runtime_package, tmp_path / "copy")
    tamper(copy, json_edit=edit)
    with pytest.raises(UserError, match=needle):
        load_package(copy)
