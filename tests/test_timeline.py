"""Untimed progress lines get times from their timed neighbours, so stages line up across streams."""

from l4diag.model import IterationMark, KeyNodeStats, NodeStats, Occurrence, Partial, StageChange
from l4diag.timeline import interpolate, with_estimated_times


def test_interpolate_places_a_line_between_its_timed_neighbours():
    points = [(0, 100.0), (10, 200.0), (20, 200.0)]
    assert interpolate(points, 5) == 150.0
    assert interpolate(points, 10) == 200.0
    assert interpolate(points, 15) == 200.0
    assert interpolate(points, 99) == 200.0


def test_interpolate_never_goes_back_in_time():
    assert interpolate([(0, 100.0), (10, 50.0)], 5) == 100.0


def _occ(file: str, seq: int, time: float | None, exact: bool = True) -> Occurrence:
    return Occurrence(file, seq, "x", seq, None, "init", time, exact)


def test_untimed_marks_in_a_stream_without_timestamps_spread_over_the_node_lifetime():
    stats = NodeStats("n0", first_time=1000.0, last_time=2000.0, stream_lines={"out.log": 99, "err.log": 10})
    stats.stage_changes = [StageChange(None, 10, "train", None, "out.log")]
    stats.iteration_times = [IterationMark(10, None, "out.log", 50), IterationMark(20, 1600.0, "out.log", 60)]
    partial = Partial()
    partial.nodes["n0"] = stats
    partial.keys["k"] = {"n0": KeyNodeStats(1, _occ("err.log", 1, 1000.0), _occ("err.log", 10, 2000.0))}
    out = with_estimated_times(partial)["n0"]
    (change,) = out.stage_changes
    assert change.estimated and change.time == 1100.0
    assert out.iteration_times[0].estimated and out.iteration_times[0].time == 1500.0
    assert out.iteration_times[1] == stats.iteration_times[1]
    assert stats.stage_changes[0].time is None, "the Partial itself is not changed"


def test_kept_timed_occurrences_of_the_same_stream_bound_the_estimate():
    stats = NodeStats("n0", first_time=0.0, last_time=1000.0, stream_lines={"log": 100})
    stats.stage_changes = [StageChange(None, 30, "checkpoint_save", 5, "log")]
    partial = Partial()
    partial.nodes["n0"] = stats
    partial.keys["a"] = {"n0": KeyNodeStats(1, _occ("log", 20, 500.0), _occ("log", 40, 700.0))}
    partial.keys["b"] = {"n0": KeyNodeStats(1, _occ("log", 25, 1.0, exact=False), _occ("log", 25, 1.0, exact=False))}
    assert with_estimated_times(partial)["n0"].stage_changes[0].time == 600.0
