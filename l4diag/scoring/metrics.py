"""Training metrics read as numbers: NaN/inf, loss and grad-norm blow-ups, loss-scale collapse, stragglers."""

from __future__ import annotations

import math
import operator
import statistics
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

WINDOW = 20
MIN_HISTORY = 5
SPIKE_MADS = 8.0
SPIKE_MIN_RATIO = 1.5
GRAD_BLOWUP_RATIO = 50.0
RECOVERY_POINTS = 3
SKIP_STORM = 8
STRAGGLER_RATIO = 1.3


@dataclass
class MetricFinding:
    """One training-metric anomaly on one node."""

    kind: str  # nan_loss, nan_grad_norm, loss_divergence, grad_norm_blowup, loss_scale_collapse, skip_storm
    node: str
    iteration: int | None
    time: float | None
    seq: int
    detail: str
    failure: bool  # False for a recovered spike: worth mentioning, not a failure
    confirmed: bool = True  # False when the log ends too soon after it to tell a spike from a divergence


def find_anomalies(node_stats: dict) -> list:
    """All metric findings over every node that logs metrics."""
    out = []
    for node, stats in sorted(node_stats.items()):
        points = _in_log_order(stats.metrics)
        if len(points) < 2:
            continue
        out.extend(_non_finite(node, points))
        out.extend(_spikes(node, points, "loss", SPIKE_MADS))
        out.extend(_grad_blowup(node, points))
        out.extend(_skip_storm(node, points))
    return out


def _in_log_order(points: list) -> list:
    """Each stream's points in the order it printed them (their times may be only carried from an earlier
    line, or missing, and would shuffle them), streams one after the other by their first known time."""
    if _one_stream_in_order(points):  # the usual case, and the order the sort would keep (it is stable)
        return list(points)
    first: dict = {}
    for p in points:
        if p.time is not None and (p.file not in first or p.time < first[p.file]):
            first[p.file] = p.time
    return sorted(points, key=lambda p: (p.file not in first, first.get(p.file, 0.0), p.file, p.seq))


def _one_stream_in_order(points: list) -> bool:
    """Whether the points all come from one stream, in line order."""
    if not points:
        return True
    file, seq = points[0].file, points[0].seq
    for p in points:
        if p.file != file or p.seq < seq:
            return False
        seq = p.seq
    return True


def _non_finite(node: str, points: list) -> list:
    isfinite = math.isfinite
    for p in points:
        loss, grad_norm = p.loss, p.grad_norm
        if loss is not None and not isfinite(loss):
            return [MetricFinding("nan_loss", node, p.iteration, p.time, p.seq, f"loss is {loss}{_at(p)}", True)]
        if grad_norm is not None and not isfinite(grad_norm):
            return [MetricFinding("nan_grad_norm", node, p.iteration, p.time, p.seq,
                                  f"grad norm is {grad_norm}{_at(p)}", True)]
    return []


def _spikes(node: str, points: list, name: str, mads: float) -> list:
    """Spikes against a rolling median; recovered ones are reported and scanning goes on past them."""
    read = operator.attrgetter(name)
    isfinite = math.isfinite
    values = [(p, v) for p in points if (v := read(p)) is not None and isfinite(v)]
    out = []
    i = MIN_HISTORY
    for at in _maybe_spikes(np.array([v for _, v in values], dtype=np.float64), mads).tolist():
        if at < i:  # inside a recovered spike already reported
            continue
        i = at
        window = [v for _, v in values[max(0, i - WINDOW):i]]
        med = statistics.median(window)
        p, v = values[i]
        if not v > med * SPIKE_MIN_RATIO:  # the cheap half of the test first: most points skip the MAD
            continue
        mad = statistics.median(abs(x - med) for x in window) or abs(med) * 0.01 or 1e-6
        if not v > med + mads * mad:
            continue
        after = [x for _, x in values[i + 1:i + 1 + RECOVERY_POINTS * 3]]
        recovered = len(after) >= RECOVERY_POINTS and all(x < med + (v - med) * 0.3 for x in after[-RECOVERY_POINTS:])
        detail = f"{name.replace('_', ' ')} jumped from {med:.3g} to {v:.3g}{_at(p)}"
        if not recovered:
            confirmed = len(after) >= RECOVERY_POINTS
            if not confirmed:
                detail += f" (the log ends {len(after)} point(s) later: too soon to tell whether it recovered)"
            out.append(MetricFinding(f"{name}_divergence", node, p.iteration, p.time, p.seq, detail, True, confirmed))
            return out
        out.append(MetricFinding(f"{name}_spike_recovered", node, p.iteration, p.time, p.seq,
                                 detail + " and recovered", False))
        i += 1 + len(after)  # past the spike and its recovery: they are not history to compare with
    return out


