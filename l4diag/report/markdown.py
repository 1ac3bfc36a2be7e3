"""Markdown for incident tickets. Log text is escaped, or fenced with a fence longer than any it contains."""

from __future__ import annotations

import re

from ..model import Diagnosis

MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>])")


MAX_WARNINGS = 50


def literal(s: str) -> str:
    """Non-printable characters (controls, bidi overrides, line breaks) become ``?``."""
    return s if s.isprintable() else "".join(ch if ch.isprintable() else "?" for ch in s)


def escape_inline(s: str) -> str:
    """Escape text for a Markdown paragraph or table cell (including raw HTML)."""
    s = literal(s)
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = MD_SPECIAL.sub(r"\\\1", s)
    return s.replace("\n", " ").replace("\r", " ")


def fence_for(body: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    return "`" * max(3, longest + 1)


def render(d: Diagnosis, *, explain: bool = False) -> str:
    out = []
    f = d.finding
    title = f"{d.verdict}: {f.category}" if f else d.verdict
    out.append(f"## l4diag: {escape_inline(title)}")
    out.append("")
    if f is not None:
        out.append(escape_inline(f.summary))
        out.append("")
        out.append(f"- **Culprit node:** {escape_inline(f.node or 'unknown')}")
        out.append(f"- **Category:** {escape_inline(f.category)}" + (f" ({escape_inline(f.subcategory)})" if f.subcategory else ""))
        out.append(f"- **Stage:** {escape_inline(f.stage or 'unknown')}")
        out.append(f"- **Iteration:** {'unknown' if f.iteration is None else f.iteration}")
        out.append(f"- **Confidence:** {f.confidence:.2f}")
        out.append("")
        if f.evidence:
            body = "\n".join(literal(f"{e.file}:{e.line} [{e.node}] {e.text}") for e in f.evidence)
            fence = fence_for(body)
            out.append("### Evidence")
            out.append("")
            out.append(f"{fence}text")
            out.append(body)
            out.append(fence)
            out.append("")
    else:
        out.append("No failure found.")
        out.append("")
    if d.templates:
        out.append("### Top templates")
        out.append("")
        out.append("| score | count | nodes | category | template |")
        out.append("|---:|---:|---:|---|---|")
        for ts in d.templates[:10]:
            t = ts.template
            out.append(f"| {ts.score:.2f} | {t.count} | {len(t.counts)} | {escape_inline(ts.category or '-')} | "
                       f"{escape_inline(t.text[:200])} |")
        out.append("")
    if explain and d.explanations.get("culprit"):
        out.append(f"**Why this node:** {escape_inline(d.explanations['culprit'])}")
        out.append("")
    a = d.accounting
    skipped = ", ".join(f"{k}: {v}" for k, v in sorted(a.skipped.items())) or "none"
    out.append(f"_Read {a.lines_read} lines from {a.streams} streams of {len(d.node_stats)} nodes; "
               f"parsed {a.lines_parsed}; skipped {escape_inline(skipped)}._")
    if a.inputs_skipped or a.lines_truncated or a.streams_incomplete:
        parts = [f"{k}: {v}" for k, v in sorted(a.inputs_skipped.items())]
        parts += [f"read in part ({k}): {v}" for k, v in sorted(a.streams_incomplete.items())]
        if a.lines_truncated:
            parts.append(f"lines truncated: {a.lines_truncated}")
        out.append("")
        out.append(f"_Inputs not (fully) used: {escape_inline(', '.join(parts))}._")
    if a.warnings:
        out.append("")
        out.append("### Warnings")
        out.append("")
        for w in a.warnings[:MAX_WARNINGS]:
            out.append(f"- {escape_inline(w)}")
        if len(a.warnings) > MAX_WARNINGS:
            out.append(f"- … and {len(a.warnings) - MAX_WARNINGS} more (see the JSON report)")
    return "\n".join(out) + "\n"
