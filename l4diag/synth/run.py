"""Build one labelled run (healthy, synthetic fault, or real excerpt) and write it to disk."""

from __future__ import annotations

import json
import random
from pathlib import Path

from . import clock, faults
from .excerpts import Excerpt, evidence_indices
from .faults import SynthError
from .layouts import ordered, render, write_layout
from .records import FAULTS, FRAMEWORKS, LAYOUTS, Line, Node, RunSpec, Truth
from .simulate import Simulation

FAULT_FUNCS = {
    "hardware": faults.fault_hardware,
    "network": faults.fault_network,
    "storage": faults.fault_storage,
    "checkpoint_load": faults.fault_checkpoint_load,
    "oom": faults.fault_oom,
    "software": faults.fault_software,
}
MAX_EVIDENCE = 8


def validate(spec: RunSpec) -> None:
    if spec.fault not in FAULTS and spec.fault != "healthy" and spec.excerpt is None:
        raise SynthError(f"unknown fault {spec.fault!r}; choose healthy or one of {', '.join(FAULTS)}")
    if spec.framework not in FRAMEWORKS:
        raise SynthError(f"unknown framework {spec.framework!r}; choose one of {', '.join(FRAMEWORKS)}")
    if spec.layout not in LAYOUTS:
        raise SynthError(f"unknown layout {spec.layout!r}; choose one of {', '.join(LAYOUTS)}")
    if not 2 <= spec.nodes <= 256:
        raise SynthError("--nodes must be between 2 and 256")
    if spec.fault == "healthy" and spec.stage is not None:
        raise SynthError("--stage only applies to a fault")


def run_rng(spec: RunSpec) -> random.Random:
    """One random stream per run, from a string seed (stable across processes, no hash randomization)."""
    return random.Random(f"l4diag-synth|{spec.seed}|{spec.fault}|{spec.framework}|{spec.layout}|{spec.nodes}|{spec.stage}|{spec.excerpt}")


def build_run(spec: RunSpec, excerpt: Excerpt | None = None) -> tuple[Simulation, Truth]:
    validate(spec)
    rng = run_rng(spec)
    if excerpt is not None:
        return _build_excerpt(spec, rng, excerpt)
    if spec.fault == "healthy":
        sim = Simulation(spec, rng)
        sim.build_healthy()
        return sim, _truth(sim, spec, "healthy", None, None, None, None, [], source="synthetic")
    stage = faults.pick_stage_for(rng, spec.fault, spec.stage)
    sim = Simulation(spec, rng, need_resume=stage == "checkpoint_load")
    if spec.fault == "divergence":
        return _build_divergence(sim, spec)
    culprit = sim.nodes[rng.randrange(len(sim.nodes))]
    if spec.fault == "hang":
        t_f, _ = faults.pick_fault_time(sim, stage)
        sim.build_healthy()
        sim.cut(t_f)
        for node in sim.nodes:
            if node is not culprit:
                done = faults.watchdog_timeout(sim, node, t_f + sim.timeout_ms / 1000.0 + rng.uniform(0.0, 2.0))
                faults.launcher_failure(sim, node, rng.randrange(node.gpus), done, -6)
        return sim, _truth(sim, spec, "failure", "hang", "silent_node", culprit, stage, [], t_first=t_f)
    if spec.fault == "network" and stage == "init" and rng.random() < 0.5:
        sim.build_healthy()
        for node in sim.nodes:  # nobody gets past the launcher banner
            node.lines = [ln for ln in node.lines if ln.local_rank is None and ln.t <= node.start_delay + 0.5]
        sub, _ = faults.fault_rendezvous(sim, culprit, max(n.start_delay for n in sim.nodes) + 1.0)
        return sim, _truth(sim, spec, "failure", "network", sub, culprit, stage, _evidence_lines(culprit))
    t_f, _ = faults.pick_fault_time(sim, stage)
    sim.build_healthy()
    sim.cut(t_f)
    lr = rng.randrange(culprit.gpus)
    sub, code = FAULT_FUNCS[spec.fault](sim, culprit, lr, t_f, stage)
    # After the fault even when it left no line of its own (a host OOM kill can be silent) and the node's
    # last line is from long before (only rank 0 logs during training).
    t_launch = max([t_f, *(ln.t for ln in culprit.lines)]) + rng.uniform(1.0, 5.0)
    faults.launcher_failure(sim, culprit, lr, t_launch, code, evidence=sub == "host_oom_kill")
    faults.collateral(sim, culprit, t_f)
    return sim, _truth(sim, spec, "failure", spec.fault, sub, culprit, stage, _evidence_lines(culprit))


