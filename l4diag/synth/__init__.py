"""Labelled synthetic multi-node training runs (and real-excerpt scenarios) for evaluating l4diag."""

from .records import FAULTS, FRAMEWORKS, LAYOUTS, RunSpec, Truth
from .run import build_run, write_run

__all__ = ["FAULTS", "FRAMEWORKS", "LAYOUTS", "RunSpec", "Truth", "build_run", "write_run"]
