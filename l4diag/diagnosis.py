"""Combine the scorers into a Diagnosis: ranked templates, ranked nodes, and the located failure."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .model import Diagnosis, EvidenceLine, Finding, NodeScore, Occurrence, Partial, StageChange, TemplateScore
from .rules import RuleSet
from .scoring import crossjob, metrics, patterns, silence, spatial, temporal
from .timeline import with_estimated_times

LEXICAL_RE = re.compile(
    r"(?i)\b(?:error|errors|exception|traceback|fail|failed|failure|fatal|abort|aborted|killed|"
    r"timeout|timed out|crash|segmentation fault|core dumped|panic)\b"
)
MIN_FAULT_WEIGHT = 0.3
FAILURE_THRESHOLD = 0.5
STRONG_MARGIN = 0.1
MAX_EVIDENCE = 8
# A bare traceback or exception says little about its cause; the stage it broke in says more.
GENERIC_CATEGORY_BY_STAGE = {"checkpoint_load": "checkpoint_load", "checkpoint_save": "storage"}


def _by_stage(category: str, subcategory: str, stage: str | None) -> tuple:
    """A generic failure's category refined by the stage it broke in (see GENERIC_CATEGORY_BY_STAGE)."""
    if stage in GENERIC_CATEGORY_BY_STAGE:
        return GENERIC_CATEGORY_BY_STAGE[stage], f"{subcategory}_during_{stage}"
    return category, subcategory


@dataclass
class DiagnoseOptions:
    top: int = 20
    explain: bool = False


@dataclass
class _Item:
    """A failure-indicating occurrence of one key on one node."""

    key: str
    node: str
    occ: Occurrence
    hit: patterns.PatternHit
    weight: float
    template_id: str | None = None
    score: float = 0.0


@dataclass
class _Context:
    partial: Partial
    templates: list
    key_to_template: dict
    key_hits: dict
    node_stats: dict
    nodes: list
    items: dict = field(default_factory=dict)  # node -> [_Item] (fault)
    collateral: dict = field(default_factory=dict)  # node -> [_Item]


def diagnose(partial: Partial, templates: list, rules: RuleSet, baseline=None, options: DiagnoseOptions | None = None,
             paths: list | None = None) -> Diagnosis:
    """The whole reduce-side analysis over a merged Partial and its templates."""
    options = options or DiagnoseOptions()
    key_to_template = {k: t.id for t in templates for k in t.keys}
    key_hits = patterns.classify_keys(partial.keys, rules)
    ctx = _Context(partial, templates, key_to_template, key_hits, with_estimated_times(partial), sorted(partial.nodes))
    _collect_items(ctx, rules)
    template_scores = score_templates(ctx, baseline)
    metric_findings = metrics.find_anomalies(ctx.node_stats)
    silences = silence.silence_scores(ctx.node_stats)
    finding, culprit_reason = locate(ctx, metric_findings, silences)
    node_scores = rank_nodes(ctx, finding, silences, template_scores)
    verdict = _verdict(finding)
    shown = [ts for ts in template_scores if ts.score > 0][: options.top]
    return Diagnosis(
        verdict=verdict,
        finding=finding if verdict != "healthy" else None,
        nodes=node_scores,
        node_stats=ctx.node_stats,
        templates=shown,
        accounting=partial.accounting,
        paths=list(paths or []),
        metrics=_metrics_summary(metric_findings, ctx.node_stats),
        explanations={"culprit": culprit_reason} if culprit_reason else {},
    )


# --- items: which occurrences indicate a failure -------------------------------------------------


def _collect_items(ctx: _Context, rules: RuleSet) -> None:
    own_hits: dict = {}
    for key, per_node in ctx.partial.keys.items():
        key_hit = ctx.key_hits.get(key)
        if key_hit is None or key_hit.is_benign or not (key_hit.is_fault or key_hit.is_collateral):
            continue
        for node, stats in per_node.items():
            hit = key_hit
            if key_hit.mixed:
                # Masking made one key of lines the rules tell apart: judge this node's own line.
                text = stats.first.text
                hit = own_hits.get(text) or own_hits.setdefault(text, patterns.classify_text(text, rules))
                if hit.is_benign or not (hit.is_fault or hit.is_collateral):
                    continue
            item = _Item(key, node, stats.first, hit, hit.fault_weight if hit.is_fault else hit.collateral_weight,
                         ctx.key_to_template.get(key))
            if hit.is_fault and hit.fault_weight >= MIN_FAULT_WEIGHT:
                item.weight = _recovery_discount(item, ctx.node_stats.get(node))
                ctx.items.setdefault(node, []).append(item)
            elif hit.is_collateral:
                ctx.collateral.setdefault(node, []).append(item)
    for node in list(ctx.items):
        _demote_generic_after_collateral(ctx, node)


# A bare traceback printed at or after a node's first collateral line is the wrapper of that
# collateral exception (DistBackendError, the watchdog's abort), not a root cause of its own.
COLLATERAL_SLACK_SECONDS = 5.0
COLLATERAL_SLACK_LINES = 5


