"""Pure scoring: one run's truth.json against one JSON report, and aggregates over runs.

Per failed run (truth verdict ``failure``):

- **category**: ``diagnosis.category == truth.category``.
- **node top-1 / top-3**: the ranking is ``diagnosis.node`` followed by ``nodes[].node`` in
  report order (duplicates dropped); hit when ``truth.node`` is among the first 1 / 3.
- **stage**: ``diagnosis.stage == truth.stage``.
- **iteration**: ``|pred - truth| <= truth.log_interval``; both null counts as right.
- **evidence hit@5**: one of the first 5 ``diagnosis.evidence`` lines matches a truth
  evidence line; **precision@5**: the share of those (up to 5) lines that match one.
  Runs whose truth lists no evidence (silent hangs) are left out of both.

A predicted line *matches* a truth line when, after collapsing whitespace, the truth line is
a substring of the predicted text (the report quotes raw lines, which may still carry a
layout prefix such as ``gpu-node-07: `` or ``[rank3]: ``), or the predicted text (at least
20 characters) is a substring of the truth line (a diagnoser that strips timestamps).

**Event-level precision / recall / F1** (L4's measure of failure-indicating lines, at line
granularity): an *event* is one failure-indicating line. The truth events of a run are its
``truth.evidence`` lines (the root-cause lines of the culprit, at most 8, first in time; none
for healthy runs). The predicted events are all ``diagnosis.evidence`` lines when the report's
verdict is ``failure``, else none. TP = truth lines matched by some predicted line;
FN = truth lines matched by none; FP = predicted lines that match no truth line. TP, FP and FN
are summed over runs (micro average), so a healthy run that is called failed adds FPs.

Verdict: ``inconclusive`` counts as "not failure". A false alarm is a healthy run called failure.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

_WS = re.compile(r"\s+")
TOP_EVIDENCE = 5


def norm(text: str) -> str:
    return _WS.sub(" ", text).strip()


def line_matches(pred: str, truth: str) -> bool:
    p, t = norm(pred), norm(truth)
    if not t or not p:
        return False
    return t in p or (len(p) >= 20 and p in t)


def node_ranking(report: dict) -> list[str]:
    diag = report.get("diagnosis") or {}
    ranking: list[str] = []
    for node in [diag.get("node")] + [n.get("node") for n in report.get("nodes") or []]:
        if node and node not in ranking:
            ranking.append(node)
    return ranking


def iteration_ok(pred: int | None, truth: int | None, interval: int | None) -> bool:
    if pred is None or truth is None:
        return pred is None and truth is None
    return abs(int(pred) - int(truth)) <= max(1, int(interval or 1))


def evidence_texts(report: dict) -> list[str]:
    diag = report.get("diagnosis") or {}
    return [str(e.get("text", "")) for e in diag.get("evidence") or []]


def score_run(truth: dict, report: dict) -> dict:
    """One row: what the report got right about this run."""
    failed = truth.get("verdict") == "failure"
    pred_verdict = report.get("verdict")
    pred_failed = pred_verdict == "failure"
    diag = (report.get("diagnosis") or {}) if pred_failed else {}
    truth_ev = [t for t in truth.get("evidence") or [] if norm(t)]
    pred_ev = evidence_texts(report) if pred_failed else []
    ranking = node_ranking(report) if pred_failed else []
    row = {
        "source": truth.get("source", "synthetic"),
        "truth_verdict": truth.get("verdict"),
        "pred_verdict": pred_verdict,
        "truth_category": truth.get("category"),
        "pred_category": diag.get("category"),
        "truth_node": truth.get("node"),
        "pred_node": ranking[0] if ranking else None,
        "truth_stage": truth.get("stage"),
        "pred_stage": diag.get("stage"),
        "truth_iteration": truth.get("iteration"),
        "pred_iteration": diag.get("iteration"),
        "verdict_ok": pred_failed == failed,
        "false_alarm": (not failed) and pred_failed,
    }
    tp = sum(1 for t in truth_ev if any(line_matches(p, t) for p in pred_ev))
    fp = sum(1 for p in pred_ev if not any(line_matches(p, t) for t in truth_ev))
    row.update(event_tp=tp, event_fp=fp, event_fn=len(truth_ev) - tp)
    if not failed:
        row.update(category_ok=None, node_top1=None, node_top3=None, stage_ok=None, iteration_ok=None,
                   evidence_hit5=None, evidence_p5=None)
        return row
    top = pred_ev[:TOP_EVIDENCE]
    matched = [p for p in top if any(line_matches(p, t) for t in truth_ev)]
    row.update(
        category_ok=pred_failed and diag.get("category") == truth.get("category"),
        node_top1=truth.get("node") in ranking[:1],
        node_top3=truth.get("node") in ranking[:3],
        stage_ok=pred_failed and diag.get("stage") == truth.get("stage"),
        iteration_ok=pred_failed and iteration_ok(diag.get("iteration"), truth.get("iteration"), truth.get("log_interval")),
        evidence_hit5=(len(matched) > 0) if truth_ev else None,
        evidence_p5=(len(matched) / len(top) if top else 0.0) if truth_ev else None,
    )
    return row


def _mean(values: list) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _prf(rows: list[dict]) -> dict:
    tp = sum(r.get("event_tp", 0) for r in rows)
    fp = sum(r.get("event_fp", 0) for r in rows)
    fn = sum(r.get("event_fn", 0) for r in rows)
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    f1 = 2 * p * r / (p + r) if p and r else (0.0 if p is not None and r is not None else None)
    return {"event_precision": p, "event_recall": r, "event_f1": f1, "event_tp": tp, "event_fp": fp, "event_fn": fn}


def aggregate(rows: list[dict]) -> dict:
    """Metrics over rows (as made by ``score_run``, optionally with ``seconds``)."""
    failed = [r for r in rows if r.get("truth_verdict") == "failure"]
    healthy = [r for r in rows if r.get("truth_verdict") != "failure"]
    out = {
        "runs": len(rows),
        "failed_runs": len(failed),
        "healthy_runs": len(healthy),
        "verdict_accuracy": _mean([r["verdict_ok"] for r in rows]),
        "false_alarm_rate": _mean([r["false_alarm"] for r in healthy]),
        "category_accuracy": _mean([r["category_ok"] for r in failed]),
        "node_top1": _mean([r["node_top1"] for r in failed]),
        "node_top3": _mean([r["node_top3"] for r in failed]),
        "stage_accuracy": _mean([r["stage_ok"] for r in failed]),
        "iteration_accuracy": _mean([r["iteration_ok"] for r in failed]),
        "evidence_hit5": _mean([r["evidence_hit5"] for r in failed]),
        "evidence_precision5": _mean([r["evidence_p5"] for r in failed]),
        **_prf(rows),
        "seconds_per_run": _mean([r.get("seconds") for r in rows]),
        "errors": sum(1 for r in rows if r.get("error")),
    }
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for r in failed:
        by_cat[r.get("truth_category") or "unknown"].append(r)
    out["by_category"] = {
        cat: {"runs": len(rs), "category_accuracy": _mean([r["category_ok"] for r in rs]),
              "node_top1": _mean([r["node_top1"] for r in rs]), "stage_accuracy": _mean([r["stage_ok"] for r in rs])}
        for cat, rs in sorted(by_cat.items())
    }
    return out


def aggregate_by_source(rows: list[dict]) -> dict:
    """Aggregates for synthetic runs, real-excerpt runs, and all runs."""
    groups = {"synthetic": [r for r in rows if r.get("source") == "synthetic"],
              "real_excerpt": [r for r in rows if r.get("source") == "real_excerpt"],
              "overall": rows}
    return {name: aggregate(rs) for name, rs in groups.items() if rs}


def fmt(value: float | None, pct: bool = True) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.1f}%" if pct else f"{value:.3f}"
