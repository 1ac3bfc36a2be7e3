"""Cross-job novelty: templates healthy runs of the same setup never printed."""

from __future__ import annotations


def novelty(template, baseline) -> float | None:
    """1.0 for a template no healthy run printed, lower for a known one; None without a baseline."""
    if baseline is None:
        return None
    if any(key in baseline.keys for key in template.keys):
        return 0.0
    if template.text in baseline.templates:
        return 0.0
    return 1.0
