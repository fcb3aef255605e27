"""Runtime-writable weights on the board's Python (3.10, numpy 1.x): the record, and the board.

The record: made with numpy only from the board fixture's package (its MVAU weights encoded with
the layout of :mod:`fcnseg.hw.runtime_weights`), written, loaded and refused where a package is
deployed; the words decode back to exactly the package's weights.

The board (real pynq + finn-plus-driver against :mod:`fcnseg.testing.emulated_zynq`, whose
writable memories start with the bitfile's words): ``tests/board/data/fcn32s-rw`` (made by
``tests/board/data/make_runtime_fixture.py``) holds a tiny runtime-weights FCN-32s (``old``),
its swap onto a retrained checkpoint (``swapped``) and float64 Brevitas of that checkpoint
(``reference.npz``). The old package is emulated (its weights are the stand-in bitfile's);
the swapped one gets that bitfile/ and driver/settings.json, as swap-weights keeps them. The
swapped package on the board == its simulator == Brevitas, byte for byte; without the writes,
and for the first tile after a write without a flush, the old bitfile's weights decide; a
hand-made partition with two writable layers shows finn-plus-driver's offset-0 writes wrong and
ours right; a read-back mismatch is one line, exit 2.
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
        # the only writable layer of its partition is on the partition's first interface
        (
            lambda m: m["runtime_weights"]["layers"][1].update(interface="s_axilite_1"),
            "'s_axilite_1' is not s_axilite_0",
        ),
    ],
)
def test_a_tampered_record_is_refused(runtime_package, tmp_path, edit, needle) -> None:
    from fcnseg.host.package import load_package
    from tests.helpers.tamper import copy_package, tamper

    copy = copy_package(runtime_package, tmp_path / "copy")
    tamper(copy, json_edit=edit)
    with pytest.raises(UserError, match=needle):
        load_package(copy)


# --------------------------------------------------------------------------- on the board

RW = Path(__file__).parent / "data" / "fcn32s-rw"


def _with_bitfile(package_dir: Path, board_dir: Path, out: Path) -> Path:
    """A copy of ``package_dir`` carrying ``board_dir``'s bitfile/ and driver/settings.json
    (what swap-weights keeps of the package it swaps onto)."""
    import shutil

    from fcnseg.host.package import add_package_files

    shutil.copytree(package_dir, out)
    shared = [
        "driver/settings.json",
        *(f"bitfile/{p.name}" for p in (board_dir / "bitfile").iterdir()),
    ]
    add_package_files(out, {rel: (board_dir / rel).read_bytes() for rel in shared})
    return out


def _two_layers_in_one_partition(package_dir: Path, out: Path) -> Path:
    """``package_dir`` re-floorplanned by hand: its second writable layer moved into the first
    one's partition, as that partition's second AXI-lite interface (``s_axilite_1``, file
    ``<n>_1_<node>.dat``) at the next 4 KiB of the window. finn's Floorplan never does this."""
    import copy

    from fcnseg.host.package import HW_GRAPH_NAME, load_package, write_package

    package = load_package(package_dir)
    record = copy.deepcopy(package.meta["runtime_weights"])
    first, second = record["layers"][:2]
    old_file = second["file"]
    n = first["partition"]
    second.update(
        partition=n,
        instance=f"StreamingDataflowPartition_{n}",
        interface="s_axilite_1",
        file=f"runtime_weights/{n}_1_{second['node']}.dat",
        predicted_offset=first["predicted_offset"] + first["range_bytes"],
    )
    files = {e["file"]: package.file(e["file"]) for e in record["layers"]}
    files[second["file"]] = package.file(old_file)
    return write_package(
        out,
        model_card=package.model_card,
        io=package.meta["io"],
        layers=list(package.layers),
        estimates=package.estimates,
        board=package.board,
        hw_graph=package.file(HW_GRAPH_NAME).read_bytes(),
        extra_files=files,
        runtime_weights=record,
    )


@pytest.fixture(scope="module")
def rw(tmp_path_factory) -> dict:
    """The fixture's packages: ``old`` and ``swapped`` (loaded), their emulated boards
    (``old_board``: the old bitfile; ``swapped_board``: the swapped package on it), the same
    pair re-floorplanned with two writable layers in one partition (``two_*``), and the
    reference pixels and Brevitas scores."""
    pytest.importorskip("pynq")
    from fcnseg.host.package import load_package
    from fcnseg.testing import emulated_zynq as ez

    root = tmp_path_factory.mktemp("rw-board")
    old, swapped = load_package(RW / "old"), load_package(RW / "swapped")
    old_board = ez.emulated_package(old, root / "old-board")
    two_old = _two_layers_in_one_partition(RW / "old", root / "two-old")
    two_swapped = _two_layers_in_one_partition(RW / "swapped", root / "two-swapped")
    two_old_board = ez.emulated_package(load_package(two_old), root / "two-old-board")
    ref = np.load(RW / "reference.npz", allow_pickle=False)
    return {
        "old": old,
        "swapped": swapped,
        "old_board": load_package(old_board),
        "swapped_board": load_package(
            _with_bitfile(RW / "swapped", old_board, root / "swapped-board")
        ),
        "two_old": load_package(two_old),
        "two_swapped_board": load_package(
            _with_bitfile(two_swapped, two_old_board, root / "two-swapped-board")
        ),
        "pixels": ref["pixels"],
        "scores": ref["scores"],
    }