def _demote_generic_after_collateral(ctx: _Context, node: str) -> None:
    # A peer-related line (a timeout, an abort, a kill from outside) marks where wrappers of someone
    # else's failure begin, give or take a few seconds; the launcher's teardown follows the node's own
    # crash, so only what comes strictly after it (the launcher's own traceback) is a wrapper.
    collateral = ctx.collateral.get(node, [])
    if not collateral:
        return
    peer = [it for it in collateral if not _launcher_teardown(it)]
    teardown = [it for it in collateral if _launcher_teardown(it)]
    first_peer = min(peer, key=_time_order).occ if peer else None
    first_teardown = min(teardown, key=_time_order).occ if teardown else None
    keep = []
    for it in ctx.items[node]:
        rule = it.hit.fault_rule
        wrapper = (first_peer is not None and _at_or_after(it.occ, first_peer)) or (
            first_teardown is not None and _strictly_after(it.occ, first_teardown))
        if rule.generic and wrapper:
            ctx.collateral[node].append(it)
        else:
            keep.append(it)
    if keep:
        ctx.items[node] = keep
    else:
        del ctx.items[node]


def _at_or_after(occ: Occurrence, ref: Occurrence, seconds: float = COLLATERAL_SLACK_SECONDS,
                 lines: int = COLLATERAL_SLACK_LINES) -> bool:
    """Whether ``occ`` comes at or after ``ref``, give or take ``seconds`` (or ``lines`` of one stream)."""
    if occ.time is not None and ref.time is not None:
        return occ.time >= ref.time - seconds
    return occ.file == ref.file and occ.seq >= ref.seq - lines


def _strictly_after(occ: Occurrence, ref: Occurrence) -> bool:
    if occ.file == ref.file:
        return occ.seq > ref.seq
    return occ.time is not None and ref.time is not None and occ.time > ref.time


def _recovery_discount(item: _Item, stats) -> float:
    """A non-fatal-looking fault line long before the node stopped, with training going on after it, counts less."""
    weight = item.weight
    if stats is None or weight >= 0.9:
        return weight
    lateness = temporal.closeness_to_end(item.occ, stats)
    progressed = (
        item.occ.iteration is not None
        and stats.last_iteration is not None
        and stats.log_interval
        and stats.last_iteration - item.occ.iteration >= 3 * stats.log_interval
    )
    if progressed or lateness < 0.5:
        return weight * (0.35 + 0.5 * lateness)
    return weight


# --- templates ---------------------------------------------------------------------------------


def score_templates(ctx: _Context, baseline) -> list:
    """Score every template from pattern priors, coverage rarity, lateness and cross-job novelty."""
    hits = patterns.template_hits(ctx.templates, ctx.key_hits)
    total = len(ctx.nodes)
    out = []
    for t in ctx.templates:
        hit = hits[t.id]
        scores = {
            "pattern": patterns.pattern_score(hit),
            "spatial": spatial.coverage_rarity(len(t.counts), total),
            "temporal": temporal.template_lateness(t, ctx.node_stats),
        }
        novelty = crossjob.novelty(t, baseline)
        if novelty is not None:
            scores["cross_job"] = novelty
        lexical = 1.0 if LEXICAL_RE.search(t.text) else 0.0
        scores["lexical"] = lexical
        score = _combine_template(scores, hit)
        reasons = [hit.explain()] if hit.fault_rule or hit.collateral_rule or hit.benign_rule else []
        if scores["spatial"] >= 0.5 and total > 2:
            reasons.append(f"printed by {len(t.counts)} of {total} nodes")
        if novelty == 1.0:
            reasons.append("never seen in the healthy baseline")
        cat = hit.fault_rule.category if hit.is_fault else (hit.collateral_rule.category if hit.is_collateral else None)
        out.append(TemplateScore(
            template=t, score=round(score, 4), scores={k: round(v, 4) for k, v in scores.items()},
            category=cat, subcategory=hit.fault_rule.subcategory if hit.is_fault else None,
            rule=(hit.fault_rule or hit.collateral_rule or hit.benign_rule).name if (hit.fault_rule or hit.collateral_rule or hit.benign_rule) else None,
            collateral=hit.is_collateral, benign=hit.is_benign, reasons=reasons,
        ))
    out.sort(key=lambda ts: (-ts.score, ts.template.id))
    return out


def _combine_template(scores: dict, hit: patterns.PatternHit) -> float:
    if hit.is_benign:
        return 0.0
    anomaly_parts = [scores["spatial"], scores["temporal"]]
    if "cross_job" in scores:
        anomaly_parts.append(scores["cross_job"] * 2)
    anomaly = min(1.0, sum(anomaly_parts) / (len(anomaly_parts) + (1 if "cross_job" in scores else 0)))
    base = scores["pattern"]
    if "cross_job" in scores and scores["cross_job"] == 0.0 and not hit.is_fault:
        anomaly *= 0.2
    lexical_factor = 1.0 if scores["lexical"] else 0.3
    return min(1.0, 0.65 * base + 0.35 * anomaly * lexical_factor)


# --- locating the failure ----------------------------------------------------------------------


def _best_item(items: list) -> _Item:
    return max(items, key=lambda it: (it.weight, -(it.occ.time or 0.0), -it.occ.seq))


def _first_time(items: list) -> float | None:
    times = [it.occ.time for it in items if it.occ.time is not None]
    return min(times) if times else None


