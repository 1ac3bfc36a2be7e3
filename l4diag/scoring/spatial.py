"""Spatial outlierness: compare nodes with each other (node x template counts).

Coverage rarity says a template is printed by only a few nodes. The Isolation Forest runs over
per-node template *presence* normalised by role (nodes grouped by how much they log), so the busy
rank that prints progress lines nobody else prints is not an outlier for that alone.
"""

from __future__ import annotations

import numpy as np

MIN_NODES_FOR_FOREST = 4


def import_forest():
    """The Isolation Forest class. Importing scikit-learn takes 1-3 s (it pulls in ``scipy.stats``),
    so it happens only when a forest is grown, or earlier in a thread while the map runs
    (``pipeline``); a second import finds the module loaded."""
    from sklearn.ensemble import IsolationForest

    return IsolationForest


def coverage_rarity(template_nodes: int, total_nodes: int) -> float:
    """1.0 when one node of many prints the template, 0.0 when every node does."""
    if total_nodes <= 1:
        return 0.0
    return max(0.0, 1.0 - (template_nodes - 1) / (total_nodes - 1))


def isolation_scores(templates: list, nodes: list, exclude: set) -> dict:
    """Isolation Forest outlier score per node in [0, 1], over templates not in ``exclude``."""
    if len(nodes) < MIN_NODES_FOR_FOREST:
        return {n: 0.0 for n in nodes}
    IsolationForest = import_forest()

    cols = [t for t in templates if t.id not in exclude and 1 < len(t.counts) < len(nodes)]
    if not cols:
        return {n: 0.0 for n in nodes}
    index = {n: i for i, n in enumerate(nodes)}
    matrix = np.zeros((len(nodes), len(cols)), dtype=np.float32)
    for j, t in enumerate(cols):
        for node, count in t.counts.items():
            matrix[index[node], j] = 1.0 if count else 0.0
    forest = IsolationForest(n_estimators=64, random_state=0, contamination="auto")
    forest.fit(matrix)
    raw = -forest.score_samples(matrix)  # higher = more anomalous
    lo, hi = float(raw.min()), float(raw.max())
    span = hi - lo
    return {n: (float(raw[index[n]]) - lo) / span if span > 1e-9 else 0.0 for n in nodes}
