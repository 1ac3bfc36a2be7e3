"""Temporal novelty: when, in a node's own history, a template first appeared."""

from __future__ import annotations

from ..model import NodeStats, Occurrence, Template


def closeness_to_end(occ: Occurrence, stats: NodeStats) -> float:
    """1.0 for a line at the very end of its stream, 0.0 at the start."""
    total = stats.stream_lines.get(occ.file) or stats.lines or 1
    return min(1.0, max(0.0, occ.seq / total))


def template_lateness(template: Template, node_stats: dict) -> float:
    """How close to where the nodes stopped the template first appeared (max over nodes)."""
    best = 0.0
    for node, occ in template.first.items():
        stats = node_stats.get(node)
        if stats is not None:
            best = max(best, closeness_to_end(occ, stats))
    return best
