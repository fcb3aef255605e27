"""The frames/s model that counts latency and batching (``fcnseg.hw.throughput``) against
hand-computed figures, and ``fcnseg info``'s latency lines on the shipped package.

numpy/stdlib and the package loader only, so it runs in ``.venv-board`` too (``tests/hw`` is
skipped there; ``fcnseg info`` runs on boards).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fcnseg.cli import main
from fcnseg.errors import UserError
from fcnseg.host.package import load_package
from fcnseg.hw.info import package_fabric, package_max_batch
from fcnseg.hw.throughput import (
    IODMA_MAX_BATCH,
    Fabric,
    Host,
    call_period,
    call_seconds,
    calls_for_steady,
    estimate,
    frame_seconds,
    tiles_per_s,
)

SHIPPED = Path(__file__).resolve().parents[2] / "host" / "packages" / "fcn8s-pynq-z2"

#: hand-sized: 100 MHz, a tile every 1 ms (1e5 cycles), 10 ms through the empty pipeline.
TOY = Fabric(clock_hz=1e8, interval_cycles=100_000, latency_cycles=1_000_000)
#: the shipped Pynq-Z2 package's finn estimates.
PYNQ = Fabric(clock_hz=1e8, interval_cycles=1_572_864, latency_cycles=21_518_781)
#: the same net re-folded by finn-plus 1.6.1 for --target-fps 250 (step_target_fps_parallelization
#: + step_minimize_bit_width on build/shipped-fcn8s-pynq-z2's specialised model, then
#: dataflow_performance): the 254.3 tiles/s fold of issue 15.
PYNQ_250 = Fabric(clock_hz=1e8, interval_cycles=393_216, latency_cycles=7_462_272)


def test_one_tile_per_frame_depth_one_is_the_latency():
    host = Host(in_flight=1)
    assert call_seconds(TOY, 1) == pytest.approx(0.010)
    assert tiles_per_s(TOY, host) == pytest.approx(100.0)  # 1 / L, not 1 / II = 1000
    e = estimate(TOY, 1, host)
    assert e["steady_frames_per_s"] == pytest.approx(1000.0)
    assert e["frames_per_s"] == pytest.approx(100.0)
    assert e["one_frame_frames_per_s"] == pytest.approx(100.0)
    assert e["bound"] == "latency"
    assert e["in_flight_for_steady"] == 10  # L / II tiles of one per call


@pytest.mark.parametrize(
    ("in_flight", "batch", "tiles_s"),
    [
        (1, 1, 100.0),  # 1 / 10 ms
        (5, 1, 500.0),  # Little's law: 5 / 10 ms
        (10, 1, 1000.0),  # L / II tiles in flight: the pipeline's rate
        (40, 1, 1000.0),  # deeper does not go faster
        (4, 4, 4 / 0.013),  # one call of 4 at a time: 4 / (10 + 3 * 1) ms
        (8, 4, 8 / 0.013),  # two calls of 4: 8 / 13 ms
        (16, 4, 1000.0),  # four calls of 4 cover the 13 ms round trip (16 ms of work)
    ],
)
def test_depth_and_batch(in_flight, batch, tiles_s):
    host = Host(in_flight=in_flight, batch=batch)
    assert tiles_per_s(TOY, host) == pytest.approx(tiles_s)
    bound = "fabric" if tiles_s == pytest.approx(1000.0) else "latency"
    assert estimate(TOY, 7, host)["bound"] == bound


def test_many_tiles_one_frame_at_a_time():
    """65 tiles: deep in flight the frame takes L + 64 II; one call of 4 at a time it takes 16
    calls of 13 ms and a last call of one tile (10 ms)."""
    assert frame_seconds(TOY, 65, Host(in_flight=65, batch=1)) == pytest.approx(0.010 + 0.064)
    assert frame_seconds(TOY, 65, Host(in_flight=65)) == pytest.approx(0.074)  # one call
    assert frame_seconds(TOY, 65, Host(in_flight=4)) == pytest.approx(16 * 0.013 + 0.010)
    e = estimate(TOY, 65, Host(in_flight=4))
    assert e["frames_per_s"] == pytest.approx(4 / 0.013 / 65)  # frames overlapped
    assert e["one_frame_frames_per_s"] == pytest.approx(1 / 0.218)
    assert e["steady_frames_per_s"] == pytest.approx(1000 / 65)


def test_long_runs_settle_at_the_closed_form_period():
    """The max-plus steady state (call_period) is the slope of the simulated schedule."""
    for host in (Host(16, 4), Host(8, 4, call_overhead_s=0.002), Host(3, 1), Host(6, 2)):
        b, c, o = host.tiles_per_call, host.calls, host.call_overhead_s
        n = 600 * b  # whole rounds of c calls (c divides 600)
        slope = (frame_seconds(TOY, 2 * n, host) - frame_seconds(TOY, n, host)) / (n / b)
        assert slope == pytest.approx(call_period(TOY, b, c, o), rel=1e-9)


def test_call_overhead_and_host_work():
    host = Host(in_flight=4, batch=1, call_overhead_s=0.002)
    # a call's round trip is 12 ms, 4 share it: 3 ms per tile, latency-bound
    assert tiles_per_s(TOY, host) == pytest.approx(1 / 0.003)
    # the host's 2 ms per call exceed the fabric's 1 ms per tile: no depth reaches 1 / II
    assert calls_for_steady(TOY, 1, 0.002) is None
    assert tiles_per_s(TOY, Host(in_flight=100, batch=1, call_overhead_s=0.002)) == 500.0
    e = estimate(TOY, 10, Host(in_flight=40, batch=1, frame_work_s=0.05))
    assert e["frames_per_s"] == pytest.approx(20.0) and e["bound"] == "host"  # 100 -> 20
    assert e["steady_frames_per_s"] == pytest.approx(20.0)
    assert e["one_frame_frames_per_s"] == pytest.approx(1 / (0.010 + 0.009 + 0.05))


def test_dma_port_bounds_the_interval():
    fabric = Fabric(clock_hz=1e8, interval_cycles=1000, latency_cycles=5000, dma_cycles=4000)
    assert fabric.interval_s == pytest.approx(4e-5)


def test_shipped_package_figures():
    package = load_package(SHIPPED)
    fabric = package_fabric(package)
    # 256x256x3 UINT8 in at 64 bits per cycle: 24576 cycles, far below the bottleneck's
    assert fabric == Fabric(1e8, 1_572_864, 21_518_781, dma_cycles=24_576)
    assert 1 / fabric.interval_s == pytest.approx(63.578, abs=1e-3)
    assert tiles_per_s(fabric, Host(in_flight=1)) == pytest.approx(1 / 0.21518781)  # 4.65
    assert tiles_per_s(fabric, Host(in_flight=1)) == pytest.approx(4.647, abs=1e-3)
    assert calls_for_steady(fabric, 1) == 14  # ceil(21518781 / 1572864)
    # 512x1024: 65 tiles; one call of 4 tiles at a time (the host before calls in flight)
    e = estimate(fabric, 65, Host(in_flight=4, max_batch=package_max_batch(package)))
    assert e["steady_frames_per_s"] == pytest.approx(0.978, abs=1e-3)
    assert e["tiles_per_s"] == pytest.approx(4 / (0.21518781 + 3 * 0.01572864))
    assert e["in_flight_for_steady"] == 20  # 5 calls of 4
    assert package_max_batch(package) == 16  # the pynq backend's DEFAULT_MAX_BATCH


def test_issue_15_one_frame_in_flight_method():
    """Issue 15's "1.64 frames/s" for the 250-tiles/s fold at 512x1024 is one frame at a time
    in calls of 16 tiles (the pynq backend's batch), one call at a time: 4 calls of 16 and one
    of 1, each L + (B - 1) II. The same fold deep in flight gives 3.07 one frame at a time and
    the steady 3.91 with frames overlapped."""
    host = Host(in_flight=16, batch=16)
    seconds = 4 * (0.07462272 + 15 * 0.00393216) + 0.07462272
    assert frame_seconds(PYNQ_250, 65, host) == pytest.approx(seconds)
    assert estimate(PYNQ_250, 65, host)["one_frame_frames_per_s"] == pytest.approx(1.642, abs=1e-3)
    deep = estimate(PYNQ_250, 65, Host(in_flight=65, batch=1))
    assert deep["one_frame_frames_per_s"] == pytest.approx(1 / (0.07462272 + 64 * 0.00393216))
    assert deep["frames_per_s"] == pytest.approx(254.313 / 65, abs=1e-3)
    # the shipped fold by the same method: 0.65 frames/s
    assert estimate(PYNQ, 65, host)["one_frame_frames_per_s"] == pytest.approx(
        1 / (4 * (0.21518781 + 15 * 0.01572864) + 0.21518781)
    )


def test_the_pynq_host_model_is_the_backends_defaults(tmp_path):
    """pynq_host(io): the depth and batch the pynq backend opens with by default (its calls of
    as many tiles as a buffer set holds), checked on the emulated board (pynq: .venv-board)."""
    pytest.importorskip("pynq")
    from fcnseg.host.backends.pynq import open_engine
    from fcnseg.host.package import load_package
    from fcnseg.hw.info import pynq_host
    from fcnseg.testing import emulated_zynq as ez

    package = load_package(SHIPPED)
    board = load_package(ez.emulated_package(package, tmp_path / "pkg"))
    with ez.EmulatedZynq(ez.standin_accelerator(package, fps=0), ddr_bytes=128 << 20):
        engine = open_engine(board)
        host = pynq_host(package.meta["io"])
        assert (host.in_flight, host.tiles_per_call) == (engine.in_flight, engine.batch)
        assert host.calls == engine.calls


def test_pynq_host_overrides():
    from fcnseg.host.package import load_package
    from fcnseg.hw.info import pynq_host

    io = load_package(SHIPPED).meta["io"]
    assert pynq_host(io).tiles_per_call == 16 and pynq_host(io).calls == 4
    assert pynq_host(io, in_flight=8).tiles_per_call == 8  # one call of 8
    assert pynq_host(io, in_flight=8, batch=2).calls == 4
    assert pynq_host(io, in_flight=None).in_flight == 64  # None: the default
    # a 512x1024 tile: 1.5 MiB in + 128 KiB out; a quarter of the 32 MiB holds 4 of them
    big = {"input": {"shape": [1, 512, 1024, 3], "dtype": "UINT8"},
           "output": {"shape": [1, 64, 128, 8], "dtype": "INT16"}}  # fmt: skip
    assert pynq_host(big).tiles_per_call == 4 and pynq_host(big).in_flight == 16


def test_iodma_batch_register_is_32_bit():
    assert IODMA_MAX_BATCH == 0xFFFFFFFF
    assert Host(in_flight=2**40, batch=None).tiles_per_call == IODMA_MAX_BATCH


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_flight": 0},
        {"in_flight": 4, "batch": 5},
        {"in_flight": 32, "batch": 32, "max_batch": 16},
        {"call_overhead_s": -1.0},
    ],
)
def test_host_refuses_impossible_settings(kwargs):
    with pytest.raises(UserError):
        Host(**kwargs)


def test_info_prints_the_latency_estimates(capsys):
    assert main(["info", str(SHIPPED)]) == 0
    text = capsys.readouterr().out
    assert "estimate 0.98 frames/s steady state (63.6 tiles/s, one per 15.73 ms)" in text
    # the pynq backend's default: 4 calls of 16 tiles in flight (L + 15 II per call)
    assert (
        "estimate 0.98 frames/s with 64 tiles in flight (4 calls of 16 tiles, 451.1 ms each; "
        "batch limit 16): 63.6 tiles/s, reaches the steady rate; 32 tiles in flight (2 calls of "
        "16) reach the steady rate"
    ) in text
    # one frame alone: its 65 tiles back to back, the last leaves L after entering at 64 II
    assert "one frame at a time (1222 ms per frame); host work per frame not counted" in text
    assert f"{1e3 * (0.21518781 + 64 * 0.01572864):.0f} ms per frame" == "1222 ms per frame"
    argv = ["info", str(SHIPPED), "--in-flight", "4"]
    assert main(argv) == 0
    assert (
        "estimate 0.23 frames/s with 4 tiles in flight (1 call of 4 tiles, 262.4 ms each; "
        "batch limit 16): 15.2 tiles/s, latency-bound; 20 tiles in flight (5 calls of 4)"
    ) in capsys.readouterr().out
    argv = ["info", str(SHIPPED), "--in-flight", "16", "--batch", "1", "--host-ms", "500"]
    assert main([*argv, "--json"]) == 0
    latency = json.loads(capsys.readouterr().out)["frames"]["latency"]
    assert latency["tiles_per_call"] == 1 and latency["calls_in_flight"] == 16
    assert latency["frames_per_s"] == pytest.approx(63.578287760416664 / 65)
    assert latency["one_frame_frames_per_s"] == pytest.approx(
        1 / (0.21518781 + 64 * 0.01572864 + 0.5)
    )
    assert main(["info", str(SHIPPED), "--in-flight", "4", "--batch", "8"]) == 2
    assert "tiles per call 8 must be between 1 and the in-flight depth 4" in capsys.readouterr().err
