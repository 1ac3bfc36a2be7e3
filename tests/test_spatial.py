"""Spatial scorers (l4diag/scoring/spatial.py): coverage rarity and the numpy Isolation Forest.

- the one node whose template presence differs from every other node scores 1.0, the rest less;
- identical nodes, too few nodes or nothing to compare score 0;
- the same input gives the same scores;
- on random presence matrices with one planted outlier, the top-1 node is the one scikit-learn's
  ``IsolationForest`` picks (only when scikit-learn happens to be installed: it is not a dependency).
"""

from __future__ import annotations

import numpy as np
import pytest

from l4diag.model import Template
from l4diag.scoring.spatial import (
    MIN_NODES_FOR_FOREST,
    average_path_length,
    coverage_rarity,
    isolation_forest,
    isolation_scores,
)


def _nodes(count: int) -> list:
    return [f"node-{i:03d}" for i in range(count)]


def _templates(matrix: np.ndarray, nodes: list) -> list:
    """One template per column of a node x template presence matrix."""
    return [Template(f"t{j}", f"template {j}", [], {nodes[i]: 3 for i in np.flatnonzero(matrix[:, j])}, {})
            for j in range(matrix.shape[1])]


def _roles_with_outlier(seed: int, rows: int = 40, cols: int = 30) -> tuple:
    """Nodes drawn from three role prototypes with a little noise, and one random node."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((3, cols)) < 0.5
    matrix = prototypes[rng.integers(3, size=rows)]
    matrix ^= rng.random((rows, cols)) < 0.03
    outlier = int(rng.integers(rows))
    matrix[outlier] = rng.random(cols) < 0.5
    return matrix.astype(np.float32), outlier


def test_coverage_rarity():
    assert coverage_rarity(1, 16) == 1.0
    assert coverage_rarity(16, 16) == 0.0
    assert coverage_rarity(1, 1) == 0.0


def test_average_path_length():
    assert average_path_length(1) == 0.0
    assert average_path_length(2) == 1.0
    assert average_path_length(256) == pytest.approx(10.2448, abs=1e-3)  # c(256) in Liu et al.


def test_the_node_that_differs_from_all_others_scores_highest():
    nodes = _nodes(16)
    matrix = np.ones((16, 5), dtype=np.float32)
    matrix[:, 4] = np.arange(16) % 2  # two roles: half the nodes print template 4
    matrix[9, :3] = 0  # node 9 misses three lines every other node prints
    scores = isolation_scores(_templates(matrix, nodes), nodes, exclude=set())
    assert scores["node-009"] == 1.0
    assert max(s for n, s in scores.items() if n != "node-009") < 0.5


def test_excluded_and_single_node_templates_are_ignored():
    nodes = _nodes(16)
    matrix = np.ones((16, 3), dtype=np.float32)
    matrix[9, 0] = 0
    matrix[:, 1] = 0
    matrix[3, 1] = 1  # printed by one node only: coverage rarity's job, not the forest's
    templates = _templates(matrix, nodes)
    assert isolation_scores(templates, nodes, exclude={"t0"}) == {n: 0.0 for n in nodes}
    assert isolation_scores(templates, nodes, exclude=set())["node-009"] == 1.0


def test_identical_nodes_score_zero():
    nodes = _nodes(20)
    matrix = np.zeros((20, 6), dtype=np.float32)
    matrix[:, :4] = 1
    # Every column is printed by all nodes or none: nothing to compare, so no forest either.
    assert isolation_scores(_templates(matrix, nodes), nodes, exclude=set()) == {n: 0.0 for n in nodes}
    # The forest itself gives identical rows identical scores, which normalise to 0.
    raw = isolation_forest(matrix)
    assert np.all(raw == raw[0])


def test_too_few_nodes_or_no_columns_score_zero():
    nodes = _nodes(MIN_NODES_FOR_FOREST - 1)
    matrix = np.eye(len(nodes), dtype=np.float32)
    assert isolation_scores(_templates(matrix, nodes), nodes, exclude=set()) == {n: 0.0 for n in nodes}
    assert isolation_scores([], _nodes(8), exclude=set()) == {n: 0.0 for n in _nodes(8)}


def test_deterministic():
    matrix, _ = _roles_with_outlier(3, rows=300)  # more rows than one tree's subsample
    nodes = _nodes(len(matrix))
    templates = _templates(matrix, nodes)
    assert isolation_scores(templates, nodes, exclude=set()) == isolation_scores(templates, nodes, exclude=set())
    assert np.array_equal(isolation_forest(matrix), isolation_forest(matrix))


def test_raw_scores_follow_the_paper():
    matrix, outlier = _roles_with_outlier(5)
    raw = isolation_forest(matrix)
    assert np.all((raw > 0) & (raw <= 1))
    assert int(np.argmax(raw)) == outlier
    assert raw[outlier] > 0.6 > np.median(raw)  # outliers score well above 0.5, ordinary rows below


@pytest.mark.parametrize("seed", range(6))
def test_top_outlier_agrees_with_scikit_learn(seed):
    ensemble = pytest.importorskip("sklearn.ensemble")
    matrix, outlier = _roles_with_outlier(seed, rows=40 + 100 * seed)
    nodes = _nodes(len(matrix))
    ours = isolation_scores(_templates(matrix, nodes), nodes, exclude=set())
    forest = ensemble.IsolationForest(n_estimators=64, random_state=0).fit(matrix)
    theirs = -forest.score_samples(matrix)
    assert int(np.argmax(theirs)) == outlier
    assert max(ours, key=ours.get) == nodes[outlier]