def _sim(package, pixels: np.ndarray) -> np.ndarray:
    from fcnseg.host.sim.engine import SimEngine

    return SimEngine(package).run(pixels)


@pytest.mark.parametrize("transport", ["builtin", "finn"])
def test_a_swapped_package_on_the_old_bitfile_computes_the_new_checkpoint_exactly(
    rw, transport
) -> None:
    from fcnseg.host.backends.pynq import open_engine
    from fcnseg.testing import emulated_zynq as ez

    board = rw["swapped_board"]
    assert (board.path / "bitfile").is_dir()
    for rel in board.meta["files"]:
        if rel.startswith("bitfile/"):  # the old package's bitfile, byte for byte
            assert (board.path / rel).read_bytes() == rw["old_board"].file(rel).read_bytes()
    pixels, brevitas = rw["pixels"], rw["scores"]
    with ez.EmulatedZynq(ez.sim_accelerator(rw["old"])) as dev:  # the fabric: the old bitfile
        engine = open_engine(board, transport=transport)
        scores = engine.run(pixels)
        assert dev.faults == []
    np.testing.assert_array_equal(scores, brevitas)
    np.testing.assert_array_equal(_sim(rw["swapped"], pixels), brevitas)
    record = board.meta["runtime_weights"]
    load = engine.weight_load
    assert load.layers == len(record["layers"]) == 15
    assert load.words == sum(e["words"] for e in record["layers"])
    assert load.write_ms > 0 and load.flush_ms > 0
    # the old bitfile computes something else: the equality above could fail
    assert not np.array_equal(_sim(rw["old"], pixels), brevitas)


def test_the_old_weights_decide_until_written_and_flushed(rw, monkeypatch) -> None:
    from fcnseg.host.backends.pynq import PynqEngine, open_engine
    from fcnseg.testing import emulated_zynq as ez

    pixels, brevitas = rw["pixels"], rw["scores"]
    old_scores = _sim(rw["old"], pixels)
    differs = [i for i in range(len(pixels)) if not np.array_equal(old_scores[i], brevitas[i])]
    assert len(differs) >= 2
    a, b = differs[:2]
    real_load = PynqEngine.load_runtime_weights
    with ez.EmulatedZynq(ez.sim_accelerator(rw["old"])) as dev:
        monkeypatch.setattr(PynqEngine, "load_runtime_weights", lambda self, flush=True: None)
        engine = open_engine(rw["swapped_board"], transport="builtin")
        monkeypatch.undo()
        # nothing written: the bitfile's weights
        np.testing.assert_array_equal(engine.run(pixels), old_scores)
        load = real_load(engine, flush=False)  # written and read back, not flushed
        assert load.flush_ms < 0.5 and dev.faults == []
        scores = engine.run(pixels[[a, b]])
        # the first tile after the write still streams the prefetched (old) weights ...
        np.testing.assert_array_equal(scores[0], old_scores[a])
        # ... the next one computes with the memories
        np.testing.assert_array_equal(scores[1], brevitas[b])
        np.testing.assert_array_equal(engine.run(pixels), brevitas)


def test_two_writable_layers_in_one_partition_need_our_offsets(rw) -> None:
    """finn-plus-driver 1.6.1's own ``load_runtime_weights`` writes every ``.dat`` at offset 0
    of its partition: the second layer lands on the first one's memory. Our writes put it at
    its offset and the board computes the new checkpoint."""
    from fcnseg.host.backends.pynq import open_engine, partition_offsets
    from fcnseg.testing import emulated_zynq as ez

    board = rw["two_swapped_board"]
    record = board.meta["runtime_weights"]
    first, second = record["layers"][:2]
    assert first["instance"] == second["instance"]
    assert partition_offsets(record)[second["layer"]] == 4096
    pixels, brevitas = rw["pixels"], rw["scores"]
    with ez.EmulatedZynq(ez.sim_accelerator(rw["two_old"])) as dev:
        engine = open_engine(board, transport="finn")
        assert dev.faults == []
        np.testing.assert_array_equal(engine.run(pixels), brevitas)
        # the driver's way: every file of the partition at offset 0 (then its flush run)
        engine.overlay.runtime_weight_dir = str(board.path / "runtime_weights")
        engine.overlay.runtime_weights_expected = True
        engine.overlay.load_runtime_weights(flush_accel=True, verify=False)
        assert any(f.startswith(f"{first['instance']} +0x") for f in dev.faults), dev.faults
        with pytest.raises(UserError, match=rf"layer {first['layer']} does not read back"):
            engine.verify_runtime_weights()
        assert not np.array_equal(engine.run(pixels), brevitas)
        # ours again: right
        engine.load_runtime_weights()
        np.testing.assert_array_equal(engine.run(pixels), brevitas)


