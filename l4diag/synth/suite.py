"""A whole labelled evaluation set: synthetic runs of every category plus real-excerpt scenarios."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from .excerpts import find_excerpts
from .faults import STAGES_FOR
from .records import FAULTS, FRAMEWORKS, LAYOUTS, RunSpec
from .run import build_run, write_run

SIZES = {"full": (16, 24), "small": (2, 6)}  # (runs per fault category, healthy runs)


@dataclass(frozen=True)
class SuiteItem:
    name: str
    spec: RunSpec


def plan_suite(size: str, seed: int = 0) -> list[SuiteItem]:
    """Specs for the synthetic part: every category, mixed frameworks, layouts, stages and sizes."""
    per_fault, healthy = SIZES[size]
    rng = random.Random(f"l4diag-suite|{size}|{seed}")
    kinds = [f for f in FAULTS for _ in range(per_fault)] + ["healthy"] * healthy
    max_nodes = 16 if size == "full" else 6
    items = []
    for idx, kind in enumerate(kinds):
        # cycle frameworks and layouts so each category sees most of them, not only what the dice give
        framework = FRAMEWORKS[(idx + idx // len(FRAMEWORKS)) % len(FRAMEWORKS)]
        layout = LAYOUTS[(idx * 3 + idx // len(LAYOUTS)) % len(LAYOUTS)]
        nodes = rng.randint(4, max_nodes)
        if layout == "combined-rank":
            nodes = rng.randint(8, max(8, max_nodes * 2))  # one rank per stream: more of them
        stage = None
        if kind != "healthy":
            allowed = sorted(set(STAGES_FOR[kind]))
            stage = allowed[(idx // 2) % len(allowed)] if size == "full" else None
        run_seed = seed * 100_000 + idx
        name = f"{idx:03d}-{kind}-{framework}-{layout}-n{nodes}"
        items.append(SuiteItem(name, RunSpec(fault=kind, nodes=nodes, framework=framework, layout=layout, seed=run_seed, stage=stage, name=name)))
    return items


def write_suite(outdir: Path, size: str = "full", excerpts_dir: Path | None = None, seed: int = 0) -> list[dict]:
    """Write every run under ``outdir/<run_name>/`` and return their truths."""
    truths = []
    for item in plan_suite(size, seed):
        sim, truth = build_run(item.spec)
        write_run(sim, truth, outdir / item.name)
        truths.append(truth.to_dict())
    if excerpts_dir is not None:
        truths += write_excerpt_scenarios(outdir, excerpts_dir, seed)
    return truths


def write_excerpt_scenarios(outdir: Path, excerpts_dir: Path, seed: int = 0) -> list[dict]:
    """One scenario per excerpt file, each in a different layout and size."""
    truths = []
    rng = random.Random(f"l4diag-excerpts|{seed}")
    for idx, ex in enumerate(find_excerpts(excerpts_dir)):
        layout = LAYOUTS[idx % len(LAYOUTS)]
        nodes = rng.randint(4, 12) if layout != "combined-rank" else rng.randint(8, 16)
        stem = ex.path.stem
        name = f"x{idx:03d}-{ex.info.category}-{stem[:40]}-{layout}"
        spec = RunSpec(fault=ex.info.category, nodes=nodes, framework=ex.info.framework, layout=layout,
                       seed=seed * 100_000 + 50_000 + idx, excerpt=ex.rel, name=name)
        sim, truth = build_run(spec, excerpt=ex)
        write_run(sim, truth, outdir / name)
        truths.append(truth.to_dict())
    return truths
