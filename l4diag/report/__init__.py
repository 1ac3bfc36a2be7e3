"""Renderers over one Diagnosis: one module per output format, each with ``render(diagnosis) -> str``."""

from __future__ import annotations

import importlib

FORMATS = ("text", "json", "markdown")


def preload(fmt: str) -> None:
    """Import the renderer of ``fmt`` ahead of ``render``, e.g. while the logs are read (the text
    renderer's rich takes ~0.1 s)."""
    if fmt in FORMATS:
        importlib.import_module(f"{__name__}.{fmt}")


def render(diagnosis, fmt: str, *, explain: bool = False, color: bool = False, width: int = 100) -> str:
    """Render a diagnosis in one of FORMATS."""
    if fmt == "json":
        from . import json as fmt_json

        return fmt_json.render(diagnosis)
    if fmt == "markdown":
        from . import markdown

        return markdown.render(diagnosis, explain=explain)
    if fmt == "text":
        from . import text

        return text.render(diagnosis, explain=explain, color=color, width=width)
    raise ValueError(f"unknown format {fmt!r}")
