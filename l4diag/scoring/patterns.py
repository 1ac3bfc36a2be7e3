"""Pattern priors: known fault signatures, collateral lines and benign lines, matched per masked key."""

from __future__ import annotations

import re
from dataclasses import dataclass


from ..lines import line_body
from ..model import Template
from ..rules import RuleIndex, RuleSet

# A collateral match outweighs a fault match below this weight (a watchdog timeout that also
# matches a generic RuntimeError rule is still collateral).
COLLATERAL_OVERRIDES_BELOW = 0.75


@dataclass
class PatternHit:
    """What the rules say about one key or template."""

    fault_rule: object = None
    fault_weight: float = 0.0
    collateral_rule: object = None
    collateral_weight: float = 0.0
    benign_rule: object = None
    mixed: bool = False  # the key's lines on different nodes matched different rules (exit codes -6 and -9)

    @property
    def is_fault(self) -> bool:
        return self.fault_rule is not None and self.benign_rule is None and not self.is_collateral

    @property
    def is_collateral(self) -> bool:
        return (
            self.collateral_rule is not None
            and self.benign_rule is None
            and (self.fault_rule is None or self.fault_weight < COLLATERAL_OVERRIDES_BELOW)
        )

    @property
    def is_benign(self) -> bool:
        return self.benign_rule is not None

    def explain(self) -> str:
        if self.is_benign:
            return f"matches benign rule {self.benign_rule.name}"
        if self.is_fault:
            return f"matches fault signature {self.fault_rule.name} ({self.fault_rule.category}, weight {self.fault_weight:.2f})"
        if self.is_collateral:
            return f"matches collateral rule {self.collateral_rule.name} (printed when a peer fails)"
        return "matches no rule"


def rule_indexes(rules: RuleSet) -> tuple:
    """RuleIndex of the benign, fault and collateral rules, for ``classify_text`` on many lines."""
    return RuleIndex(rules.benign), RuleIndex(rules.faults), RuleIndex(rules.collateral)


def classify_text(text: str, rules: RuleSet, indexes: tuple | None = None) -> PatternHit:
    """Match one raw line, and its body after the timestamp, against the fault, collateral and benign rules.
    ``indexes`` (``rule_indexes(rules)``) skips the rules that cannot match: same hit, less time."""
    hit = PatternHit()
    body = line_body(text)
    texts = (text,) if body == text else (text, body)
    if indexes is None:
        benign, faults, collateral = rules.benign, rules.faults, rules.collateral
    else:
        benign, faults, collateral = (index.candidates(texts) for index in indexes)

    def matches(rule) -> bool:
        return any(rule.search(t) for t in texts)

    for rule in benign:
        if matches(rule):
            hit.benign_rule = rule
            break
    for rule in faults:
        if rule.weight > hit.fault_weight and matches(rule):
            hit.fault_rule, hit.fault_weight = rule, rule.weight
    for rule in collateral:
        if rule.weight > hit.collateral_weight and matches(rule):
            hit.collateral_rule, hit.collateral_weight = rule, rule.weight
    return hit


# Words at least one of which every fault, collateral and benign line carries (a test checks every
# rule's example). Lines without any are not matched against the rules: a fast first cut.
ALARM_WORDS_RE = re.compile(
    r"(?i)err|fail|fatal|exception|traceback|timeout|timed out|time limit|abort|kill|sig[a-z]{2,4}|signal|xid|ecc|nvrm|"
    r"nvlink|pcie|aer|warn|nan\b|\binf\b|oom|memory|denied|refused|reset|closed|lost|quota|space|stale|"
    r"read-only|segmentation|exit|assert|corrupt|mismatch|missing|unexpected|cannot|can't|unable|invalid|"
    r"not found|no such|bus|hang|stuck|heartbeat|overflow|skipp|terminat|cancel|interrupt|ib[a-z_]*|nccl|"
    r"cuda|gpu|retry|deprecat|core dumped|panic|unreachable|down|crash|size|key|shape|checkpoint|ckpt|"
    r"zero|world|rendezvous|store|socket|connect|peer|watchdog|collective|loss|norm|scale|disk|file|"
    r"lustre|gpfs|mmfs|s3|botocore|throttl|slow|mce|machine check|hardware|thermal|throttle|power|reboot|"
    r"alert|shard|grad|integrity|did not|not running"
)


def classify_keys(partial_keys: dict, rules: RuleSet) -> dict:
    """PatternHit per masked key, from the raw text of its first occurrence on up to four nodes."""
    out = {}
    empty = PatternHit()
    indexes = rule_indexes(rules)
    for key, per_node in partial_keys.items():
        if not ALARM_WORDS_RE.search(key):
            out[key] = empty
            continue
        texts = sorted({stats.first.text for stats in per_node.values()})[:4]
        best = PatternHit()
        ranks = set()
        for text in texts:
            hit = classify_text(text, rules, indexes)
            rank = _rank(hit)
            ranks.add(rank)
            if rank > _rank(best):
                best = hit
        best.mixed = len(ranks) > 1
        out[key] = best
    return out


def _rank(hit: PatternHit) -> tuple:
    return (hit.is_fault, hit.fault_weight, hit.is_collateral, hit.collateral_weight, not hit.is_benign)


def template_hits(templates: list, key_hits: dict) -> dict:
    """The strongest key hit of each template."""
    out = {}
    for template in templates:
        best = PatternHit()
        for key in template.keys:
            hit = key_hits.get(key)
            if hit is not None and _rank(hit) > _rank(best):
                best = hit
        out[template.id] = best
    return out


def pattern_score(hit: PatternHit) -> float:
    if hit.is_benign:
        return 0.0
    if hit.is_fault:
        return hit.fault_weight
    if hit.is_collateral:
        return 0.3 * hit.collateral_weight
    return 0.0


__all__ = ["PatternHit", "Template", "classify_keys", "classify_text", "pattern_score", "template_hits"]
