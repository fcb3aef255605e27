"""Tiles in flight: the pynq backend's overlapped DMA calls and the emulated fabric's timing.

- Results: in-flight calls (several buffer sets, both transports, submit/collect in any order,
  the pipeline over several frames) are byte-equal to serial calls and to the ``sim`` backend.
- The emulated fabric (``fcnseg.testing.emulated_zynq``): a call of ``B`` tiles enters ``II``
  apart and leaves ``L`` after entry, so it completes ``L + (B - 1) II`` after its first tile
  entered; with two calls in flight the second call's first tile enters before the first
  call's last tile has left, and the serial path leaves a gap of at least ``L``; the pipeline's
  input backs up when no output DMA runs. Asserted on the emulator's recorded timeline (its
  model times), never on how fast the host is.
- Failures: a timeout is still one line and breaks the engine for every call in flight, a
  submitter waiting for a buffer set is woken; a failing item loses or reorders no other.

Runs where pynq is installed (``.venv-board``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pynq")

from fcnseg.errors import UserError  # noqa: E402
from fcnseg.host.backends.pynq import AcceleratorTimeout, open_engine  # noqa: E402
from fcnseg.host.images import as_rgb_array, load_image  # noqa: E402
from fcnseg.host.package import load_package  # noqa: E402
from fcnseg.host.pipeline import Pipeline, Result, _Item  # noqa: E402
from fcnseg.host.segmenter import DEFAULT_PACKAGE, Segmenter  # noqa: E402
from fcnseg.host.sim.engine import SimEngine  # noqa: E402
from fcnseg.testing import emulated_zynq as ez  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
PHOTOS = sorted((ROOT / "samples").glob("*.jpg"))
#: a fabric slow enough that the host's reaction (ms) is small beside it: II 10 ms, L 100 ms
SLOW = ez.FabricTiming(interval_s=0.01, latency_s=0.1)
#: the same with a long latency, where an assertion needs the host to act within L: a stall of
#: the host of a quarter second on a loaded machine is then needed to fail it
LONG = ez.FabricTiming(interval_s=0.01, latency_s=0.25)


@pytest.fixture(scope="module")
def tiles(package):
    """37 tiles of the tiny package's size from the sample photos, plus boundary tiles: all 0,
    all 255 (the input's range ends)."""
    th, tw = package.tile
    out = [np.zeros((th, tw, 3), np.uint8), np.full((th, tw, 3), 255, np.uint8)]
    for i in range(35):
        img = load_image(PHOTOS[i % len(PHOTOS)])
        y, x = (37 * i) % (img.shape[0] - th), (53 * i) % (img.shape[1] - tw)
        out.append(img[y : y + th, x : x + tw])
    return np.stack(out)


def frames(n: int, seed: int = 0, photos: bool = True) -> list[np.ndarray]:
    """``n`` frames: sample photos (every third, if ``photos``) and random images of several
    sizes (1 to 8 tiles of the tiny package)."""
    rng = np.random.default_rng(seed)
    sizes = [(128, 192), (100, 150), (64, 64), (200, 90)]
    out = []
    for i in range(n):
        if photos and i % 3 == 0:
            out.append(as_rgb_array(PHOTOS[(i // 3) % len(PHOTOS)]))
        else:
            out.append(rng.integers(0, 256, (*sizes[i % len(sizes)], 3), dtype=np.uint8))
    return out


def _segmenter(board, engine):
    return Segmenter(engine, board.geometry, board.output_scale, board.output_bias,
                     batch=engine.in_flight)  # fmt: skip


# --- results -------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["finn", "builtin"])
@pytest.mark.parametrize("calls", [1, 2, 3])
def test_in_flight_equals_serial_and_sim(package, board, tiles, transport, calls):
    want = SimEngine(package).run(tiles)
    with ez.EmulatedZynq(ez.sim_accelerator(package)) as dev:
        engine = open_engine(board, transport=transport, max_batch=4, calls=calls)
        got = engine.run(tiles)  # 37 tiles: 9 calls of 4 and one of 1
        assert dev.stats["jobs"] == 10 and dev.stats["tiles"] == 37
        assert engine.timing["calls"] == 10 and engine.timing["tiles"] == 37
        assert not dev.faults
    assert got.dtype == np.int64
    assert got.tobytes() == want.tobytes()


def test_tickets_collected_in_any_order(package, board, tiles):
    """Several submissions in flight at once, collected last first: each gets its own tiles."""
    want = SimEngine(package).run(tiles)
    parts = [slice(0, 5), slice(5, 6), slice(6, 20), slice(20, 37)]
    with ez.EmulatedZynq(ez.sim_accelerator(package)):
        engine = open_engine(board, max_batch=3, calls=2)
        tickets = [engine.submit(tiles[p]) for p in parts]
        got = {i: engine.collect(t) for i, t in reversed(list(enumerate(tickets)))}
    for i, p in enumerate(parts):
        assert got[i].tobytes() == want[p].tobytes()


def test_pipeline_in_flight_equals_sim_over_many_frames(package, board):
    """Frames overlap in the fabric (two accelerate workers, calls in flight): every result is
    the simulator's, in input order."""
    images = frames(9)
    sim = Segmenter.load(package, backend="sim")
    want = [sim.segment(im) for im in images]
    with ez.EmulatedZynq(ez.sim_accelerator(package)) as dev:
        seg = _segmenter(board, open_engine(board, max_batch=2, calls=3))
        results = list(Pipeline(seg, depth=2).run(images))
        assert not dev.faults
    assert [r.index for r in results] == list(range(len(images)))
    for r, w in zip(results, want, strict=True):
        assert r.ok, r.error
        assert r.segmentation.scores.tobytes() == w.scores.tobytes()
        assert r.segmentation.labels.tobytes() == w.labels.tobytes()


def test_shipped_package_in_flight_equals_sim(tmp_path):
    """The shipped package (256x256 tiles, INT9 out): in-flight calls equal the simulator."""
    if not (DEFAULT_PACKAGE / "accelerator.json").is_file():
        pytest.skip("no shipped package")
    package = load_package(DEFAULT_PACKAGE)
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (5, *package.tile, 3), dtype=np.uint8)
    x[0] = 0
    x[1] = 255
    want = SimEngine(package).run(x)
    with ez.EmulatedZynq(ez.sim_accelerator(package), ddr_bytes=128 << 20):
        board = load_package(ez.emulated_package(package, tmp_path / "pkg"))
        got = open_engine(board, max_batch=2, calls=2).run(x)
    assert got.tobytes() == want.tobytes()


# --- the emulated fabric's timing ---------------------------------------------------------------


def _by_job(timeline):
    jobs: dict[int, list] = {}
    for t in timeline:
        jobs.setdefault(t.job, []).append(t)
    return [jobs[k] for k in sorted(jobs)]


def test_a_call_completes_at_latency_plus_intervals(package, board, tiles):
    """One call of B tiles into an idle fabric: entries II apart, each leaving L after entry,
    the last at L + (B - 1) II after the first entry; the busy fraction over that span is
    B II / (L + (B - 1) II)."""
    b = 6
    with ez.EmulatedZynq(ez.standin_accelerator(package, fps=0), timing=SLOW) as dev:
        engine = open_engine(board, max_batch=b, calls=1)
        engine.run(tiles[:b])
        (call,) = _by_job(dev.fabric_timeline())
    assert [t.index for t in call] == list(range(b)) and {t.out_job for t in call} == {0}
    first = call[0].entered
    for i, t in enumerate(call):
        assert t.entered == pytest.approx(first + i * SLOW.interval_s, abs=1e-9)
        assert t.left == pytest.approx(t.entered + SLOW.latency_s, abs=1e-9)
    span = SLOW.latency_s + (b - 1) * SLOW.interval_s
    assert call[-1].left - first == pytest.approx(span, abs=1e-9)
    busy = ez.busy_fraction(call, SLOW.interval_s)
    assert busy == pytest.approx(b * SLOW.interval_s / span, abs=1e-9)


def test_two_calls_in_flight_overlap_serial_leaves_a_gap(package, board, tiles):
    """In flight: the second call's first tile enters before the first call's last tile left
    (its input DMA started once the first one's input was read). Serial: it enters only after
    the first call is out, at least L after the first call's last entry."""
    with ez.EmulatedZynq(ez.standin_accelerator(package, fps=0), timing=LONG) as dev:
        open_engine(board, max_batch=4, calls=2).run(tiles[:8])
        first, second = _by_job(dev.fabric_timeline())
        assert second[0].entered < first[-1].left
        assert second[0].entered >= first[-1].entered + LONG.interval_s - 1e-9
        # the output DMA takes the calls in order
        assert [t.out_job for t in first + second] == [0] * 4 + [1] * 4
    with ez.EmulatedZynq(ez.standin_accelerator(package, fps=0), timing=SLOW) as dev:
        open_engine(board, max_batch=4, calls=1).run(tiles[:8])
        first, second = _by_job(dev.fabric_timeline())
        assert second[0].entered >= first[-1].left
        assert second[0].entered - first[-1].entered >= SLOW.latency_s


def test_pipeline_overlaps_frames(package, board):
    """Two accelerate workers on an in-flight engine: no frame waits for the previous frame's
    last tile to leave, so no two successive entries are L apart (a frame submitted only after
    the previous one drained would leave such a gap). The serial engine leaves one per call."""

    def entry_gaps(calls, timing):
        with ez.EmulatedZynq(ez.standin_accelerator(package, fps=0), timing=timing) as dev:
            seg = _segmenter(board, open_engine(board, max_batch=4, calls=calls))
            assert all(r.ok for r in Pipeline(seg).run(frames(10, seed=1, photos=False)))
            timeline = dev.fabric_timeline()
        jobs = len({t.job for t in timeline})
        assert jobs >= 12
        return np.diff([t.entered for t in timeline]), jobs

    gaps, _ = entry_gaps(3, LONG)
    assert gaps.max() < LONG.latency_s
    gaps, jobs = entry_gaps(1, SLOW)
    assert (gaps >= SLOW.latency_s - 1e-9).sum() == jobs - 1  # one between each pair of calls


def test_fabric_backs_up_without_an_output_dma(package, board):
    """Input DMA started alone: the pipeline takes ceil(L / II) tiles, then stops; once the
    output DMA starts, all tiles flow and both DMAs finish (ap_done clear-on-read)."""
    import pynq

    timing = ez.FabricTiming(interval_s=0.002, latency_s=0.005)  # capacity 3
    inp, out = ez.ports_of(package)
    with ez.EmulatedZynq(ez.standin_accelerator(package, fps=0), timing=timing) as dev:
        overlay = pynq.Overlay(str(next(board.file("bitfile").glob("*.bit"))))
        ibuf = pynq.allocate((8, *inp.packed), dtype=np.uint8)
        obuf = pynq.allocate((8, *out.packed), dtype=np.uint8)
        for ip, buf in ((overlay.idma0, ibuf), (overlay.odma0, obuf)):
            ip.write(0x10, buf.device_address & 0xFFFFFFFF)
            ip.write(0x14, buf.device_address >> 32)
            ip.write(0x1C, 8)
        overlay.idma0.write(0x00, 1)
        time.sleep(0.1)
        assert timing.capacity == 3 and len(dev.fabric_timeline()) == 3
        assert not overlay.idma0.read(0x00) & 0x2
        overlay.idma0.write(0x00, 1)  # a start while running is lost, and said so
        assert dev.faults == ["idma0 started while running (start ignored)"]
        overlay.odma0.write(0x00, 1)
        deadline = time.monotonic() + 5
        while not overlay.odma0.read(0x00) & 0x2:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        assert overlay.odma0.read(0x00) == 0x4  # ap_done is clear-on-read: idle, not done
        assert overlay.idma0.read(0x00) == 0x6  # done (not read yet) and idle
        assert overlay.idma0.read(0x00) == 0x4
        timeline = dev.fabric_timeline()
    assert len(timeline) == 8 and all(t.left is not None for t in timeline)
    for a, b in zip(timeline, timeline[3:], strict=False):
        assert b.entered >= a.left - 1e-9  # a place frees before the next tile enters


def test_busy_fraction_by_hand():
    tiles = [ez.FabricTile(0, i, e, e + 5) for i, e in enumerate([0.0, 1.0, 2.0, 6.0])]
    # input busy [0, 3) and [6, 7) of [0, 11): 4 / 11; of [1, 7): [1, 3) + [6, 7) = 3 / 6
    assert ez.busy_fraction(tiles, 1.0) == pytest.approx(4 / 11)
    assert ez.busy_fraction(tiles, 1.0, 1.0, 7.0) == pytest.approx(0.5)
    assert ez.busy_fraction(tiles, 2.0, 0.0, 4.0) == pytest.approx(1.0)  # overlaps counted once
    assert ez.busy_fraction([], 1.0) == 0.0


def test_timing_from_the_shipped_package_estimates():
    if not (DEFAULT_PACKAGE / "accelerator.json").is_file():
        pytest.skip("no shipped package")
    package = load_package(DEFAULT_PACKAGE)
    est = package.estimates
    timing = ez.FabricTiming.of_package(package)
    ii = est["max_cycles"] * est["clock_ns"] * 1e-9  # above the IODMA's cycles per tile
    assert timing.interval_s == pytest.approx(ii, rel=1e-12)
    assert timing.latency_s == pytest.approx(est["critical_path_cycles"] * 1e-8, rel=1e-12)
    assert timing.capacity == -(-est["critical_path_cycles"] // est["max_cycles"])
    fast = ez.FabricTiming.of_package(package, time_scale=0.1)
    assert fast.interval_s == pytest.approx(timing.interval_s / 10)
    with pytest.raises(UserError, match="no max_cycles"):
        ez.FabricTiming.of_package(load_package(DATA / "fcn8s-tiny"))


def test_fabric_fps_keeps_its_meaning(package, board, tiles):
    """``fabric_fps=F``: a call of N tiles is done N / F after its start (II = L = 1 / F)."""
    with ez.EmulatedZynq(ez.standin_accelerator(package, fps=0), fabric_fps=50.0) as dev:
        open_engine(board, max_batch=5, calls=1).run(tiles[:5])
        call = dev.fabric_timeline()
    assert call[-1].left - call[0].entered == pytest.approx(5 / 50.0, abs=1e-9)
    with pytest.raises(UserError, match="not both"):
        ez.EmulatedZynq(fabric_fps=50.0, timing=SLOW)


# --- failures -----------------------------------------------------------------------------------


def test_timeout_breaks_every_call_in_flight(package, board, tiles):
    """A hung fabric with calls queued and a submitter waiting for a buffer set: the run raises
    the one-line timeout, bounded, and the engine then refuses work."""
    with ez.EmulatedZynq(ez.sim_accelerator(package)) as dev:
        dev.stall = True
        engine = open_engine(board, max_batch=2, calls=2, timeout_s=0.3)
        start = time.monotonic()
        with pytest.raises(AcceleratorTimeout) as info:
            engine.run(tiles[:9])  # 5 calls: 2 buffer sets, so the submission waits
        assert time.monotonic() - start < 3
        assert "\n" not in str(info.value)
        assert "unusable" in str(info.value) and "within 0.3 s" in str(info.value)
        with pytest.raises(AcceleratorTimeout, match="unusable"):
            engine.submit(tiles[:1])
    with ez.EmulatedZynq(ez.sim_accelerator(package)) as dev:
        dev.stall = True
        engine = open_engine(board, max_batch=2, calls=2, timeout_s=0.3)
        ticket = engine.submit(tiles[:4])  # 2 calls, both sets, nothing waits
        with pytest.raises(AcceleratorTimeout) as info:
            engine.collect(ticket)
        assert str(info.value).startswith("accelerator did not finish 2 tile(s) within 0.3 s")


def test_a_failing_item_loses_and_reorders_nothing(package, board):
    images = frames(7, seed=2)
    sim = Segmenter.load(package, backend="sim")

    def decode(source):
        if isinstance(source, str):
            raise UserError(f"cannot read {source}")
        return source

    sources = [*images[:3], "broken.png", *images[3:]]
    with ez.EmulatedZynq(ez.sim_accelerator(package)):
        seg = _segmenter(board, open_engine(board, max_batch=2, calls=3))
        results = list(Pipeline(seg, decode=decode).run(sources))
    assert [r.index for r in results] == list(range(len(sources)))
    assert results[3].error == "cannot read broken.png"
    for r, source in zip(results, sources, strict=True):
        if r.index != 3:
            assert r.ok, r.error
            assert r.segmentation.labels.tobytes() == sim.segment(source).labels.tobytes()


# --- the benchmark ------------------------------------------------------------------------------


def test_in_flight_benchmark_quick(tmp_path):
    """``benchmarks/in_flight.py`` in --quick mode: both sides ran every tile, identical labels,
    well-formed spreads; the model's figures are the max-plus model's for each depth."""
    if not (DEFAULT_PACKAGE / "accelerator.json").is_file():
        pytest.skip("no shipped package")
    from fcnseg.benchmarks.runner import Context, run_one
    from fcnseg.host.tiling import plan_tiles
    from fcnseg.hw.info import package_fabric
    from fcnseg.hw.throughput import Host, estimate

    ctx = Context(reps=1, quick=True, work_dir=tmp_path, packages_dir=DEFAULT_PACKAGE.parent)
    result = run_one("in_flight", "fcnseg.benchmarks.in_flight:run", ctx)
    assert result["status"] == "ok", result.get("reason")
    assert all(c["passed"] for c in result["checks"]) and len(result["checks"]) == 2  # 1 package
    serial, deep = result["rows"]
    assert serial["package"] == deep["package"] == "fcn8s-pynq-z2"
    assert (serial["side"], serial["calls_in_flight"]) == ("serial", 1)
    assert deep["calls_in_flight"] == 4 and deep["tiles_in_flight"] == 4 * deep["tiles_per_call"]
    for row in result["rows"]:
        for key in ("fabric_busy_pct", "fabric_busy_fed_pct", "frames_per_s"):
            cell = row[key]
            assert cell["min"] <= cell["median"] <= cell["max"] and cell["n"] == 1
        assert 0 < row["fabric_busy_pct"]["median"] <= row["fabric_busy_fed_pct"]["max"] <= 100
    package = load_package(DEFAULT_PACKAGE)
    tiles = len(plan_tiles(package.geometry, package.geometry.canvas_shape(512, 1024)).tiles)
    fabric = package_fabric(package)
    b = serial["tiles_per_call"]
    want = estimate(fabric, tiles, Host(in_flight=4 * b, batch=b))["frames_per_s"]
    assert deep["model_frames_per_s"] == pytest.approx(want, abs=1e-3)
    one = estimate(fabric, tiles, Host(in_flight=b, batch=b))["one_frame_frames_per_s"]
    assert serial["model_frames_per_s"] == pytest.approx(one, abs=1e-3)
    assert deep["model_fed_busy_pct"] == 100.0 > serial["model_fed_busy_pct"]


def test_frames_in_flight_follow_the_engine(package, board):
    """Frames of one tile: as many in the fabric at once as the engine has calls (the adaptive
    default), where two fixed workers keep two (the fabric then waits out L per pair)."""
    images = [np.full((64, 64, 3), v, np.uint8) for v in range(0, 240, 16)]  # 15 one-tile frames

    def most_inside(**pipeline):
        with ez.EmulatedZynq(ez.standin_accelerator(package, fps=0), timing=SLOW) as dev:
            seg = _segmenter(board, open_engine(board, max_batch=4, calls=8))
            pipe = Pipeline(seg, **pipeline)
            assert all(r.ok for r in pipe.run(images))
            timeline = dev.fabric_timeline()
        assert len(timeline) == len(images)
        inside = [sum(t.entered <= u.entered < t.left for t in timeline) for u in timeline]
        return max(inside), pipe

    fixed, _ = most_inside(accelerate_workers=2)
    assert fixed <= 2
    adaptive, pipe = most_inside()
    assert pipe.accelerate_workers == 9
    assert adaptive >= 6  # 8 calls of one tile in flight, less what the host has not yet cut
    assert pipe._frames_in_flight(_Item(Result(0, None), rgb=images[0])) == 9
