"""Estimated times for progress markers that carry none (Megatron iteration lines, HF loss dicts).

A stage change or iteration line without a timestamp still has a place in its stream. The lines of
the same node and stream that did carry one (the first and last occurrence of every masked key are
kept) bound it from both sides, and the node's first and last timestamps bound a stream that has
none at all; the marker is placed between its neighbours in proportion to its line number. This
orders untimed progress against timed failures on other streams and nodes, which is all the
stage and iteration alignment needs.
"""

from __future__ import annotations

import bisect
import dataclasses

from .model import NodeStats, Partial


def with_estimated_times(partial: Partial) -> dict:
    """node -> a copy of its NodeStats whose untimed stage changes and iterations carry estimated times."""
    anchors = _timed_anchors(partial)
    out = {}
    for node, stats in partial.nodes.items():
        untimed = any(c.time is None for c in stats.stage_changes) or any(p.time is None for p in stats.iteration_times)
        if stats.first_time is None or not untimed:
            out[node] = stats
            continue
        per_file = {f: _bounded(points, stats, f) for f, points in anchors.get(node, {}).items()}

        def estimate(file: str, seq: int) -> float:
            points = per_file.get(file) or _bounded([], stats, file)
            return interpolate(points, seq)

        changes = [c if c.time is not None else c._replace(time=estimate(c.file, c.seq), estimated=True)
                   for c in stats.stage_changes]
        changes.sort(key=lambda c: (c.time, c.seq, c.file))
        iterations = [p if p.time is not None else p._replace(time=estimate(p.file, p.seq), estimated=True)
                      for p in stats.iteration_times]
        out[node] = dataclasses.replace(stats, stage_changes=changes, iteration_times=iterations)
    return out


def _timed_anchors(partial: Partial) -> dict:
    """node -> file -> [(seq, time)] of the kept occurrences that carried their own timestamp."""
    out: dict = {}
    for per_node in partial.keys.values():
        for node, ks in per_node.items():
            for occ in (ks.first, ks.last):
                if occ.time is not None and occ.time_exact:
                    out.setdefault(node, {}).setdefault(occ.file, set()).add((occ.seq, occ.time))
    return out


def _bounded(points, stats: NodeStats, file: str) -> list:
    """The stream's timed points, closed by the node's first time at its start and last time at its end."""
    end = stats.stream_lines.get(file, 0) + 1
    return sorted({(0, stats.first_time), *points, (end, stats.last_time or stats.first_time)})


def interpolate(points: list, seq: int) -> float:
    """The time at line ``seq`` between the timed points around it (never earlier than the one before)."""
    i = bisect.bisect_right(points, (seq, float("inf")))
    if i == 0:
        return points[0][1]
    if i == len(points):
        return points[-1][1]
    (s0, t0), (s1, t1) = points[i - 1], points[i]
    if t1 <= t0 or s1 == s0:
        return t0
    return t0 + (t1 - t0) * (seq - s0) / (s1 - s0)


__all__ = ["interpolate", "with_estimated_times"]
