"""Silence: the node whose stream stopped first, for hangs and silent crashes."""

from __future__ import annotations

import statistics

MIN_GAP_SECONDS = 30.0


def silence_scores(node_stats: dict) -> dict:
    """Per node, how clearly it stopped logging before the others, in [0, 1].

    By time when the nodes carry timestamps (gap between a node's last line and the median last
    line of the others, relative to the run's length), else 0.
    """
    timed = {n: s.last_time for n, s in node_stats.items() if s.last_time is not None}
    if len(timed) < 2:
        return {n: 0.0 for n in node_stats}
    firsts = [s.first_time for s in node_stats.values() if s.first_time is not None]
    duration = max(timed.values()) - min(firsts) if firsts else 0.0
    out = {}
    for node in node_stats:
        if node not in timed:
            out[node] = 0.0
            continue
        others = [t for n, t in timed.items() if n != node]
        gap = statistics.median(others) - timed[node]
        if gap < MIN_GAP_SECONDS or duration <= 0:
            out[node] = 0.0
        else:
            out[node] = min(1.0, 0.5 + gap / max(duration, 1.0))
    return out


def first_stopper(scores: dict) -> str | None:
    """The node whose last line came first, when it is clearly ahead of the rest (``scores`` from ``silence_scores``)."""
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    if not ranked or ranked[0][1] <= 0:
        return None
    if len(ranked) > 1 and ranked[1][1] > 0:
        # Several nodes stopped early: no single silent node.
        return None
    return ranked[0][0]
