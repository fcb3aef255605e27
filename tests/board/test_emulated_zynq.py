"""The emulated ZynqMP board: packing against hand-computed bytes, the .hwh stand-in, device
installation, clocks, DDR separate from host memory, CMA limits, settings.json and the IODMA
protocol driven by hand. Runs where pynq is installed (``.venv-board``)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytest.importorskip("pynq")

from fcnseg.host.backends.pynq import finn_pack, finn_unpack  # noqa: E402
from fcnseg.host.sim.engine import SimEngine  # noqa: E402
from fcnseg.testing import emulated_zynq as ez  # noqa: E402

# (dtype, values along the folded innermost dimension, the bytes finn's zynq-iodma DMA moves),
# worked out by hand from the convention: value i at bits [i*b, (i+1)*b) of a little-endian word.
VECTORS = [
    ("UINT8", [1, 2, 3], [0x01, 0x02, 0x03]),
    ("INT8", [-1, 5], [0xFF, 0x05]),
    ("INT16", [-2, 258], [0xFE, 0xFF, 0x02, 0x01]),
    ("INT32", [-1, 7], [0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00, 0x00, 0x00]),
    ("INT4", [1, -1, 3], [0xF1, 0x03]),  # 0x3F1
    ("UINT2", [0, 1, 2, 3], [0xE4]),  # 0b11_10_01_00
    ("UINT3", [7, 0, 5], [0x47, 0x01]),  # 7 | 0 << 3 | 5 << 6 = 0x147
    ("INT9", [-1, 5], [0xFF, 0x0B, 0x00]),  # 0x1FF | 5 << 9 = 0xBFF
    ("INT9", [-256], [0x00, 0x01]),  # one value per word: 0x100
    ("BIPOLAR", [1, -1, 1], [0x05]),
]


@pytest.mark.parametrize("dtype,values,expected", VECTORS)
def test_packing_matches_hand_computed_bytes(dtype, values, expected):
    from finn_plus_driver.packing import finnpy_to_packed_bytearray, packed_bytearray_to_finnpy
    from qonnx.core.datatype import DataType

    v = np.array([values])
    want = np.array([expected], dtype=np.uint8)
    real = finnpy_to_packed_bytearray(
        v.astype(np.float32), DataType[dtype], reverse_inner=True, reverse_endian=True
    )
    np.testing.assert_array_equal(real, want)  # the real finn-plus-driver
    np.testing.assert_array_equal(ez.pack_le(v, dtype), want)  # the emulated device
    np.testing.assert_array_equal(finn_pack(v, dtype), want)  # the backend's port
    back = packed_bytearray_to_finnpy(
        want, DataType[dtype], v.shape, reverse_inner=True, reverse_endian=True
    )
    np.testing.assert_array_equal(back, v)
    np.testing.assert_array_equal(ez.unpack_le(want, dtype, len(values)), v)
    np.testing.assert_array_equal(finn_unpack(want, dtype, len(values)), v)


def test_settings_like_finn_driver_step(package):
    info = ez.make_settings(package)["driver_information"]
    io = info["io_shape_dict"]
    # keys finn-plus 1.6.1 MakePYNQDriver/get_driver_shapes write for a FINNDMAOverlay
    assert set(io) >= {
        "idt", "idma_names", "ishape_normal", "ishape_folded", "ishape_packed",
        "odt", "odma_names", "oshape_normal", "oshape_folded", "oshape_packed",
        "num_inputs", "num_outputs", "number_of_external_weights",
        "external_weights_input_shapes",
    }  # fmt: skip
    assert info["platform"] == "zynq-iodma" and info["driver_type"] == "FINNDMAOverlay"
    assert io["idt"] == ["DataType['UINT8']"] and io["odt"] == ["DataType['INT32']"]
    # first layer FMPadding SIMD 3, last layer ElementwiseAdd PE 5, INT32 = 4 bytes
    assert io["ishape_folded"] == [[1, 64, 64, 1, 3]] and io["ishape_packed"] == [[1, 64, 64, 1, 3]]
    assert io["oshape_folded"] == [[1, 8, 8, 1, 5]] and io["oshape_packed"] == [[1, 8, 8, 1, 20]]
    assert info["fclk_mhz"] == 100.0
    json.dumps(info)  # plain JSON


def test_hwh_parses_with_pynqmetadata(package, tmp_path):
    dev = ez.EmulatedZynq()
    bit = ez.write_board_files(tmp_path, package)
    parser = dev.get_bitfile_metadata(str(bit))
    assert parser.ip_dict["idma0"]["phys_addr"] == ez.IP_BASE
    assert parser.ip_dict["odma0"]["phys_addr"] == ez.IP_BASE + ez.IP_RANGE
    assert parser.ip_dict["odma0"]["addr_range"] == ez.IP_RANGE
    assert parser.clock_dict[0]["enable"] == 1
    assert parser.clock_dict[0]["frequency"] == pytest.approx(100.0, abs=0.01)


def test_installs_and_restores_active_device():
    import pynq
    from pynq.ps import Clocks

    before = pynq.Device.__dict__.get("_active_device")
    with ez.EmulatedZynq() as dev:
        assert pynq.Device.active_device is dev
        assert Clocks.fclk0_mhz == pytest.approx(100.0, abs=0.01)  # seeded IOPLL / 15
        Clocks.fclk0_mhz = 125.0
        assert Clocks.fclk0_mhz == pytest.approx(125.0, abs=0.01)  # 1500 / 12
    assert pynq.Device.__dict__.get("_active_device") is before
    assert "_real_instance" not in Clocks.__dict__


def test_ddr_is_separate_from_host_memory():
    import pynq

    with ez.EmulatedZynq() as dev:
        buf = pynq.allocate((8,), dtype=np.uint8, cacheable=True)
        buf[:] = np.arange(8)
        off = buf.device_address - ez.DDR_BASE
        assert not dev.ddr[off : off + 8].any()  # not flushed: the device sees stale memory
        buf.flush()
        np.testing.assert_array_equal(dev.ddr[off : off + 8], np.arange(8))
        dev.ddr[off : off + 8] = 7  # the "fabric" writes
        assert buf[0] == 0  # not invalidated: the host sees its stale copy
        buf.invalidate()
        assert (buf == 7).all()
        coherent = pynq.allocate((4,), dtype=np.uint32, cacheable=False)
        coherent[:] = 5
        coff = coherent.device_address - ez.DDR_BASE
        assert (dev.ddr[coff : coff + 16].view(np.uint32) == 5).all()


def test_cma_limit_and_free():
    import pynq

    with ez.EmulatedZynq(ddr_bytes=1 << 20) as dev:
        a = pynq.allocate((600 << 10,), dtype=np.uint8)
        with pytest.raises(RuntimeError, match="cannot allocate"):
            pynq.allocate((600 << 10,), dtype=np.uint8)
        del a
        assert dev.free_bytes == 1 << 20
        pynq.allocate((600 << 10,), dtype=np.uint8)


def _start_by_hand(overlay, ibuf, obuf, n):
    """The IODMA protocol with raw register writes (outputs first, then inputs)."""
    for ip, buf in ((overlay.odma0, obuf), (overlay.idma0, ibuf)):
        ip.write(0x10, buf.device_address & 0xFFFFFFFF)
        ip.write(0x14, buf.device_address >> 32)
        ip.write(0x1C, n)
        ip.write(0x00, 1)


def test_iodma_protocol_by_hand(package, board):
    import pynq

    x = np.random.default_rng(1).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    inp, out = ez.ports_of(package)
    with ez.EmulatedZynq(ez.sim_accelerator(package)):
        bit = next(board.file("bitfile").glob("*.bit"))
        overlay = pynq.Overlay(str(bit))
        assert overlay.odma0.read(0x00) & 0x4  # idle after download
        ibuf = pynq.allocate((3, *inp.packed), dtype=np.uint8)
        obuf = pynq.allocate((3, *out.packed), dtype=np.uint8)
        ibuf[:] = x.reshape(ibuf.shape)  # UINT8, one byte per value: packed == raw
        ibuf.flush()
        _start_by_hand(overlay, ibuf, obuf, 3)
        deadline = time.monotonic() + 10
        while not overlay.odma0.read(0x00) & 0x2:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        assert overlay.odma0.read(0x00) & 0x4
        obuf.invalidate()
    want = SimEngine(package).run(x)
    got = np.asarray(obuf).view("<i4").astype(np.int64).reshape(want.shape)
    np.testing.assert_array_equal(got, want)


def test_stalled_fabric_never_raises_done(package, board):
    import pynq

    with ez.EmulatedZynq(ez.sim_accelerator(package)) as dev:
        dev.stall = True
        overlay = pynq.Overlay(str(next(board.file("bitfile").glob("*.bit"))))
        inp, out = ez.ports_of(package)
        ibuf = pynq.allocate((1, *inp.packed), dtype=np.uint8)
        obuf = pynq.allocate((1, *out.packed), dtype=np.uint8)
        _start_by_hand(overlay, ibuf, obuf, 1)
        time.sleep(0.05)
        assert not overlay.odma0.read(0x00) & 0x6
