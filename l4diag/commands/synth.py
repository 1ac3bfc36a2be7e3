"""``l4diag synth``: write one labelled synthetic run, or a whole labelled suite."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

from ..synth import RunSpec, build_run, write_run
from ..synth.faults import SynthError
from ..synth.suite import write_suite


def run_synth(outdir: str, *, fault: str | None = None, nodes: int = 8, framework: str = "megatron",
              layout: str = "dir-per-node", seed: int = 0, stage: str | None = None, suite: bool = False,
              size: str = "full", excerpts: str | None = None, quiet: bool = False) -> int:
    """Write the run(s); return 0, or 2 on a usage error."""
    out = Path(outdir)
    start = time.perf_counter()
    try:
        if suite:
            exdir = Path(excerpts) if excerpts else None
            if exdir is not None and not exdir.is_dir():
                raise SynthError(f"--excerpts {excerpts}: not a directory")
            truths = write_suite(out, size=size, excerpts_dir=exdir, seed=seed)
            if not quiet:
                _summary(truths, time.perf_counter() - start)
            return 0
        if fault is None:
            raise SynthError("give --fault CATEGORY|healthy, or --suite")
        spec = RunSpec(fault=fault, nodes=nodes, framework=framework, layout=layout, seed=seed, stage=stage)
        sim, truth = build_run(spec)
        write_run(sim, truth, out)
    except SynthError as exc:
        print(f"l4diag synth: error: {exc}", file=sys.stderr)
        return 2
    if not quiet:
        where = f"{truth.node} at {truth.stage}" if truth.verdict == "failure" else "no fault"
        print(f"wrote {out}/logs ({truth.layout}) and {out}/truth.json: {truth.category or 'healthy'} ({where})")
    return 0


def _summary(truths: list[dict], seconds: float) -> None:
    by_source: dict[str, Counter] = {}
    for t in truths:
        by_source.setdefault(t["source"], Counter())[t["category"] or "healthy"] += 1
    print(f"wrote {len(truths)} runs in {seconds:.1f} s")
    for source, counts in sorted(by_source.items()):
        print(f"  {source}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
