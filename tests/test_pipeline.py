"""Merging Partials does not depend on order or on --jobs."""

from __future__ import annotations

import copy

import pytest
from runs import write_layout
from test_mask import canon

from l4diag.mask import MapOptions, map_stream
from l4diag.model import Partial
from l4diag.pipeline import RunOptions, run_diagnosis
from l4diag.report.json import to_dict
from l4diag.rules import load_rules
from l4diag.sources import discover
from l4diag.templates import build_templates


def _report(path, jobs: int) -> dict:
    d = to_dict(run_diagnosis([str(path)], RunOptions(jobs=jobs)))
    d.pop("timings", None)
    return d


@pytest.mark.parametrize("layout", ["file-per-node", "combined-host", "dir-per-node", "tar.gz"])
def test_same_report_with_one_or_two_jobs(tmp_path, layout):
    path = write_layout(tmp_path / layout, layout)
    assert _report(path, 1) == _report(path, 2)


def _templates(partial) -> list:
    return [(t.id, t.text, t.keys, t.counts, {n: (o.file, o.line) for n, o in t.first.items()})
            for t in build_templates(partial)]


def test_merge_in_any_order(tmp_path):
    root = write_layout(tmp_path / "run", "dir-per-node")
    rules = load_rules([])
    parts = [map_stream(s, rules, MapOptions()) for s in discover([str(root)], None).streams]
    assert len(parts) > 4

    def merged(order):
        out = Partial()
        for p in order:
            out.merge(copy.deepcopy(p))
        return out

    forward, backward = merged(parts), merged(parts[::-1])
    shuffled = merged(parts[1::2] + parts[::2])
    assert canon(forward)[0] == canon(backward)[0] == canon(shuffled)[0]
    for a, b in ((forward, backward), (forward, shuffled)):
        na, nb = canon(a)[1], canon(b)[1]
        for node in na:  # streams is a set; everything else must be equal too
            assert na[node] == nb[node], node
        acct_a, acct_b = canon(a)[2], canon(b)[2]
        acct_a["warnings"].sort()
        acct_b["warnings"].sort()
        assert acct_a == acct_b
    assert _templates(forward) == _templates(backward) == _templates(shuffled)


def test_worker_tasks_shrink_as_the_work_runs_out():
    from collections import deque

    from l4diag.pipeline import _next_task

    sizes = {i: 100 - i for i in range(64)}  # stream 0 is the largest
    pending = deque(sorted(sizes, key=lambda i: -sizes[i]))
    tasks = []
    while pending:
        tasks.append(_next_task(pending, sizes, jobs=2))
    handed = [i for task in tasks for i in task]
    assert sorted(handed) == list(range(64)) and handed == sorted(handed)  # each once, largest first
    assert len(tasks[0]) > 1 and len(tasks[-1]) == 1  # a few streams a task at first, one at the end
    assert all(len(a) >= len(b) for a, b in zip(tasks, tasks[1:]))


@pytest.mark.parametrize("jobs", [1, 2])
def test_while_mapping_runs_once_before_the_map_ends(tmp_path, jobs):
    from l4diag.pipeline import map_all

    path = write_layout(tmp_path / "run", "dir-per-node")
    rules = load_rules([])
    calls = []
    progress = []
    options = RunOptions(jobs=jobs, progress=lambda done, total: progress.append(done))
    partial = map_all([str(path)], options, rules, while_mapping=lambda: calls.append(len(progress)))
    assert len(calls) == 1 and calls[0] < len(progress)
    assert canon(partial)[0] == canon(map_all([str(path)], RunOptions(jobs=jobs), load_rules([])))[0]


def test_run_diagnosis_prepares_the_diagnosis_while_mapping(tmp_path, monkeypatch):
    from l4diag import pipeline

    path = write_layout(tmp_path / "run", "dir-per-node")
    seen = []
    real = pipeline._prepare_diagnosis

    def spy(rules, then):
        real(rules, then)
        seen.append(set(rules._by_kind))

    monkeypatch.setattr(pipeline, "_prepare_diagnosis", spy)
    callers = []
    run_diagnosis([str(path)], RunOptions(jobs=2), while_mapping=lambda: callers.append(1))
    assert callers == [1] and len(seen) == 1 and {"faults", "collateral", "benign"} <= seen[0]


@pytest.mark.parametrize("enabled", [True, False])
def test_run_diagnosis_leaves_the_collector_as_it_found_it(tmp_path, enabled):
    import gc

    path = write_layout(tmp_path / "run", "dir-per-node")
    seen = []
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        expected = _report(path, 2)
        d = to_dict(run_diagnosis([str(path)], RunOptions(jobs=2), while_mapping=lambda: seen.append(gc.isenabled())))
        d.pop("timings", None)
        assert gc.isenabled() == enabled and seen == [False] and d == expected
    finally:
        gc.enable() if was else gc.disable()
