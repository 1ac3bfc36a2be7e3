"""The JSON contract (report.schema.json beside the package root)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from .. import __version__
from ..model import Diagnosis, EvidenceLine, Occurrence

SCHEMA_VERSION = 1


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    try:
        moment = datetime.fromtimestamp(t, tz=timezone.utc)
    except (ValueError, OverflowError, OSError):
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _line(e: EvidenceLine) -> dict:
    return {
        "node": e.node, "file": e.file, "line": e.line, "text": e.text, "template_id": e.template_id,
        "iteration": e.iteration, "stage": e.stage, "time": iso(e.time), "score": e.score,
    }


def _example(node: str, occ: Occurrence, template_id: str) -> dict:
    return {"node": node, "file": occ.file, "line": occ.line, "text": occ.text, "template_id": template_id,
            "iteration": occ.iteration, "stage": occ.stage, "time": iso(occ.time)}


def to_dict(d: Diagnosis) -> dict:
    """The report as a plain dict, exactly the JSON contract."""
    acct = d.accounting
    out = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "l4diag", "version": __version__},
        "input": {
            "paths": list(d.paths),
            "streams": acct.streams,
            "nodes": len(d.node_stats),
            "lines_read": acct.lines_read,
            "lines_parsed": acct.lines_parsed,
            "bytes_read": acct.bytes_read,
            "skipped": dict(sorted(acct.skipped.items())),
            "warnings": list(acct.warnings),
            "baseline": d.baseline,
            "inputs_skipped": dict(sorted(acct.inputs_skipped.items())),
            "lines_truncated": acct.lines_truncated,
            "streams_incomplete": dict(sorted(acct.streams_incomplete.items())),
        },
        "verdict": d.verdict,
        "diagnosis": None,
        "nodes": [],
        "templates": [],
        "metrics": d.metrics,
        "timings": dict(d.timings),
    }
    f = d.finding
    if f is not None:
        out["diagnosis"] = {
            "category": f.category, "subcategory": f.subcategory, "confidence": f.confidence, "summary": f.summary,
            "node": f.node, "ranks": list(f.ranks), "stage": f.stage, "iteration": f.iteration, "time": iso(f.time),
            "evidence": [_line(e) for e in f.evidence],
        }
    for ns in d.nodes:
        stats = d.node_stats.get(ns.node)
        out["nodes"].append({
            "node": ns.node, "score": ns.score, "role": ns.role, "lines": stats.lines if stats else 0,
            "last_iteration": stats.last_iteration if stats else None,
            "last_time": iso(stats.last_time) if stats else None, "reasons": list(ns.reasons),
        })
    for ts in d.templates:
        t = ts.template
        first_node = min(t.first, key=lambda n: (t.first[n].time is None, t.first[n].time or 0, n))
        iterations = [o.iteration for o in t.first.values() if o.iteration is not None]
        out["templates"].append({
            "id": t.id, "template": t.text, "count": t.count, "nodes": len(t.counts),
            "first_iteration": min(iterations) if iterations else None, "category": ts.category,
            "score": ts.score, "scores": dict(ts.scores), "example": _example(first_node, t.first[first_node], t.id),
            "rule": ts.rule, "reasons": list(ts.reasons),
        })
    if d.explanations:
        out["explanations"] = d.explanations
    return out


def render(d: Diagnosis) -> str:
    return json.dumps(to_dict(d), indent=2, ensure_ascii=False) + "\n"