def _maybe_spikes(values: np.ndarray, mads: float) -> np.ndarray:
    """Indices (from MIN_HISTORY on) whose value could pass ``_spikes``' two tests against the
    WINDOW values before it (above SPIKE_MIN_RATIO x their median, and ``mads`` MADs above it).
    numpy's medians may differ from ``statistics.median`` in the last bit, so the bounds are a
    little loose; ``_spikes`` redoes both tests exactly on these few."""
    n = len(values)
    if n <= MIN_HISTORY:
        return np.zeros(0, dtype=np.int64)
    meds = np.full(n, np.nan)
    head = values[:WINDOW].tolist()
    for i in range(MIN_HISTORY, min(WINDOW, n)):  # the first windows are shorter
        meds[i] = statistics.median(head[:i])
    windows = sliding_window_view(values[:-1], WINDOW) if n > WINDOW else None  # row j: values[j:j + WINDOW]
    if windows is not None:
        meds[WINDOW:] = _row_medians(windows)
    bound = meds * SPIKE_MIN_RATIO
    maybe = np.flatnonzero(values > bound - 1e-9 * np.abs(bound))
    full = maybe[maybe >= WINDOW]  # the MAD test over whole windows at once; shorter ones stay
    if len(full):
        med = meds[full]
        mad = _row_medians(np.abs(windows[full - WINDOW] - med[:, None]))
        mad = np.where(mad != 0, mad, np.where(med != 0, np.abs(med) * 0.01, 1e-6))
        limit = med + mads * mad
        keep = values[full] > limit - 1e-9 * (np.abs(limit) + np.abs(med))
        maybe = np.concatenate([maybe[maybe < WINDOW], full[keep]])
    return maybe


def _row_medians(rows: np.ndarray) -> np.ndarray:
    """``np.median(rows, axis=1)`` for rows without NaN, the same numbers: on a strided window view
    np.median took 0.7 ms a node (its generic path copies and checks), a partition here 0.1 ms."""
    k = rows.shape[1]
    if k == 0:
        return np.median(rows, axis=1)
    part = np.partition(rows, [(k - 1) // 2, k // 2], axis=1)
    if k % 2:
        return part[:, k // 2]
    return (part[:, k // 2 - 1] + part[:, k // 2]) / 2  # as np.median: the mean of the middle two


def _grad_blowup(node: str, points: list) -> list:
    values = [(p, p.grad_norm) for p in points if p.grad_norm is not None and math.isfinite(p.grad_norm)]
    if len(values) < 6:
        return []
    base = statistics.median(v for _, v in values[: max(5, len(values) // 2)])
    tail = values[-RECOVERY_POINTS:]
    if base > 0 and all(v > base * GRAD_BLOWUP_RATIO for _, v in tail):
        p = next(p for p, v in values if v > base * GRAD_BLOWUP_RATIO)
        return [MetricFinding("grad_norm_blowup", node, p.iteration, p.time, p.seq,
                              f"grad norm grew from {base:.3g} to {tail[-1][1]:.3g}{_at(p)}", True)]
    return []


def _skip_storm(node: str, points: list) -> list:
    run = 0
    start = None
    for p in points:
        if p.skipped:
            run += 1
            start = start or p
        else:
            run, start = 0, None
    first_iteration = points[0].iteration or 0
    if run >= SKIP_STORM and start is not None and (start.iteration or 0) > first_iteration + 50:
        return [MetricFinding("skip_storm", node, start.iteration, start.time, start.seq,
                              f"{run} skipped iterations in a row from iteration {start.iteration}", True)]
    return []


def _at(p) -> str:
    return f" at iteration {p.iteration}" if p.iteration is not None else ""


def stragglers(node_stats: dict) -> dict:
    """Nodes whose median iteration time is well above the others' (informational)."""
    medians = {}
    for node, stats in node_stats.items():
        times = [p.iter_time for p in stats.metrics if p.iter_time]
        if len(times) >= 3:
            medians[node] = statistics.median(times)
    if len(medians) < 3:
        return {}
    overall = statistics.median(medians.values())
    return {n: m / overall for n, m in medians.items() if overall > 0 and m / overall >= STRAGGLER_RATIO}
