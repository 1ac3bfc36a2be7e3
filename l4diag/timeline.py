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

from .model import NodeStats, Partial, StageChange


# How soon after the iteration line a marker that names the iteration is placed (kept in line order).
ITERATION_FOLLOW_SECONDS = 0.001


def with_estimated_times(partial: Partial) -> dict:
    """node -> a copy of its NodeStats whose untimed stage changes and iterations carry estimated times."""
    anchors = clock = None  # over every node: made when a first node needs them (often none does)
    out = {}
    for node, stats in partial.nodes.items():
        untimed = any(c.time is None for c in stats.stage_changes) or any(p.time is None for p in stats.iteration_times)
        if stats.first_time is None or not untimed:
            out[node] = dataclasses.replace(stats, stage_changes=_with_until(stats.stage_changes, stats.iteration_times))
            continue
        if anchors is None:
            anchors, clock = _timed_anchors(partial), _iteration_clock(partial)
        per_file = {f: _bounded(points, stats, f) for f, points in anchors.get(node, {}).items()}

        def points_of(file: str) -> list:
            return per_file.get(file) or _bounded([], stats, file)

        def estimate(file: str, seq: int) -> float:
            return interpolate(points_of(file), seq)

        def place(c: StageChange) -> StageChange:
            earliest = lower_bound(points_of(c.file), c.seq)
            when = estimate(c.file, c.seq)
            logged = _logged_at(clock, c.iteration) if c.iteration is not None else None
            if logged is not None and logged >= earliest:
                # "saving checkpoint at iteration N" follows the line that logged iteration N, wherever it was.
                earliest = logged
                when = logged + ITERATION_FOLLOW_SECONDS * (1 + c.seq / (stats.stream_lines.get(c.file, 0) + 1))
            return c._replace(time=max(when, earliest), estimated=True, earliest=earliest)

        changes = _in_stream_order([c if c.time is not None else place(c)
                                    for c in _with_until(stats.stage_changes, stats.iteration_times)])
        changes.sort(key=lambda c: (c.time, c.seq, c.file))
        iterations = [p if p.time is not None else p._replace(time=estimate(p.file, p.seq), estimated=True)
                      for p in stats.iteration_times]
        out[node] = dataclasses.replace(stats, stage_changes=changes, iteration_times=iterations)
    return out


def _with_until(changes: list, iterations: list) -> list:
    """Each change with the last iteration its stream logged while in that stage (its own when none)."""
    marks: dict = {}
    for m in iterations:
        marks.setdefault(m.file, []).append((m.seq, m.iteration))
    for seqs in marks.values():
        seqs.sort()
    out = []
    for file, group in _by_stream(changes).items():
        seqs = marks.get(file, [])
        for k, c in enumerate(group):
            end = group[k + 1].seq if k + 1 < len(group) else float("inf")
            start = bisect.bisect_left(seqs, (c.seq, -1))
            inside = [it for _, it in seqs[start:bisect.bisect_left(seqs, end, lo=start, key=_first)]]  # seq < end
            known = [v for v in (c.iteration, *inside) if v is not None]
            out.append(c._replace(until=max(known) if known else None))
    return out


def _first(pair: tuple):
    return pair[0]


def _in_stream_order(changes: list) -> list:
    """Estimated times pulled back where they would overtake a later line of the same stream: within
    a stream, line order is certain and estimates are not."""
    out = []
    for group in _by_stream(changes).values():
        cap = float("inf")
        fixed = []
        for c in reversed(group):
            if c.estimated and c.time > cap:
                c = c._replace(time=max(cap, c.earliest if c.earliest is not None else cap))
            cap = min(cap, c.time)
            fixed.append(c)
        out.extend(reversed(fixed))
    return out


def _by_stream(changes: list) -> dict:
    """file -> its changes in line order."""
    out: dict = {}
    for c in changes:
        out.setdefault(c.file, []).append(c)
    for group in out.values():
        group.sort(key=lambda c: c.seq)
    return out


def _iteration_clock(partial: Partial) -> list:
    """[(iteration, earliest time any node logged it)] over the iteration lines that carried a timestamp."""
    first: dict = {}
    for stats in partial.nodes.values():
        for mark in stats.iteration_times:
            if mark.time is not None and (mark.iteration not in first or mark.time < first[mark.iteration]):
                first[mark.iteration] = mark.time
    return sorted(first.items())


def _logged_at(clock: list, iteration: int) -> float | None:
    """When some node first logged ``iteration`` with a timestamp, if one did."""
    i = bisect.bisect_left(clock, (iteration, float("-inf")))
    return clock[i][1] if i < len(clock) and clock[i][0] == iteration else None


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


def lower_bound(points: list, seq: int) -> float:
    """The time of the last timed point at or before line ``seq``: the line cannot be earlier."""
    i = bisect.bisect_right(points, (seq, float("inf")))
    return points[max(i - 1, 0)][1]


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


__all__ = ["interpolate", "lower_bound", "with_estimated_times"]
