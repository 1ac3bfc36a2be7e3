"""Terminal output (rich). Log text is always rendered literally: never parsed as markup."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..model import Diagnosis
from .json import iso

VERDICT_STYLE = {"failure": "bold red", "healthy": "bold green", "inconclusive": "bold yellow"}


def printable(s: str) -> str:
    """Drop control characters that could move the cursor or change the terminal."""
    return "".join(ch if ch.isprintable() or ch == "\t" else "?" for ch in s)


def render(d: Diagnosis, *, explain: bool = False, color: bool = False, width: int = 100) -> str:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=color, no_color=not color, width=width, highlight=False,
                      emoji=False, markup=False)
    _header(console, d)
    if d.finding is not None:
        _finding(console, d)
    _nodes(console, d)
    _templates(console, d)
    if explain:
        _explain(console, d)
    _input(console, d)
    return buf.getvalue()


def _header(console: Console, d: Diagnosis) -> None:
    line = Text("l4diag: ")
    line.append(d.verdict.upper(), style=VERDICT_STYLE.get(d.verdict, ""))
    if d.finding is not None:
        line.append(f"  {d.finding.category}", style="bold")
        line.append(f"  (confidence {d.finding.confidence:.2f})")
    console.print(line)


def _finding(console: Console, d: Diagnosis) -> None:
    f = d.finding
    console.print(Text(printable(f.summary)))
    facts = Table.grid(padding=(0, 2))
    facts.add_row("node", Text(printable(f.node or "-")))
    facts.add_row("stage", Text(f.stage or "-"))
    facts.add_row("iteration", Text("-" if f.iteration is None else str(f.iteration)))
    if f.subcategory:
        facts.add_row("kind", Text(printable(f.subcategory)))
    if f.time is not None:
        facts.add_row("time", Text(iso(f.time) or "-"))
    console.print(facts)
    if f.evidence:
        console.print(Text("Evidence (most telling first):", style="bold"))
        for e in f.evidence:
            where = Text(f"  {printable(e.file)}:{e.line} ", style="dim")
            where.append(Text(f"[{printable(e.node)}] ", style="cyan"))
            where.append(Text(printable(e.text)))
            console.print(where, overflow="fold")


def _nodes(console: Console, d: Diagnosis) -> None:
    interesting = [n for n in d.nodes if n.role != "normal"][:10]
    if not interesting:
        return
    table = Table(title=None, show_edge=False, header_style="bold")
    table.add_column("node")
    table.add_column("role")
    table.add_column("score", justify="right")
    table.add_column("last iter", justify="right")
    table.add_column("why")
    for ns in interesting:
        stats = d.node_stats.get(ns.node)
        last_iter = "-" if stats is None or stats.last_iteration is None else str(stats.last_iteration)
        table.add_row(Text(printable(ns.node)), Text(ns.role), f"{ns.score:.2f}", last_iter,
                      Text(printable("; ".join(ns.reasons))))
    console.print(table)


def _templates(console: Console, d: Diagnosis) -> None:
    if not d.templates:
        return
    table = Table(show_edge=False, header_style="bold")
    table.add_column("score", justify="right")
    table.add_column("count", justify="right")
    table.add_column("nodes", justify="right")
    table.add_column("category")
    table.add_column("template", overflow="fold")
    for ts in d.templates[:10]:
        t = ts.template
        table.add_row(f"{ts.score:.2f}", str(t.count), str(len(t.counts)), Text(ts.category or "-"),
                      Text(printable(t.text[:300])))
    console.print(table)


def _explain(console: Console, d: Diagnosis) -> None:
    console.print(Text("Why:", style="bold"))
    if d.explanations.get("culprit"):
        console.print(Text(f"  culprit: {printable(d.explanations['culprit'])}"))
    for ns in d.nodes[:5]:
        parts = ", ".join(f"{k}={v:.2f}" for k, v in ns.scores.items())
        console.print(Text(f"  node {printable(ns.node)}: {parts}"))
    for ts in d.templates[:5]:
        parts = ", ".join(f"{k}={v:.2f}" for k, v in ts.scores.items())
        console.print(Text(f"  template {ts.template.id}: {parts}; {printable('; '.join(ts.reasons))}"))


def _input(console: Console, d: Diagnosis) -> None:
    a = d.accounting
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(a.skipped.items())) or "none"
    console.print(Text(
        f"Read {a.lines_read} lines ({a.bytes_read} bytes) from {a.streams} streams of {len(d.node_stats)} nodes; "
        f"parsed {a.lines_parsed}; skipped: {skipped}.", style="dim"))
    if a.inputs_skipped or a.lines_truncated or a.streams_incomplete:
        parts = [f"{k} {v}" for k, v in sorted(a.inputs_skipped.items())]
        parts += [f"read in part ({k}) {v}" for k, v in sorted(a.streams_incomplete.items())]
        if a.lines_truncated:
            parts.append(f"lines truncated {a.lines_truncated}")
        console.print(Text(f"Inputs not (fully) used: {', '.join(parts)}.", style="dim"))
    for w in a.warnings[:20]:
        console.print(Text(f"warning: {printable(w)}", style="yellow"))
    if len(a.warnings) > 20:
        console.print(Text(f"... and {len(a.warnings) - 20} more warnings", style="yellow"))
