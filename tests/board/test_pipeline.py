"""The pipelined host: same results as one-at-a-time segmentation, in input order, per-item
errors, early stop, timing report, and a stand-in accelerator at the package's estimated FPS
on the emulated board. Runs where pynq is installed (``.venv-board``)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pynq")

from fcnseg.host.backends.pynq import open_engine  # noqa: E402
from fcnseg.host.pipeline import Pipeline, run_serial  # noqa: E402
from fcnseg.host.segmenter import Segmenter  # noqa: E402
from fcnseg.testing import emulated_zynq as ez  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = sorted((ROOT / "samples").glob("*.jpg"))


def _threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("fcnseg-")]


@pytest.mark.parametrize("accelerate,finish", [(1, 1), (2, 3)])
def test_results_in_order_equal_serial(package, accelerate, finish):
    seg = Segmenter.load(package, backend="sim")
    want, _ = run_serial(seg, PHOTOS)
    pipe = Pipeline(seg, accelerate_workers=accelerate, finish_workers=finish, depth=1)
    results = list(pipe.run(PHOTOS))
    assert [r.index for r in results] == list(range(len(PHOTOS)))
    assert [r.source for r in results] == PHOTOS
    for r, w in zip(results, want, strict=True):
        assert r.ok
        np.testing.assert_array_equal(r.segmentation.scores, w.scores)
        assert r.segmentation.labels.tobytes() == w.labels.tobytes()
        assert set(r.times) == {"decode", "accelerate", "tiling", "finish"}
    assert seg.engine.__class__.__name__ == "SimEngine"  # restored after the run
    assert pipe.report().fabric_fps is None  # a simulator has no fabric rate
    assert not _threads()


def test_the_engine_is_metered_not_swapped(package):
    """The run meters engine calls through ``Segmenter.scores(run=)``: the segmenter's engine
    stays the same object throughout, and a caller using it meanwhile is not counted."""
    from fcnseg.host.images import as_rgb_array

    seg = Segmenter.load(package, backend="sim")
    engine = seg.engine
    same = []

    def decode(source):
        same.append(seg.engine is engine)
        return as_rgb_array(source)

    pipe = Pipeline(seg, decode=decode)
    results = []
    for result in pipe.run(PHOTOS[:3]):
        results.append(result)
        seg.scores(as_rgb_array(PHOTOS[0]))  # the main thread, in the middle of the run
    assert all(r.ok for r in results) and same == [True] * 3
    assert pipe.report().tiles == sum(r.tiles for r in results) > 0


def test_bad_counts_name_their_parameters(package):
    from fcnseg.errors import ParameterError

    seg = Segmenter.load(package, backend="sim")
    with pytest.raises(ParameterError, match=r"^depth=0 must be >= 1$"):
        Pipeline(seg, depth=0)
    with pytest.raises(ParameterError) as caught:
        Pipeline(seg, finish_workers=0)
    assert caught.value.spelled({"finish_workers": "--workers"}) == "--workers 0 must be >= 1"


def test_errors_are_per_item(package, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    written = []

    def write(result):
        if result.index == 3:
            raise OSError("disk full")
        written.append(result.index)
        return f"out{result.index}.png"

    sources = [PHOTOS[0], tmp_path / "missing.png", broken, PHOTOS[1], PHOTOS[2]]
    pipe = Pipeline(Segmenter.load(package, backend="sim"), write=write)
    results = list(pipe.run(sources))
    assert [r.ok for r in results] == [True, False, False, False, True]
    assert "missing.png" in results[1].error and "broken.jpg" in results[2].error
    assert results[3].error == "disk full"
    # Writers run on finish threads: the order of the calls is free, the order of results is not.
    assert sorted(written) == [0, 4] and results[4].output == "out4.png"
    report = pipe.report()
    assert report.images == 5 and report.failed == 3


def test_failing_source_iterable_ends_the_batch(package):
    def sources():
        yield PHOTOS[0]
        raise RuntimeError("listing failed")

    pipe = Pipeline(Segmenter.load(package, backend="sim"))
    got = []
    with pytest.raises(RuntimeError, match="listing failed"):
        for r in pipe.run(sources()):
            got.append(r)
    assert [r.ok for r in got] == [True]
    assert not _threads()


def test_early_stop_leaves_no_threads(package):
    pipe = Pipeline(Segmenter.load(package, backend="sim"))
    it = pipe.run(PHOTOS * 3)
    first = next(it)
    assert first.index == 0
    it.close()
    assert not _threads()
    assert pipe.report().images == 1


def _segmenter(board, package, engine):
    seg = Segmenter(engine, board.geometry, package.output_scale, package.output_bias)
    seg.package = board
    return seg


def test_standin_at_estimated_fps_host_keeps_up(package, board):
    """The stand-in fabric takes N / estimated FPS per call; the host must keep it busy."""
    fps = ez.estimated_fps(package)
    photos = PHOTOS[:3]
    with ez.standin_device(package):
        seg = _segmenter(board, package, open_engine(board))
        pipe = Pipeline(seg)
        results = list(pipe.run(photos))
    report = pipe.report()
    assert all(r.ok for r in results)
    assert report.fabric_fps == pytest.approx(fps)
    assert report.tiles == sum(r.tiles for r in results) > 0
    assert report.tiles_per_s <= fps * 1.02  # the fabric's rate bounds the pipeline's
    assert 0 < report.fabric_utilisation <= 1.02
    assert report.keeps_up, report.to_json()
    assert report.bottleneck == "accelerator"
    doc = report.to_json()
    assert set(doc["engine_ms_per_tile"]) >= {"pack_input", "run_and_wait", "unpack_output"}


def test_hung_accelerator_fails_items_fast(package, board):
    with ez.EmulatedZynq(ez.sim_accelerator(package)) as dev:
        dev.stall = True
        seg = _segmenter(board, package, open_engine(board, timeout_s=0.2))
        results = list(Pipeline(seg).run(PHOTOS[:3]))
    assert [r.ok for r in results] == [False, False, False]
    # the frames' calls are in flight together: the first one started times out, every later
    # one fails as unusable with the same reason. Which frame started first is up to the
    # workers, and a frame of many calls (the fixture's 158 px receptive field gives ~200
    # tiles) may meet "unusable" on a later call of its own before its timed-out one is
    # collected, so at most one frame carries the bare timeout.
    assert all("did not finish" in r.error for r in results)
    assert sum("unusable" not in r.error for r in results) <= 1


def test_measure_with_standin_segmenter(package):
    """What ``fcnseg bench --backend pynq`` runs off-board: serial and pipelined figures."""
    from fcnseg.host.pipeline import measure

    with ez.standin_segmenter(package) as seg:
        assert type(seg.engine).__name__ == "PynqEngine"
        figures = measure(seg, PHOTOS[:2])
    assert figures["images"] == 2 and figures["serial_images_per_s"] > 0
    assert figures["fabric_fps"] == pytest.approx(ez.estimated_fps(package))
    assert {"host_ms_per_image", "fabric_ms_per_image", "keeps_up"} <= set(figures)
