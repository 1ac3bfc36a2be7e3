"""Score l4diag (and a grep baseline) on labelled runs written by ``l4diag synth``."""

from .scoring import aggregate, score_run

__all__ = ["aggregate", "score_run"]
