"""The reduce step: Drain (drain3) once over the unique masked keys, with stable template ids.

Drain runs over each distinct masked key once, in sorted order, so the result depends neither on
the order the Partials were merged in nor on ``--jobs``. A cluster whose keys differ in a severity
or state word ("Started" vs "Paused", "succeeded" vs "failed") is split again: Drain's known way
of merging a failure into the noise around it.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict

from drain3.template_miner import TemplateMiner
from drain3.template_miner_config import TemplateMinerConfig

from .model import Occurrence, Partial, Template

WILDCARD = "<*>"
DRAIN_SIM_TH = 0.5
DRAIN_DEPTH = 4
KEYWORD_RE = re.compile(
    r"(?i)^(?:error|errors|err|fail|failed|failure|failing|fatal|timeout|timed|abort|aborted|aborting|"
    r"killed|kill|crash|crashed|exception|warn|warning|critical|started|start|stopped|stop|paused|pause|"
    r"resumed|success|successful|succeeded|ok|done|nan|inf|denied|refused|reset|lost|closed|hang|hung|"
    r"unreachable|down|up|corrupt|corrupted|missing|invalid|unexpected|mismatch|exceeded|oom|"
    r"terminated|terminate|signal|sigterm|sigkill|sigbus|sigsegv|panic|retry|retrying)[.,:;!]*$"
)


def template_id(text: str) -> str:
    """A stable id: the hash of the template text."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def new_miner() -> TemplateMiner:
    config = TemplateMinerConfig()
    config.drain_sim_th = DRAIN_SIM_TH
    config.drain_depth = DRAIN_DEPTH
    config.profiling_enabled = False
    config.parametrize_numeric_tokens = True
    config.masking_instructions = []
    return TemplateMiner(config=config)


def cluster_keys(keys: list) -> dict:
    """Group masked keys into templates: returns template text -> [keys]."""
    miner = new_miner()
    by_cluster: dict = defaultdict(list)
    for key in sorted(keys):
        result = miner.add_log_message(key)
        by_cluster[result["cluster_id"]].append(key)
    groups: dict = {}
    for keys_in_cluster in by_cluster.values():
        for group in _split_on_keywords(keys_in_cluster):
            text = merge_template(group)
            groups.setdefault(text, []).extend(group)
    return groups


def _keyword_signature(key: str) -> tuple:
    return tuple(sorted({t.lower().rstrip(".,:;!") for t in key.split() if KEYWORD_RE.match(t)}))


def _split_on_keywords(keys: list) -> list:
    if len(keys) == 1:
        return [keys]
    groups: dict = defaultdict(list)
    for key in keys:
        groups[_keyword_signature(key)].append(key)
    return list(groups.values())


def merge_template(keys: list) -> str:
    """Position-wise merge of keys with the same token count; differing tokens become ``<*>``."""
    token_lists = [k.split(" ") for k in keys]
    if len({len(t) for t in token_lists}) != 1:
        return keys[0] if len(keys) == 1 else _common_prefix_template(token_lists)
    merged = []
    for column in zip(*token_lists):
        first = column[0]
        merged.append(first if all(tok == first for tok in column) else WILDCARD)
    return " ".join(merged)


def _common_prefix_template(token_lists: list) -> str:
    prefix = []
    for column in zip(*token_lists):
        if all(tok == column[0] for tok in column):
            prefix.append(column[0])
        else:
            break
    return " ".join(prefix + [WILDCARD])


def build_templates(partial: Partial) -> list:
    """Mine templates from a merged Partial; each carries its per-node counts and first occurrences."""
    groups = cluster_keys(list(partial.keys))
    templates = []
    for text, keys in groups.items():
        counts: dict = defaultdict(int)
        first: dict = {}
        for key in keys:
            for node, stats in partial.keys[key].items():
                counts[node] += stats.count
                if node not in first or _earlier(stats.first, first[node]):
                    first[node] = stats.first
        templates.append(Template(template_id(text), text, sorted(keys), dict(counts), first))
    templates.sort(key=lambda t: t.id)
    return templates


def _earlier(a: Occurrence, b: Occurrence) -> bool:
    if a.time is not None and b.time is not None and a.time != b.time:
        return a.time < b.time
    return (a.file, a.seq) < (b.file, b.seq)
