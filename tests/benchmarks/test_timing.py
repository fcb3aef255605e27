"""The timing machinery (:mod:`fcnseg.benchmarks.timing`): turns, clocks, spreads, ratios."""

from __future__ import annotations

import time

import pytest

from fcnseg.benchmarks.timing import (
    compare,
    off_thread_notes,
    off_thread_share,
    paired_ratio,
    scaled,
    side,
    spread,
)


def _recorder(order: list[str], name: str):
    return lambda: order.append(name)


def test_compare_runs_the_sides_in_turns():
    order: list[str] = []
    t = compare({"a": _recorder(order, "a"), "b": _recorder(order, "b")}, reps=3)
    assert order == ["a", "b"] * 4  # one warm-up round, then 3 rounds, A, B, A, B, ...
    assert t["a"]["reps"] == t["b"]["reps"] == 3
    assert len(t["a"]["wall_s"]) == len(t["a"]["cpu_s"]) == len(t["a"]["process_s"]) == 3
    order.clear()
    compare({"x": _recorder(order, "x"), "y": _recorder(order, "y")}, reps=2, warmup=False)
    assert order == ["x", "y", "x", "y"]


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


@pytest.mark.parametrize("clock", ["thread", "process"])
def test_cpu_time_excludes_sleeping(clock):
    t = compare({"sleep": lambda: time.sleep(0.05), "spin": lambda: _spin(0.02)}, 2, False, clock)
    sleep, spin = t["sleep"], t["spin"]
    assert all(w >= 0.05 for w in sleep["wall_s"])
    assert sleep["cpu"]["max"] < 0.01  # asleep: no CPU time
    assert spin["cpu"]["min"] >= 0.02 and spin["clock"] == clock
    assert sleep["clock"] == clock


def test_per_side_clocks():
    t = compare({"a": lambda: None, "b": lambda: None}, 1, False, clock={"b": "process"})
    assert t["a"]["clock"] == "thread" and t["b"]["clock"] == "process"
    assert paired_ratio(t["b"], t["b"])["clock"] == "process"
    with pytest.raises(ValueError, match="clock"):
        compare({"a": lambda: None}, 1, clock="wall")


def test_spread_on_known_samples():
    assert spread([5, 1, 4, 2, 3]) == {
        "median": 3,
        "min": 1,
        "max": 5,
        "q1": 1.5,
        "q3": 4.5,
        "n": 5,
    }
    assert spread([4, 1, 3, 2]) == {"median": 2.5, "min": 1, "max": 4, "q1": 1.5, "q3": 3.5, "n": 4}
    assert spread([7.0]) == {"median": 7, "min": 7, "max": 7, "q1": 7, "q3": 7, "n": 1}
    assert spread([1.234, 1.0], digits=1)["median"] == 1.1
    with pytest.raises(ValueError):
        spread([])


def _side(wall, cpu, clock="thread"):
    """A side as compare() makes it, from known samples."""
    return side(list(wall), list(cpu), list(cpu), clock)


def test_paired_ratio_is_per_repetition():
    a = _side([2.0, 4.0, 9.0], [1.0, 2.0, 3.0])
    b = _side([1.0, 1.0, 3.0], [1.0, 1.0, 1.0])
    r = paired_ratio(a, b)
    assert r["wall"] == {"median": 3.0, "min": 2.0, "max": 4.0, "q1": 2.0, "q3": 4.0, "n": 3}
    assert r["cpu"]["median"] == 2.0 and (r["cpu"]["min"], r["cpu"]["max"]) == (1.0, 3.0)
    assert r["reps"] == 3 and r["clock"] == "thread"
    # per repetition (2/1, 4/1, 9/3), not the ratio of the medians (4 / 1 = 4)
    assert paired_ratio(a, _side([1, 0, 1], [1, 1, 1])) is None  # a zero denominator
    with pytest.raises(ValueError):
        paired_ratio(a, _side([1.0], [1.0]))


def test_scaled_divides_every_sample():
    s = scaled(_side([4.0, 8.0], [2.0, 6.0]), 4)
    assert s["wall_s"] == [1.0, 2.0] and s["cpu_s"] == [0.5, 1.5]
    assert s["cpu"]["median"] == 1.0 and s["median_s"] == 1.5 and s["reps"] == 2


def test_off_thread_share_flags_work_on_other_threads():
    make = side
    alone = make([1.0], [1.0], [1.0], "thread")
    helped = make([1.0], [0.5], [1.0], "thread")
    assert off_thread_share(alone) == 0.0 and off_thread_share(helped) == 0.5
    assert off_thread_share(make([1.0], [1.0], [2.0], "process")) == 0.0
    assert off_thread_notes({"alone": alone}) == []
    assert "helped: 50%" in off_thread_notes({"helped": helped})[0]