def locate(ctx: _Context, metric_findings: list, silences: dict) -> tuple:
    """Find the culprit node and what, where and when it failed. Returns (Finding | None, reason)."""
    fault_nodes = {n: items for n, items in ctx.items.items() if items}
    if fault_nodes and all(_generic_only(items) for items in fault_nodes.values()) and len(fault_nodes) > 1:
        stopper = silence.first_stopper(silences)
        if stopper is not None and stopper not in fault_nodes and any(ctx.collateral.values()):
            return _collateral_finding(ctx, silences)
    if fault_nodes:
        strongest = max(_best_item(items).weight for items in fault_nodes.values())
        if strongest >= FAILURE_THRESHOLD or not _failing_metrics(metric_findings):
            culprit, reason = _pick_fault_culprit(ctx, fault_nodes, strongest, silences)
            return _fault_finding(ctx, culprit, fault_nodes[culprit]), reason
    failing = _failing_metrics(metric_findings)
    if failing and not any(f.confirmed for f in failing) and any(ctx.collateral.values()):
        # A jump in the last logged points, with peers timing out: the run stopped, the numbers can't say why.
        return _collateral_finding(ctx, silences)
    if failing:
        first = min(failing, key=lambda f: (f.time is None, f.time or 0.0, f.iteration or 0, f.seq))
        return _metric_finding(ctx, first, failing), f"training metrics: {first.detail}"
    if any(ctx.collateral.values()):
        return _collateral_finding(ctx, silences)
    return None, ""


def _generic_only(items: list) -> bool:
    return all(it.hit.fault_rule.generic for it in items)


def _failing_metrics(findings: list) -> list:
    return [f for f in findings if f.failure]


def _pick_fault_culprit(ctx: _Context, fault_nodes: dict, strongest: float, silences: dict) -> tuple:
    strong = {n: items for n, items in fault_nodes.items() if _best_item(items).weight >= strongest - STRONG_MARGIN}
    strong_items = {n: [it for it in items if it.weight >= strongest - STRONG_MARGIN] for n, items in strong.items()}
    if len(strong) == 1:
        node = next(iter(strong))
        return node, f"only node with a strong fault signature ({_best_item(strong[node]).hit.fault_rule.name})"
    timed = {n: _first_time(items) for n, items in strong_items.items()}
    if all(t is not None for t in timed.values()):
        order = sorted(timed, key=lambda n: (timed[n], -_best_item(strong[n]).weight, n))
        return order[0], "earliest strong fault signature in time among nodes that printed one"
    coverage = {}
    for items in strong_items.values():
        for it in items:
            coverage.setdefault(it.key, set()).add(it.node)

    def rank(n: str) -> tuple:
        best = _best_item(strong[n])
        rarest = min(len(coverage[it.key]) for it in strong_items[n])
        return (-best.weight, rarest, len(ctx.collateral.get(n, [])), -silences.get(n, 0.0), n)

    node = min(strong, key=rank)
    return node, "strongest and rarest fault signature (no timestamps to order nodes)"


def _fault_finding(ctx: _Context, node: str, items: list) -> Finding:
    best = _best_item(items)
    # Category from the strongest signature; among equally strong ones the earliest.
    top = [it for it in items if it.weight >= best.weight - 0.05]
    cause = min(top, key=_time_order)
    first = min((it for it in items if it.weight >= MIN_FAULT_WEIGHT + 0.2), key=_time_order, default=cause)
    rule = cause.hit.fault_rule
    anchor = _exact_anchor(ctx, node, first.occ)
    stage = _stage_of(ctx, node, anchor, rule.stage_hint)
    iteration = _iteration_at(ctx, node, anchor, stage)
    evidence = _evidence(ctx, node, items, first)
    if best.weight < WEAK_FAULT_WEIGHT:
        evidence = _unique_lines([*evidence[:1], *_closing_words(ctx, node, cause), *evidence[1:]])[:MAX_EVIDENCE]
    confidence = _confidence(ctx, node, best.weight)
    category, subcategory = rule.category, rule.subcategory
    if rule.generic:
        category, subcategory = _by_stage(category, subcategory or rule.name, stage)
    summary = _summary(category, subcategory or rule.name, node, stage, iteration, cause.occ.text)
    return Finding(category, subcategory, confidence, summary, node, _ranks(cause.occ.text), stage,
                   iteration, first.occ.time, evidence)


# Below this, a signature names a family (a traceback, a frame) rather than the error itself.
WEAK_FAULT_WEIGHT = 0.5
CLOSING_WORDS = 2


def _closing_words(ctx: _Context, node: str, cause: _Item) -> list:
    """The last lines the cause's stream printed after it, before its teardown or its end: when the error
    line itself is missing (a cut-off traceback), the innermost frames are the most telling lines left."""
    file = cause.occ.file
    teardown = [it.occ.seq for it in ctx.collateral.get(node, []) if it.occ.file == file and it.occ.seq > cause.occ.seq]
    end = min(teardown) if teardown else ctx.node_stats[node].stream_lines.get(file, cause.occ.seq) + 1
    before = Occurrence(file, 0, "", end, None, cause.occ.stage, None)
    words = [(key, occ) for key, occ in _last_words(ctx, node, before) if occ.seq > cause.occ.seq]
    return [_occurrence_line(ctx, node, key, occ, 0.3) for key, occ in words[-CLOSING_WORDS:]]


