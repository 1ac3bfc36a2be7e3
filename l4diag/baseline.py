"""Healthy-run baselines: learn, save and load the templates and keys healthy runs print.

The file is gzip-compressed JSON with a format version: readable without executing code.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field

from .model import Partial

FORMAT = "l4diag-baseline"
VERSION = 1


class BaselineError(Exception):
    """A baseline file cannot be used."""


@dataclass
class Baseline:
    keys: dict = field(default_factory=dict)  # masked key -> {"count": int, "nodes": int}
    templates: set = field(default_factory=set)
    runs: int = 0
    path: str | None = None

    def add_run(self, partial: Partial, templates: list) -> None:
        """Fold one healthy run into the baseline."""
        self.runs += 1
        for key, per_node in partial.keys.items():
            entry = self.keys.setdefault(key, {"count": 0, "nodes": 0})
            entry["count"] += sum(s.count for s in per_node.values())
            entry["nodes"] += len(per_node)
        self.templates.update(t.text for t in templates)


def save(baseline: Baseline, path: str) -> None:
    doc = {"format": FORMAT, "version": VERSION, "runs": baseline.runs, "keys": baseline.keys,
           "templates": sorted(baseline.templates)}
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        json.dump(doc, fh, sort_keys=True)


def load(path: str) -> Baseline:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BaselineError(f"{path}: not a readable l4diag baseline ({type(exc).__name__}: {exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BaselineError(f"{path}: not an l4diag baseline file")
    if doc.get("version") != VERSION:
        raise BaselineError(f"{path}: baseline format version {doc.get('version')} is not supported (expected {VERSION})")
    keys = doc.get("keys")
    templates = doc.get("templates")
    if not isinstance(keys, dict) or not isinstance(templates, list):
        raise BaselineError(f"{path}: baseline file is malformed")
    return Baseline(keys=keys, templates=set(templates), runs=int(doc.get("runs", 0)), path=path)
