"""``l4diag eval``: score the diagnosis (or the grep baseline) on labelled runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..evaluation.runner import EvalError, evaluate
from ..evaluation.scoring import aggregate_by_source, fmt

METRICS = (
    ("verdict_accuracy", "verdict accuracy"),
    ("false_alarm_rate", "false alarms (healthy)"),
    ("category_accuracy", "category accuracy"),
    ("node_top1", "culprit node top-1"),
    ("node_top3", "culprit node top-3"),
    ("stage_accuracy", "stage accuracy"),
    ("iteration_accuracy", "iteration (±1 interval)"),
    ("evidence_hit5", "evidence hit@5"),
    ("evidence_precision5", "evidence precision@5"),
    ("event_precision", "event precision"),
    ("event_recall", "event recall"),
    ("event_f1", "event F1"),
)


def run_eval(directory: str, *, baseline: str | None = None, json_out: str | None = None, jobs: int = 1,
             healthy_baseline: str | None = None, quiet: bool = False) -> int:
    """Evaluate; return 0, or 2 on a usage error."""
    method = "grep" if baseline == "grep" else "l4diag"
    if baseline not in (None, "grep"):
        print(f"l4diag eval: error: unknown --baseline {baseline!r} (only 'grep')", file=sys.stderr)
        return 2
    if not Path(directory).is_dir():
        print(f"l4diag eval: error: {directory}: not a directory", file=sys.stderr)
        return 2
    try:
        rows = evaluate(Path(directory), method=method, baseline=healthy_baseline, jobs=max(1, jobs))
    except EvalError as exc:
        print(f"l4diag eval: error: {exc}", file=sys.stderr)
        return 2
    aggregates = aggregate_by_source(rows)
    if not quiet:
        print_tables(rows, aggregates, method)
    if json_out:
        payload = {"method": method, "runs": rows, "aggregate": aggregates}
        Path(json_out).write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


def print_tables(rows: list[dict], aggregates: dict, method: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(110, Console().width))
    mark = {True: "[green]✓[/]", False: "[red]✗[/]", None: "·"}
    table = Table(title=f"l4diag eval — {method}, per run", show_lines=False)
    for col in ("run", "source", "truth", "pred", "node", "stage", "iter", "ev@5", "s"):
        table.add_column(col, overflow="fold")
    for r in rows:
        truth = r["truth_category"] or "healthy"
        pred = (r.get("pred_category") or r.get("pred_verdict") or "?") if r["pred_verdict"] == "failure" else (r.get("pred_verdict") or "?")
        ok = r["category_ok"] if r["truth_verdict"] == "failure" else r["verdict_ok"]
        if r.get("error"):
            pred = "error"
        table.add_row(r["run"], "real" if r["source"] == "real_excerpt" else "synth", truth, f"{mark[ok]} {pred}", mark[r["node_top1"]], mark[r["stage_ok"]],
                      mark[r["iteration_ok"]], mark[r["evidence_hit5"]], f"{r.get('seconds', 0):.2f}")
    console.print(table)
    summary = Table(title=f"l4diag eval — {method}, aggregate")
    summary.add_column("measure")
    groups = list(aggregates)
    for g in groups:
        summary.add_column(g, justify="right")
    summary.add_row("runs (failed / healthy)", *(f"{aggregates[g]['runs']} ({aggregates[g]['failed_runs']} / {aggregates[g]['healthy_runs']})" for g in groups))
    for key, label in METRICS:
        summary.add_row(label, *(fmt(aggregates[g][key]) for g in groups))
    summary.add_row("seconds per run", *(fmt(aggregates[g]["seconds_per_run"], pct=False) for g in groups))
    summary.add_row("errors", *(str(aggregates[g]["errors"]) for g in groups))
    console.print(summary)
