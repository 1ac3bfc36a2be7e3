"""A small Python API for scripts and the evaluation kit."""

from __future__ import annotations

from .pipeline import RunOptions, run_diagnosis
from .report.json import to_dict


def diagnose_paths(paths: list, *, baseline: str | None = None, jobs: int = 1, node_regex: str | None = None) -> dict:
    """Diagnose a run and return the JSON-contract report as a dict."""
    options = RunOptions(jobs=jobs, baseline=baseline, node_regex=node_regex)
    return to_dict(run_diagnosis(list(paths), options))
