"""Training metrics: spikes against a rolling median, divergence, recovery."""

from __future__ import annotations

import random
import statistics

import pytest

from l4diag.model import MetricPoint
from l4diag.scoring import metrics
from l4diag.scoring.metrics import MIN_HISTORY, RECOVERY_POINTS, SPIKE_MIN_RATIO, WINDOW, find_anomalies


def points(losses: list) -> list:
    return [MetricPoint(iteration=10 * (i + 1), time=1000.0 + i, seq=i + 1, loss=v) for i, v in enumerate(losses)]


def reference_spikes(node: str, pts: list, mads: float) -> list:
    """The rolling-median test point by point, as written before it was vectorised."""
    values = [(p, p.loss) for p in pts]
    out = []
    i = MIN_HISTORY
    while i < len(values):
        window = [v for _, v in values[max(0, i - WINDOW):i]]
        med = statistics.median(window)
        p, v = values[i]
        if not v > med * SPIKE_MIN_RATIO:
            i += 1
            continue
        mad = statistics.median(abs(x - med) for x in window) or abs(med) * 0.01 or 1e-6
        if not v > med + mads * mad:
            i += 1
            continue
        after = [x for _, x in values[i + 1:i + 1 + RECOVERY_POINTS * 3]]
        recovered = len(after) >= RECOVERY_POINTS and all(x < med + (v - med) * 0.3 for x in after[-RECOVERY_POINTS:])
        if not recovered:
            out.append(("divergence", p.iteration))
            return out
        out.append(("recovered", p.iteration))
        i += 1 + len(after)
    return out


def test_a_loss_that_jumps_and_stays_up_diverges():
    found = find_anomalies({"n1": type("S", (), {"metrics": points([2.0] * 30 + [9.0] * 6)})()})
    assert [(f.kind, f.iteration, f.failure) for f in found] == [("loss_divergence", 310, True)]


def test_a_recovered_spike_is_reported_and_scanning_goes_on():
    losses = [2.0] * 30 + [9.0] + [2.0] * 20 + [12.0] * 6
    found = metrics._spikes("n1", points(losses), "loss", metrics.SPIKE_MADS)
    assert [(f.kind, f.iteration) for f in found] == [("loss_spike_recovered", 310), ("loss_divergence", 520)]


@pytest.mark.parametrize("seed", range(30))
def test_spikes_equal_the_point_by_point_test(seed):
    rng = random.Random(seed)
    losses = []
    for _ in range(rng.randint(0, 200)):
        r = rng.random()
        base = 2.0 + rng.gauss(0, rng.choice([0.0, 0.01, 0.3]))
        losses.append(base * rng.choice([3, 10]) if r < 0.04 else base if r > 0.02 else 0.0)
    pts = points(losses)
    found = metrics._spikes("n1", pts, "loss", metrics.SPIKE_MADS)
    kinds = [("divergence" if f.kind.endswith("divergence") else "recovered", f.iteration) for f in found]
    assert kinds == reference_spikes("n1", pts, metrics.SPIKE_MADS)


def test_row_medians_are_numpys():
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    from l4diag.scoring.metrics import _row_medians

    rng = np.random.default_rng(7)
    for k in (1, 2, 3, 19, 20, 21):
        for scale in (1.0, 1e-300, 1e300):
            rows = rng.standard_normal((300, k)) * scale
            rows[::5] = np.round(rows[::5])  # ties
            assert np.array_equal(_row_medians(rows), np.median(rows, axis=1)), (k, scale)
    windows = sliding_window_view(rng.lognormal(size=400), 20)
    assert np.array_equal(_row_medians(windows), np.median(windows, axis=1))
