"""Per-stream context: the current training iteration and stage, and metrics on iteration lines."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .model import IterationMark, MetricPoint, StageChange
from .rules import RuleSet


GLOBAL_FLAGS_RE = re.compile(r"^\(\?([aiLmsux]+)\)")


def _alternative(src: str) -> str:
    """One rule's regex as a branch of an alternation: named groups dropped, leading global flags
    such as ``(?i)`` turned into a scoped group (Python rejects global flags mid-pattern)."""
    src = re.sub(r"\(\?P<\w+>", "(?:", src)
    # Unanchored: markers are matched on the text after a line's timestamp, the prefilters run on
    # whole lines, so a prefilter must not insist on a line start.
    src = re.sub(r"(?<![\\\[])\^", "", src)
    m = GLOBAL_FLAGS_RE.match(src)
    if m:
        return f"(?{m.group(1)}:{src[m.end():]})"
    return f"(?:{src})"


def _prefilter(rules: list, flags: int = 0):
    """One fast alternation that says whether any of the rules could match a line."""
    if not rules:
        return None
    try:
        return re.compile("|".join(_alternative(rule.pattern.pattern) for rule in rules), flags)
    except re.error:
        return None


def block_marker_pattern(markers: "Markers"):
    """The iteration and stage markers as one MULTILINE alternation to search a block of lines with.

    None when there is no marker rule at all (returns an impossible pattern then) or when the rules
    cannot be combined (then every line is a candidate).
    """
    rules = list(markers.iteration_rules) + list(markers.stage_rules)
    if not rules:
        return re.compile(r"(?!)")
    return _prefilter(rules, re.MULTILINE)


def marker_re2(markers: "Markers") -> str | None:
    """The iteration and stage markers as one RE2 pattern (for Arrow), or None if RE2 cannot take them."""
    rules = list(markers.iteration_rules) + list(markers.stage_rules)
    if not rules:
        return None
    pattern = "|".join(_alternative(rule.pattern.pattern) for rule in rules)
    try:
        import pyarrow as pa
        import pyarrow.compute as pc

        pc.match_substring_regex(pa.array(["probe"]), pattern=pattern)
    except Exception:
        return None
    return pattern


def candidate_lines(pattern, block: str) -> list:
    r"""Indices of the lines of ``block`` (joined by ``\n``) that a marker could match.

    Every line a match touches is a candidate, so a match that runs across a line end (``\s``
    matches ``\n``) cannot hide a real match that starts inside it.
    """
    out = []
    line = 0
    pos = 0
    last = -1
    count = block.count
    for m in pattern.finditer(block):
        s, e = m.span()
        line += count("\n", pos, s)
        pos = s
        end_line = line + (count("\n", s, e - 1) if e - 1 > s else 0)
        for i in range(max(line, last + 1), end_line + 1):
            out.append(i)
        last = max(last, end_line)
    return out


@dataclass
class Markers:
    """Compiled marker rules, shared by every stream of a run."""

    iteration_rules: list
    stage_rules: list
    metric_rules: list
    iteration_any: object = None
    stage_any: object = None

    @classmethod
    def from_rules(cls, rules: RuleSet) -> Markers:
        return cls(
            iteration_rules=rules.iterations,
            stage_rules=rules.stages,
            metric_rules=rules.metrics,
            iteration_any=_prefilter(rules.iterations),
            stage_any=_prefilter(rules.stages),
        )


@dataclass
class Context:
    """Where one stream is: iteration, stage, and what iteration lines said."""

    iteration: int | None = None
    stage: str = "init"
    iterations_seen: list = field(default_factory=list)  # [IterationMark]
    metrics: list = field(default_factory=list)  # [MetricPoint]
    log_interval: int | None = None
    stage_changes: list = field(default_factory=list)  # [StageChange]
    has_stage_markers: bool = False

    def observe(self, text: str, time: float | None, seq: int, markers: Markers, where: tuple = ("", 0)) -> None:
        """Update iteration and stage from one line."""
        if markers.iteration_any is None or markers.iteration_any.search(text):
            if self._observe_iteration(text, time, seq, markers, where):
                return
        if markers.stage_any is None or markers.stage_any.search(text):
            for rule in markers.stage_rules:
                m = rule.search(text)
                if m:
                    self.has_stage_markers = True
                    # "saving checkpoint at iteration N" says where the run was even on a rank that logs no iterations
                    said = _as_int(m.group("iter")) if "iter" in m.re.groupindex else None
                    self._enter(rule.category, time, seq, where[0], said)
                    return

    def _enter(self, stage: str, time: float | None, seq: int, file: str, iteration: int | None = None) -> None:
        if stage != self.stage:
            self.stage = stage
            at = iteration if iteration is not None else self.iteration
            self.stage_changes.append(StageChange(time, seq, stage, at, file))

    def _observe_iteration(self, text: str, time: float | None, seq: int, markers: Markers, where: tuple) -> bool:
        for rule in markers.iteration_rules:
            m = rule.search(text)
            if not m:
                continue
            iteration = _as_int(m.group("iter"))
            if iteration is None:
                self._enter("train", time, seq, where[0])
                point = read_metrics(text, self.iteration, time, seq, markers.metric_rules)
                point.file, point.line, point.text = where[0], where[1], text
                self.metrics.append(point)
                return True
            if self.iteration is not None and iteration > self.iteration:
                step = iteration - self.iteration
                if self.log_interval is None or step < self.log_interval:
                    self.log_interval = step
            self.iteration = iteration
            self.has_stage_markers = True
            self._enter("train", time, seq, where[0])
            self.iterations_seen.append(IterationMark(iteration, time, where[0], seq))
            point = read_metrics(text, iteration, time, seq, markers.metric_rules)
            point.file, point.line, point.text = where[0], where[1], text
            self.metrics.append(point)
            return True
        return False


def _as_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except (ValueError, OverflowError):
        return None


def read_metrics(text: str, iteration: int | None, time: float | None, seq: int, rules: list) -> MetricPoint:
    """Read loss, grad norm, loss scale and iteration time as numbers from an iteration line."""
    point = MetricPoint(iteration=iteration, time=time, seq=seq)
    for rule in rules:
        if getattr(point, rule.category) is not None:
            continue
        m = rule.search(text)
        if m:
            setattr(point, rule.category, _as_float(m.group("value")))
    if "skipped" in text.lower() and re.search(r"number of skipped iterations:\s*[1-9]", text):
        point.skipped = True
    return point


def _as_float(value: str) -> float | None:
    try:
        v = float(value)
    except ValueError:
        return None
    return v