def _exact_anchor(ctx: _Context, node: str, occ: Occurrence) -> Occurrence:
    """``occ``, or when it has no time of its own (none, or one only carried from an earlier line), the
    same line placed at the time of the node's next timestamped failure line: untimed crash output comes
    just before it (for a line with no time at all, only a later line of the same stream is sure to follow)."""
    if occ.time is not None and occ.time_exact:
        return occ
    later = [it.occ.time for it in [*ctx.items.get(node, []), *ctx.collateral.get(node, [])]
             if it.occ.time is not None and it.occ.time_exact and (
                 (it.occ.file == occ.file and it.occ.seq > occ.seq) or (occ.time is not None and it.occ.time >= occ.time))]
    if not later:
        return occ
    return Occurrence(occ.file, occ.line, occ.text, occ.seq, occ.iteration, occ.stage, min(later))


def _time_order(it: _Item) -> tuple:
    return (it.occ.time is None, it.occ.time or 0.0, it.occ.file, it.occ.seq)


METRIC_FOLLOW_POINTS = 2


def _metric_finding(ctx: _Context, f, failing: list) -> Finding:
    """A divergence seen in the numbers: cited by the line where it began, the lines that showed the
    node's other failing metrics, and the next few lines of the same stream (did it recover? it did not)."""
    stats = ctx.node_stats[f.node]
    point = next((p for p in stats.metrics if p.seq == f.seq and p.iteration == f.iteration), None)
    cited = [point] if point is not None else []
    for other in failing:
        if other.node == f.node and other is not f:
            cited += [p for p in stats.metrics if p.seq == other.seq and p.iteration == other.iteration][:1]
    if point is not None:
        after = sorted((p for p in stats.metrics if p.file == point.file and p.seq > point.seq), key=lambda p: p.seq)
        cited += after[:METRIC_FOLLOW_POINTS]
    evidence = _unique_lines([EvidenceLine(f.node, p.file, p.line, p.text, None, p.iteration, "train", p.time,
                                           round(1.0 - 0.1 * rank, 2)) for rank, p in enumerate(cited)])
    iteration = f.iteration
    if iteration is None and point is not None:
        occ = Occurrence(point.file, point.line, point.text, point.seq, None, "train", point.time)
        iteration = _iteration_at(ctx, f.node, occ, "train", own=False)
    summary = f"Training diverged on {f.node}: {f.detail}."
    return Finding("divergence", f.kind, 0.85, summary, f.node, [], "train", iteration, f.time, evidence)


FIRST_FAIL_LEAD_SECONDS = 2.0
LAST_WORDS = 6
LAST_WORDS_SECONDS = 60.0
# A Python warning (and the ``warnings.warn(`` line under it) is printed by healthy ranks too: never last words.
PYTHON_WARNING_RE = re.compile(r"\b[A-Z]\w*Warning: |^\s*(?:\S+\s+)?warnings\.warn\(")
# Exit status 1 is what Python returns on an uncaught exception (a signal gives a negative code).
EXIT_CODE_ONE_RE = re.compile(r"exitcode\s*:\s*1\b|\(exitcode: 1\)|exits with return code = 1\b")
TRACEBACK_FRAME_RE = re.compile(r'(?:^|\]:)\s*File "[^"]+", line \d+|Traceback \(most recent call last\)')


