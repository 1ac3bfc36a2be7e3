"""Labelled synthetic multi-node training runs (and real-excerpt scenarios) for evaluating l4diag.

Label conventions (truth.json), so that eval and a diagnoser agree on what "right" means:

- ``node``: the node id l4diag should give (host name; ``rank<N>`` in the combined-rank layout,
  where each simulated node is one rank).
- ``evidence``: the culprit's root-cause lines (never collateral such as peers' watchdog
  timeouts or launcher SIGTERMs), as written in the file but without the layout prefix (a
  collector timestamp, when the run has one, is part of the line); at most 8, first in time.
  A silent hang has none. A host OOM kill also lists the launcher's ``exitcode: -9`` lines,
  since they may be the only trace of it.
- ``iteration``: the last iteration the job logged before the first evidence line (DESIGN.md),
  read on the node that prints iterations; null for faults at ``init``/``checkpoint_load``.
  For divergence the first evidence line is the first blown-up iteration line, so the label
  is the logged iteration before it (eval allows one logging interval either way).
- ``stage``: the stage the fault was injected in. Loading pretrained weights at start
  (HF ``Loading checkpoint shards``) is part of ``init``; resuming a training checkpoint is
  ``checkpoint_load``.
- real excerpts: category as the source states the root cause (see ``excerpts.py``).
"""

from .records import FAULTS, FRAMEWORKS, LAYOUTS, RunSpec, Truth
from .run import build_run, write_run

__all__ = ["FAULTS", "FRAMEWORKS", "LAYOUTS", "RunSpec", "Truth", "build_run", "write_run"]