def _build_divergence(sim: Simulation, spec: RunSpec) -> tuple[Simulation, Truth]:
    rng = sim.rng
    culprit = sim.printer
    iters = [e for e in sim.events if e.kind == "iter"]
    sim.diverge_at = iters[rng.randint(6, len(iters) - 12)].iteration
    crash = sim.fw == "megatron" or (sim.fw == "deepspeed" and sim.fp16)
    crash = crash and rng.random() < 0.65
    sim.build_healthy()
    sub = "loss_blowup_nan"
    if crash:
        nan_line = next(ln for ln in ordered(culprit) if ln.iteration is not None and ln.evidence and "nan" in ln.text.lower())
        t_crash = nan_line.t + 0.4
        sim.cut(t_crash)
        sub, code = faults.fault_divergence_crash(sim, culprit, 0, t_crash)
        faults.launcher_failure(sim, culprit, 0, t_crash + rng.uniform(1.0, 4.0), code)
        faults.collateral(sim, culprit, t_crash)
    return sim, _truth(sim, spec, "failure", "divergence", sub, culprit, "train", _evidence_lines(culprit))


def _build_excerpt(spec: RunSpec, rng: random.Random, ex: Excerpt) -> tuple[Simulation, Truth]:
    """Inject the excerpt on one node of a healthy run, at its stated stage, then collateral. Its text is kept
    verbatim except for wall-clock timestamps, which move onto the run's clock (see ``clock.retime``)."""
    info = ex.info
    ex_iters = [i for i in ex.iterations if i is not None]
    hint = ex_iters[0] if ex_iters else None
    sim = Simulation(spec, rng, need_resume=info.stage == "checkpoint_load" or hint is not None, first_iteration_hint=hint)
    culprit = sim.printer if (ex_iters or info.category == "divergence") else sim.nodes[rng.randrange(len(sim.nodes))]
    t_f, ev = faults.pick_fault_time(sim, info.stage)
    if hint is not None and ev is not None:
        sim.shift_iterations(hint - sim.log_interval - ev.iteration)
    sim.build_healthy()
    sim.cut(t_f)
    picked = set(evidence_indices(ex))
    lr = None if info.kernel else rng.randrange(culprit.gpus)
    texts, offsets = clock.retime(ex.lines, sim.epoch(culprit, t_f))
    for k, text in enumerate(texts):
        sim.add(culprit, t_f + offsets[k] + k * 0.001, text, lr, stream="stderr", iteration=ex.iterations[k],
                evidence=k in picked, fault=True, raw=True)
    t_end = t_f + offsets[-1] if offsets else t_f  # a hang excerpt can span hours of heartbeat lines
    body = "\n".join(ex.lines)
    # A hung node's workers do not exit: only its peers time out and tear down (as in the synthetic hangs).
    ends_itself = any(s in body for s in ("Root Cause", "FAILED", "sigkill_handler", "exitcode"))
    if info.category != "hang" and not ends_itself:
        faults.launcher_failure(sim, culprit, lr or 0, t_end + 2.0, 1)
    faults.collateral(sim, culprit, t_end)
    verdict = "failure"
    truth = _truth(sim, spec, verdict, info.category, info.subcategory, culprit, info.stage, _evidence_lines(culprit),
                   source="real_excerpt", excerpt=ex.rel, t_first=None if picked else t_f)
    return sim, truth


def _evidence_lines(node: Node) -> list[Line]:
    return [ln for ln in ordered(node) if ln.evidence][:MAX_EVIDENCE]


def _truth(sim: Simulation, spec: RunSpec, verdict: str, category: str | None, sub: str | None, culprit: Node | None,
           stage: str | None, evidence: list[Line], source: str = "synthetic", excerpt: str | None = None,
           t_first: float | None = None) -> Truth:
    if t_first is None and evidence:
        t_first = evidence[0].t
    first_ev = evidence[0] if evidence else None
    return Truth(
        verdict=verdict,
        category=category,
        subcategory=sub,
        node=culprit.name if culprit else None,
        stage=stage,
        iteration=truth_iteration(sim, culprit, stage, t_first, first_ev) if verdict == "failure" else None,
        log_interval=sim.log_interval,
        framework=spec.framework,
        layout=spec.layout,
        source=source,
        excerpt=excerpt,
        evidence=[render(sim, culprit, ln) for ln in evidence] if culprit else [],
        nodes=spec.nodes,
        seed=spec.seed,
        node_ids=[n.name for n in sim.nodes],
    )


def truth_iteration(sim: Simulation, culprit: Node | None, stage: str | None, t_first: float | None,
                    first_ev: Line | None) -> int | None:
    """Last iteration logged before the first failure-indicating line (DESIGN.md), null before training."""
    if stage in ("init", "checkpoint_load") or t_first is None:
        return None
    logged = []
    for node in {id(sim.printer): sim.printer, id(culprit): culprit}.values():
        for ln in ordered(node):
            if ln is first_ev:
                break
            if ln.iteration is not None and ln.t <= t_first:
                logged.append(ln.iteration)
    return max(logged) if logged else None


def write_run(sim: Simulation, truth: Truth, outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    write_layout(sim, outdir / "logs", truth.layout)
    (outdir / "truth.json").write_text(json.dumps(truth.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