def _collateral_finding(ctx: _Context, silences: dict) -> tuple:
    """Only collateral lines: a peer died without a known signature, or hung. Find it by who went first."""
    all_items = [it for items in ctx.collateral.values() for it in items]
    ordered = sorted(all_items, key=_time_order)
    # A generic exception demoted as a wrapper says less about the failure than the first real collateral line.
    first_coll = next((it for it in ordered if it.hit.collateral_rule is not None), ordered[0])
    failer = _first_to_fail(ctx)
    if failer is not None:
        return _first_failer_finding(ctx, failer), (
            "its launcher reported the first failure, well before any other node timed out")
    stopper = silence.first_stopper(silences)
    if stopper is not None and _own_teardown_items(ctx, stopper):
        # It went quiet because its process exited (its teardown just carries no time): a crash, not a hang.
        return _first_failer_finding(ctx, stopper), (
            "stopped logging first, and its launcher reported its worker's exit")
    quiet = [n for n in ctx.nodes if not ctx.collateral.get(n)]
    noisy = [n for n in ctx.nodes if ctx.collateral.get(n)]
    if stopper is not None:
        node, reason = stopper, "stopped logging first while the other nodes later reported timeouts"
    elif len(quiet) == 1 and len(noisy) >= 2:
        node, reason = quiet[0], "the only node that printed no timeout or abort while all others did"
    else:
        node, reason = None, ""
    if node is not None:
        stats = ctx.node_stats[node]
        last = _last_occurrence(ctx, node)
        # The run stopped progressing when the node went quiet; a quiet rank's own last line may be far
        # older (Megatron ranks print nothing while training), so read the run's progress just before
        # the first timeout instead, when that is later.
        anchor = last
        after = [it.occ.time for it in all_items
                 if it.occ.time is not None and (last is None or last.time is None or it.occ.time >= last.time)]
        if last is not None and after:
            anchor = Occurrence(last.file, last.line, last.text, last.seq, None, last.stage, min(after))
        stage = _stage_of(ctx, node, anchor, None) if anchor else stats.last_stage
        iteration = _iteration_at(ctx, node, anchor, stage, own=False) if anchor else stats.last_iteration
        evidence = []
        if last is not None:
            evidence.append(EvidenceLine(node, last.file, last.line, last.text, None, last.iteration, stage, last.time, 0.6))
        evidence += [_evidence_line(it, 0.5) for it in sorted(all_items, key=_time_order)[:2]]
        summary = _summary("hang", "no_progress", node, stage, iteration,
                           "went silent; the other nodes timed out waiting for it")
        return Finding("hang", "no_progress", 0.6, summary, node, [], stage, iteration, last.time if last else None,
                       evidence), reason
    rule = first_coll.hit.collateral_rule or first_coll.hit.fault_rule  # a generic fault demoted to collateral
    category = rule.category if rule.category in ("network", "hang", "hardware", "storage", "oom", "software") else "unknown"
    stage = _stage_of(ctx, first_coll.node, first_coll.occ, None)
    iteration = _iteration_at(ctx, first_coll.node, first_coll.occ, stage)
    evidence = [_evidence_line(it, 0.5) for it in sorted(all_items, key=_time_order)[:MAX_EVIDENCE]]
    summary = _summary(category, rule.name, first_coll.node, stage, iteration, first_coll.occ.text)
    return Finding(category, rule.name, 0.35, summary, first_coll.node, _ranks(first_coll.occ.text), stage, iteration,
                   first_coll.occ.time, evidence), "first node to report a collective timeout; no root-cause line found"


def _first_to_fail(ctx: _Context) -> str | None:
    """The node whose first teardown line came clearly before every other node's (a crash, not a hang)."""
    firsts = {}
    for node, items in ctx.collateral.items():
        # Only the node's own teardown counts (its process exited, its launcher stopped the others): a
        # watchdog timeout means the node was still alive, waiting for someone else, and a teardown the
        # launcher began because it was itself signalled was ordered from outside.
        times = [it.occ.time for it in _own_teardown_items(ctx, node) if it.occ.time is not None]
        if times:
            firsts[node] = min(times)
    order = sorted(firsts, key=lambda n: (firsts[n], n))
    if not order:
        return None
    if len(order) == 1:
        # Everyone else only waited or was stopped from outside: the one node whose process exited went first.
        others_reacted = any(ctx.collateral.get(n) for n in ctx.nodes if n != order[0])
        return order[0] if others_reacted else None
    if firsts[order[1]] - firsts[order[0]] >= FIRST_FAIL_LEAD_SECONDS:
        return order[0]
    return None


KILL_SLACK_SECONDS = 1.0


def _own_teardown_items(ctx: _Context, node: str) -> list:
    """The node's lines saying its own process ended: not a wait for a peer, not a wrapper exception, and
    not the teardown its launcher began because it was itself signalled from outside."""
    items = ctx.collateral.get(node, [])
    kills = [it.occ for it in items if _killed_from_outside(it)]
    out = []
    for it in items:
        if it.hit.collateral_rule is None or _is_waiting(it) or _killed_from_outside(it):
            continue
        if any(_at_or_after(it.occ, kill, KILL_SLACK_SECONDS, 0) for kill in kills):
            continue
        out.append(it)
    return out


def _launcher_teardown(it: _Item) -> bool:
    rule = it.hit.collateral_rule
    return rule is not None and rule.subcategory == "launcher_teardown"


def _killed_from_outside(it: _Item) -> bool:
    rule = it.hit.collateral_rule
    return rule is not None and rule.subcategory == "killed_from_outside"


def _is_waiting(it: _Item) -> bool:
    rule = it.hit.collateral_rule
    return rule is not None and rule.category in ("hang", "network")


def _last_words(ctx: _Context, node: str, before: Occurrence) -> list:
    """The few lines a node printed just before ``before`` (from the kept first/last occurrences): the
    lines just above it in its own stream, and what the node's other streams (its workers' logs)
    printed in the last minute before it; lines long before it say nothing of how it ended."""
    seen = {}
    for key, per_node in ctx.partial.keys.items():
        stats = per_node.get(node)
        if stats is None:
            continue
        for occ in (stats.first, stats.last):
            if _just_before(occ, before) and not PYTHON_WARNING_RE.search(occ.text):
                hit = ctx.key_hits.get(key)
                if hit is None or not (hit.is_benign or hit.is_collateral):
                    seen[(occ.file, occ.seq)] = (key, occ)
    if before.time is None:  # then only lines of its own stream qualify: their order is the stream's
        ordered = sorted(seen.values(), key=lambda ko: ko[1].seq)
    else:
        ordered = sorted(seen.values(), key=lambda ko: (ko[1].time is None, ko[1].time or 0.0,
                                                        ko[1].file != before.file, ko[1].file, ko[1].seq))
    return ordered[-LAST_WORDS:]


