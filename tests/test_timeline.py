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


def test_a_marker_naming_an_iteration_is_placed_right_after_that_iteration_was_logged():
    """Megatron's rank 0 prints "saving checkpoint at iteration N" untimed; the last rank timed iteration N."""
    saver = NodeStats("r0", first_time=0.0, last_time=1000.0, stream_lines={"r0.log": 10})
    saver.stage_changes = [StageChange(None, 9, "checkpoint_save", 170, "r0.log")]
    logger = NodeStats("r7", first_time=0.0, last_time=1000.0, stream_lines={"r7.log": 3})
    logger.iteration_times = [IterationMark(160, 300.0, "r7.log", 1), IterationMark(170, 400.0, "r7.log", 2)]
    partial = Partial()
    partial.nodes.update({"r0": saver, "r7": logger})
    (change,) = with_estimated_times(partial)["r0"].stage_changes
    assert change.estimated and change.earliest == 400.0 and 400.0 < change.time < 400.1


def test_each_change_knows_the_last_iteration_its_stream_logged_in_that_stage():
    stats = NodeStats("n0", first_time=0.0, last_time=100.0, stream_lines={"log": 50})
    stats.stage_changes = [StageChange(1.0, 5, "train", 10, "log"), StageChange(2.0, 30, "checkpoint_save", 20, "log")]
    stats.iteration_times = [IterationMark(it, 1.0 + it / 100, "log", 5 + it) for it in (10, 15, 20)]
    partial = Partial()
    partial.nodes["n0"] = stats
    changes = with_estimated_times(partial)["n0"].stage_changes
    assert [(c.stage, c.until) for c in changes] == [("train", 20), ("checkpoint_save", 20)]