def test_a_write_the_board_loses_is_one_line_exit_2(rw, capsys, tmp_path) -> None:
    from PIL import Image

    from fcnseg.host.backends.pynq import read_words
    from fcnseg.testing import emulated_zynq as ez
    from tests.helpers.tamper import segment_refuses

    board = rw["swapped_board"]
    entry = board.meta["runtime_weights"]["layers"][3]
    new, old = (read_words(p.file(entry["file"])) for p in (board, rw["old"]))
    k = int(np.flatnonzero(new != old)[0])  # a word the swap changes: a lost write shows
    photo = tmp_path / "tile.png"
    Image.fromarray(rw["pixels"][0]).save(photo)
    with ez.EmulatedZynq(ez.sim_accelerator(rw["old"])) as dev:
        dev.drop_writes.add((entry["instance"], 4 * k))
        line = segment_refuses(
            [str(photo), "--package", str(board.path), "--backend", "pynq"],
            capsys,
            tmp_path / "out",
            f"writable layer {entry['layer']} does not read back",
            f"{entry['instance']} +0x{4 * k:X}: word {k} written 0x{int(new[k]):08X}, "
            f"read 0x{int(old[k]):08X}",
        )
    assert "Traceback" not in line


def test_the_emulated_memories_store_what_the_hardware_stores(rw) -> None:
    """A memstream line is stored when its last used word arrives; padding words and bits
    beyond a memory's width are not stored (and are faults); so is a write past every layer."""
    from pynq import MMIO, Overlay

    from fcnseg.host.backends.pynq import read_words
    from fcnseg.testing import emulated_zynq as ez

    board = rw["old_board"]
    mvau = board.meta["runtime_weights"]["layers"][0]
    thr = board.meta["runtime_weights"]["layers"][1]
    assert (mvau["words_per_line"], -(-mvau["line_bits"] // 32)) == (8, 7)  # 7 used + 1 pad
    bit = next(p for p in board.file("bitfile").iterdir() if p.suffix == ".bit")
    with ez.EmulatedZynq(ez.sim_accelerator(rw["old"])) as dev:
        overlay = Overlay(str(bit), download=True)

        def window(entry):
            ip = overlay.ip_dict[entry["instance"]]
            return MMIO(ip["phys_addr"], ip["addr_range"])

        m, t = window(mvau), window(thr)
        before = np.array(m.array[:8])
        np.testing.assert_array_equal(before, read_words(board.file(mvau["file"]))[:8])
        for j in range(6):  # latched, not stored
            m.write(4 * j, 0x1234_5678 + j)
        np.testing.assert_array_equal(np.array(m.array[:8]), before)
        m.write(4 * 6, 0xAB)  # the line's last used word: the whole line is stored
        assert [int(v) for v in m.array[:7]] == [0x1234_5678 + j for j in range(6)] + [0xAB]
        assert dev.faults == []
        m.write(4 * 7, 0x1)  # the padding word
        assert int(m.array[7]) == 0 and "has bits outside its memory's 0x00000000" in dev.faults[-1]
        m.write(4 * mvau["words"], 0x5)  # past the layer's words, inside the window
        assert "outside every writable layer's memory" in dev.faults[-1]
        assert int(m.array[mvau["words"]]) == 0
        width = thr["lane_bits"]
        t.write(0, 0xFFFF_FFFF)  # a threshold is lane_bits wide
        assert int(t.array[0]) == (1 << width) - 1
        assert f"0x{(1 << width) - 1:08X}" in dev.faults[-1] and len(dev.faults) == 3


def test_a_bitfile_without_runtime_weights_is_refused_for_a_runtime_package(rw, tmp_path) -> None:
    import json
    import shutil

    from fcnseg.host.backends.pynq import open_engine
    from fcnseg.host.package import add_package_files, load_package
    from fcnseg.testing import emulated_zynq as ez

    copy = tmp_path / "pkg"
    shutil.copytree(rw["swapped_board"].path, copy)
    settings = json.loads((copy / "driver" / "settings.json").read_text())
    assert settings["driver_information"]["runtime_weights"] is True
    settings["driver_information"]["runtime_weights"] = False
    add_package_files(copy, {"driver/settings.json": json.dumps(settings).encode()})
    with ez.EmulatedZynq(ez.sim_accelerator(rw["old"])):
        with pytest.raises(UserError, match="says runtime_weights False, but accelerator.json has"):
            open_engine(load_package(copy), transport="builtin")
