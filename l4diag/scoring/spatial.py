"""Spatial outlierness: compare nodes with each other (node x template counts).

Coverage rarity says a template is printed by only a few nodes. The Isolation Forest runs over
per-node template *presence* normalised by role (nodes grouped by how much they log), so the busy
rank that prints progress lines nobody else prints is not an outlier for that alone.

The forest is a small numpy one (Liu, Ting & Zhou 2008, as scikit-learn's ``IsolationForest``
grows it) rather than scikit-learn's: importing scikit-learn costs 2-3 s of CPU (it pulls in
``scipy.stats``), more than the rest of the diagnosis, for a matrix of at most a few hundred nodes.
"""

from __future__ import annotations

import math

import numpy as np

MIN_NODES_FOR_FOREST = 4
N_TREES = 64
MAX_SUBSAMPLE = 256  # rows per tree, as in the paper and scikit-learn's max_samples="auto"
EULER_GAMMA = 0.5772156649


def coverage_rarity(template_nodes: int, total_nodes: int) -> float:
    """1.0 when one node of many prints the template, 0.0 when every node does."""
    if total_nodes <= 1:
        return 0.0
    return max(0.0, 1.0 - (template_nodes - 1) / (total_nodes - 1))


def isolation_scores(templates: list, nodes: list, exclude: set) -> dict:
    """Isolation Forest outlier score per node in [0, 1], over templates not in ``exclude``.

    Min-max normalised over the nodes (higher = more anomalous); 0 for every node when there are
    fewer than ``MIN_NODES_FOR_FOREST`` nodes, no template to compare them on, or no difference.
    """
    if len(nodes) < MIN_NODES_FOR_FOREST:
        return {n: 0.0 for n in nodes}
    cols = [t for t in templates if t.id not in exclude and 1 < len(t.counts) < len(nodes)]
    if not cols:
        return {n: 0.0 for n in nodes}
    index = {n: i for i, n in enumerate(nodes)}
    matrix = np.zeros((len(nodes), len(cols)), dtype=np.float32)
    for j, t in enumerate(cols):
        for node, count in t.counts.items():
            matrix[index[node], j] = 1.0 if count else 0.0
    raw = isolation_forest(matrix)
    lo, hi = float(raw.min()), float(raw.max())
    span = hi - lo
    return {n: (float(raw[index[n]]) - lo) / span if span > 1e-9 else 0.0 for n in nodes}


def isolation_forest(matrix: np.ndarray, n_trees: int = N_TREES, seed: int = 0) -> np.ndarray:
    """Anomaly score ``2 ** (-E[h] / c(psi))`` of every row of ``matrix`` (rows x features), in (0, 1].

    ``h`` is a row's path length in one tree: the depth of the leaf it reaches plus ``c(size)``, the
    average depth the leaf's training rows would still need to be isolated. Rows that are easy to
    isolate have short paths and score near 1; about 0.5 and below is ordinary. Deterministic for
    a given ``seed``.
    """
    rng = np.random.default_rng(seed)
    n = matrix.shape[0]
    psi = min(MAX_SUBSAMPLE, n)
    max_depth = math.ceil(math.log2(max(psi, 2)))
    depths = np.zeros(n)
    everyone = np.arange(n)
    for _ in range(n_trees):
        sample = rng.choice(n, size=psi, replace=False)
        _grow(matrix, sample, everyone, 0, max_depth, rng, depths)
    return 2.0 ** (-depths / (n_trees * average_path_length(psi)))


def _grow(matrix: np.ndarray, sample: np.ndarray, rows: np.ndarray, depth: int, max_depth: int,
          rng: np.random.Generator, depths: np.ndarray) -> None:
    """Grow one node of an isolation tree and add each routed row's path length to ``depths``.

    ``sample`` is the tree's training rows that reach the node (they choose the split); ``rows`` is
    every row of ``matrix`` that reaches it. The forest only ever scores the matrix it is grown on,
    so rows are routed while the tree grows and no tree is stored.
    """
    if depth < max_depth and len(sample) > 1:
        values = matrix[sample]
        lo, hi = values.min(axis=0), values.max(axis=0)
        varying = np.flatnonzero(lo < hi)  # a constant feature cannot split the node
        if len(varying):
            feature = varying[rng.integers(len(varying))]
            threshold = rng.uniform(lo[feature], hi[feature])
            left = values[:, feature] <= threshold
            routed_left = matrix[rows, feature] <= threshold
            _grow(matrix, sample[left], rows[routed_left], depth + 1, max_depth, rng, depths)
            _grow(matrix, sample[~left], rows[~routed_left], depth + 1, max_depth, rng, depths)
            return
    depths[rows] += depth + average_path_length(len(sample))


def average_path_length(size: int) -> float:
    """c(size): the average path length of an unsuccessful search in a binary search tree of
    ``size`` items, ``2 H(size - 1) - 2 (size - 1) / size`` with ``H(i) ~ ln(i) + Euler's gamma``;
    exact (0 and 1) for sizes 1 and 2, where the approximation of H is poor."""
    if size <= 1:
        return 0.0
    if size == 2:
        return 1.0
    return 2.0 * (math.log(size - 1) + EULER_GAMMA) - 2.0 * (size - 1) / size