def _just_before(occ: Occurrence, before: Occurrence) -> bool:
    # A time only carried from an earlier line says nothing of how recent the line is.
    recent = (occ.time is None or not occ.time_exact or before.time is None
              or before.time - LAST_WORDS_SECONDS <= occ.time <= before.time)
    if occ.file == before.file:
        return before.seq - 4 * LAST_WORDS <= occ.seq < before.seq and recent
    return occ.time is not None and occ.time_exact and before.time is not None and recent and occ.time < before.time


def _first_failer_finding(ctx: _Context, node: str) -> Finding:
    first = min(ctx.collateral[node], key=_time_order)
    words = _last_words(ctx, node, first.occ)
    anchor = _exact_anchor(ctx, node, words[0][1]) if words else first.occ
    stage = _stage_of(ctx, node, anchor, None)
    iteration = _iteration_at(ctx, node, anchor, stage)
    exit_one = _exit_status_one(ctx, node)
    crashed_in_python = (
        any(TRACEBACK_FRAME_RE.search(occ.text) for _, occ in words)
        or any(it.hit.fault_rule is not None and it.hit.fault_rule.generic for it in ctx.collateral[node])
        or exit_one is not None)
    first_rule = first.hit.collateral_rule or first.hit.fault_rule
    # A teardown line that also matches a specific signature (a launcher reporting SIGKILL) hints the cause.
    hinted = sorted((it for it in ctx.collateral[node] if it.hit.fault_rule is not None
                     and not it.hit.fault_rule.generic), key=lambda it: (-it.hit.fault_weight, _time_order(it)))
    if first_rule is not None and first_rule.category in ("hang", "network"):
        # It timed out first: it was waiting on a collective that never completed.
        category, subcategory = first_rule.category, first_rule.name
    elif hinted:
        hint = hinted[0].hit.fault_rule
        category, subcategory = hint.category, hint.subcategory or hint.name
    elif crashed_in_python:
        category, subcategory = "software", "python_exception"
    else:
        category, subcategory = "unknown", "process_exited"
    if category == "software":
        category, subcategory = _by_stage(category, subcategory, stage)
    evidence = [_evidence_line(it, it.hit.fault_weight) for it in hinted[:1]]
    if exit_one is not None and category == "software":
        evidence.append(_occurrence_line(ctx, node, *exit_one, 0.5))
    # Words every node printed (the same warning on all ranks) say nothing about why this one ended.
    rare = [(key, occ) for key, occ in words if len(ctx.partial.keys[key]) <= max(1, len(ctx.nodes) // 2)]
    evidence += [_occurrence_line(ctx, node, key, occ, 0.5) for key, occ in reversed(rare)]
    evidence += [_evidence_line(it, 0.4) for it in sorted(ctx.collateral[node], key=_time_order)[:1]]
    evidence = _unique_lines(evidence)
    summary = _summary(category, subcategory, node, stage, iteration,
                       "its process exited first; the other nodes timed out later")
    return Finding(category, subcategory, 0.6, summary, node, [], stage, iteration, first.occ.time, evidence)


def _exit_status_one(ctx: _Context, node: str) -> tuple | None:
    """(key, occurrence) of the line where the node's launcher reported a worker exit status of 1 (an
    uncaught Python exception), if it did."""
    for key, per_node in ctx.partial.keys.items():
        stats = per_node.get(node)
        if stats is not None and "exit" in key and EXIT_CODE_ONE_RE.search(stats.first.text):
            return key, stats.first
    return None


def _unique_lines(evidence: list) -> list:
    """Evidence without a line cited twice (the first citation keeps its place)."""
    seen, out = set(), []
    for e in evidence:
        if (e.file, e.line) not in seen:
            seen.add((e.file, e.line))
            out.append(e)
    return out


def _occurrence_line(ctx: _Context, node: str, key: str, occ: Occurrence, score: float) -> EvidenceLine:
    return EvidenceLine(node, occ.file, occ.line, occ.text, ctx.key_to_template.get(key), occ.iteration, occ.stage,
                        occ.time, score)


def _last_occurrence(ctx: _Context, node: str) -> Occurrence | None:
    last = None
    for per_node in ctx.partial.keys.values():
        stats = per_node.get(node)
        if stats is not None and (last is None or (stats.last.file, stats.last.seq) > (last.file, last.seq)):
            last = stats.last
    return last


# --- stage and iteration -----------------------------------------------------------------------


def _reference_nodes(ctx: _Context) -> list:
    """Nodes that log iterations or stage markers, most informative first."""
    return sorted(
        (n for n, s in ctx.node_stats.items() if s.has_stage_markers),
        key=lambda n: (-len(ctx.node_stats[n].iteration_times), -len(ctx.node_stats[n].stage_changes), n),
    )


def _stage_of(ctx: _Context, node: str, occ: Occurrence, hint: str | None) -> str:
    """The stage at ``occ``: the latest stage change before it, on the node itself or on the nodes that log markers."""
    stats = ctx.node_stats[node]
    stage = occ.stage
    if occ.time is not None:
        own = [(c, True) for c in (_with_its_line(c, occ) for c in [*stats.stage_changes, *_progress(stats, occ.time)])
               if c.time is not None and c.time <= occ.time]
        refs = [(c, False) for ref in _reference_nodes(ctx)[:3] if ref != node
                for c in [*ctx.node_stats[ref].stage_changes, *_progress(ctx.node_stats[ref], occ.time)]
                if c.time is not None and c.time <= occ.time]
        latest = _latest_of(own + refs)
        if latest is not None:
            stage = latest.stage
    elif _stream_without_markers(occ) and temporal.closeness_to_end(occ, stats) > 0.5:
        # No time and no markers in its own stream (a per-rank stderr, a quiet Megatron rank): the
        # line came late in its stream, so take where the node, or the run, had got to.
        refs = _reference_nodes(ctx)
        if stats.has_stage_markers:
            stage = _progress_stage(stats)
        elif refs:
            stage = _progress_stage(ctx.node_stats[refs[0]])
    if hint and stage in ("init", "train") and hint != stage:
        stage = hint
    return stage


def _progress(stats, t: float) -> list:
    """The node's last iteration line at or before ``t``, as a change into ``train`` at that iteration: a
    run that logged iteration N had left any stage entered at an earlier iteration."""
    marks = [m for m in stats.iteration_times if m.time is not None and m.time <= t]
    if not marks:
        return []
    m = max(marks, key=lambda m: (m.iteration, m.time))
    return [StageChange(m.time, m.seq, "train", m.iteration, m.file, m.estimated, None, m.iteration)]


# Untimed lines this close above a line in the same stream were printed with it (a traceback is one burst).
BURST_LINES = 30


def _with_its_line(change: StageChange, occ: Occurrence) -> StageChange:
    """An estimated change a few lines above ``occ`` in its stream (a traceback frame in the checkpoint
    writer): placed at ``occ``'s time, which is surer than spreading the stream's lines evenly over time."""
    if change.estimated and change.file == occ.file and 0 <= occ.seq - change.seq <= BURST_LINES:
        return change._replace(time=occ.time, earliest=occ.time)
    return change


def _progress_stage(stats) -> str:
    """The stage a node's markers last moved it to, over all its streams (a launcher log that ends
    last but has no markers does not take the node back to init)."""
    timed = [c for c in stats.stage_changes if c.time is not None]
    if timed:
        return max(timed, key=lambda c: (c.time, c.seq)).stage
    return stats.stage_changes[-1].stage if stats.stage_changes else stats.last_stage


def _stream_without_markers(occ: Occurrence) -> bool:
    return occ.stage == "init" and occ.iteration is None


def _latest_of(candidates: list) -> StageChange | None:
    """The last of (change, is_own) candidates (see ``_is_later``)."""
    latest, latest_own = None, False
    for change, own in sorted(candidates, key=lambda c: (c[0].time, c[0].seq)):
        if latest is None or _is_later(change, own, latest, latest_own):
            latest, latest_own = change, own
    return latest


def _is_later(change: StageChange, own: bool, latest: StageChange, latest_own: bool) -> bool:
    """Whether ``change`` (no earlier in time) came after ``latest``. Iteration numbers are the run's own
    clock; within a stream, line order is certain; an estimated time (see timeline.py) only wins when
    its sure lower bound does, or against another estimate unless it is another node's against the
    node's own: estimates are too rough to order otherwise."""
    if change.iteration is not None and latest.until is not None:
        if change.iteration != latest.until:
            return change.iteration > latest.until
        # "saving checkpoint at iteration N" comes after the step that logged N, whichever is seen first
        if latest.stage == "train" and change.stage != "train":
            return True
        if change.stage == "train" and latest.stage != "train" and change.until == change.iteration:
            return False
    if own == latest_own and change.file == latest.file:
        return change.seq > latest.seq
    if not change.estimated:
        return True
    if change.earliest is not None and change.earliest >= latest.time:
        return True
    return latest.estimated and (own or not latest_own)


def _stage_at_time(ctx: _Context, t: float) -> str | None:
    for ref in _reference_nodes(ctx):
        changes = [c for c in ctx.node_stats[ref].stage_changes if c.time is not None]
        if not changes:
            continue
        stage = "init"
        for change in changes:
            if change.time <= t:
                stage = change.stage
        return stage
    return None


def _iteration_at(ctx: _Context, node: str, occ: Occurrence, stage: str | None, own: bool = True) -> int | None:
    """The last iteration logged before ``occ``: the node's own when it logs them, else aligned by time."""
    stats = ctx.node_stats[node]
    if own and stats.iteration_times and (occ.iteration is not None or occ.time is None):
        if occ.iteration is None and _stream_without_markers(occ) and stage in ("train", "checkpoint_save"):
            return stats.last_iteration
        return occ.iteration
    if occ.time is not None:
        best = None
        for other in ctx.node_stats.values():
            last_timed = None
            for mark in other.iteration_times:
                # Estimated times order stages well enough, but not single iterations: treat them as untimed.
                it, when = mark.iteration, None if mark.estimated else mark.time
                if when is not None:
                    last_timed = when
                # An untimed iteration line after a timed one before the failure may also precede it
                # (progress bars carry no time): count it rather than stop at the last timed one.
                known_before = when is not None and when <= occ.time
                maybe_before = when is None and last_timed is not None and last_timed <= occ.time
                if (known_before or maybe_before) and (best is None or it > best):
                    best = it
        if best is not None:
            return best
        if any(m.time is not None and not m.estimated for s in ctx.node_stats.values() for m in s.iteration_times):
            return None  # iterations carry times, and none came before the failure
    if stage in ("train", "checkpoint_save", "shutdown"):
        refs = [s for s in ctx.node_stats.values() if s.last_iteration is not None]
        if refs:
            return max(s.last_iteration for s in refs)
    return None


# --- evidence, nodes, confidence -------------------------------------------------------------------


def _evidence_line(it: _Item, score: float) -> EvidenceLine:
    occ = it.occ
    return EvidenceLine(it.node, occ.file, occ.line, occ.text, it.template_id, occ.iteration, occ.stage, occ.time,
                        round(score, 4))


def _evidence(ctx: _Context, node: str, items: list, first: _Item) -> list:
    """The culprit's failure-indicating lines, most telling first; the first one in time always included."""
    specific = [it for it in items if not it.hit.fault_rule.generic]
    # A bare traceback start or generic exception adds little beside a specific signature.
    pool = specific if specific else items
    ranked = sorted(pool, key=lambda it: (-it.weight, _time_order(it)))
    chosen = []
    seen_templates = set()
    for it in [*ranked]:
        tid = it.template_id or it.key
        if tid in seen_templates:
            continue
        seen_templates.add(tid)
        chosen.append(_evidence_line(it, it.weight))
        if len(chosen) >= MAX_EVIDENCE:
            break
    if all((e.file, e.line) != (first.occ.file, first.occ.line) for e in chosen):
        if len(chosen) >= MAX_EVIDENCE:
            chosen.pop()
        chosen.append(_evidence_line(first, first.weight))
    return chosen


def _confidence(ctx: _Context, node: str, weight: float) -> float:
    corroborated = any(ctx.collateral.get(n) for n in ctx.nodes if n != node) or len(ctx.nodes) == 1
    suspects = [n for n, items in ctx.items.items() if n != node and _best_item(items).weight >= weight - 0.05]
    conf = 0.55 * weight + (0.25 if corroborated else 0.1) + (0.2 if not suspects else 0.05)
    return round(min(1.0, conf), 3)


RANK_RE = re.compile(r"\[?\b[Rr]ank[ :]?(\d{1,6})\b")


def _ranks(text: str) -> list:
    return sorted({int(m) for m in RANK_RE.findall(text)})[:16]


def rank_nodes(ctx: _Context, finding: Finding | None, silences: dict, template_scores: list) -> list:
    """Every node with a role and a score, most suspicious first."""
    exclude = {ts.template.id for ts in template_scores if ts.benign}
    forest = spatial.isolation_scores(ctx.templates, ctx.nodes, exclude)
    culprit = finding.node if finding else None
    out = []
    for node in ctx.nodes:
        items = ctx.items.get(node, [])
        fault = _best_item(items).weight if items else 0.0
        coll = 1.0 if ctx.collateral.get(node) else 0.0
        score = 0.6 * fault + 0.2 * silences.get(node, 0.0) + 0.1 * forest.get(node, 0.0) + 0.1 * coll * 0.3
        reasons = []
        if items:
            reasons.append(_best_item(items).hit.explain())
        if silences.get(node):
            reasons.append("stopped logging before the other nodes")
        if coll:
            reasons.append(f"{len(ctx.collateral[node])} collateral line type(s) (timeouts, aborts, SIGTERM)")
        if node == culprit:
            role, score = "culprit", max(1.0, score)
        elif fault >= 0.8:
            role = "suspect"
        elif coll or fault > 0:
            role = "collateral"
        else:
            role = "normal"
        out.append(NodeScore(node, round(score, 4), role, reasons,
                             {"fault": fault, "silence": silences.get(node, 0.0), "spatial": forest.get(node, 0.0)}))
    out.sort(key=lambda ns: (ns.role != "culprit", -ns.score, ns.node))
    return out


def _verdict(finding: Finding | None) -> str:
    if finding is None:
        return "healthy"
    if finding.confidence >= FAILURE_THRESHOLD:
        return "failure"
    return "inconclusive" if finding.confidence >= 0.3 else "healthy"


def _summary(category: str, what: str, node: str | None, stage: str | None, iteration: int | None, line: str) -> str:
    where = f"on {node}" if node else "on an unidentified node"
    when = f" at iteration {iteration}" if iteration is not None else ""
    quoted = line.strip()
    if len(quoted) > 160:
        quoted = quoted[:157] + "..."
    return f"{category.replace('_', ' ').capitalize()} fault ({what}) {where} during {stage or 'an unknown stage'}{when}: {quoted}"


def _metrics_summary(findings: list, node_stats: dict) -> dict:
    out = {"findings": [
        {"kind": f.kind, "node": f.node, "iteration": f.iteration, "detail": f.detail, "failure": f.failure}
        for f in findings
    ]}
    slow = metrics.stragglers(node_stats)
    if slow:
        out["stragglers"] = {n: round(r, 3) for n, r in sorted(slow.items())}
    return out
