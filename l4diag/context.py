"""Per-stream context: the current training iteration and stage, and metrics on iteration lines."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from itertools import repeat

from .model import IterationMark, MetricPoint, StageChange
from .rules import RuleSet


GLOBAL_FLAGS_RE = re.compile(r"^\(\?([aiLmsux]+)\)")
ZERO_DIGITS = bytes.maketrans(b"123456789", b"000000000")
MAX_PLANS = 1 << 14  # cached line plans per run; cleared when full (memory stays bounded)
# the parts of a pattern that treat every ASCII digit alike (or are not about the text at all)
DIGIT_NEUTRAL_RE = re.compile(r"\\\\|\\[dD]|0-9|\{\d*(?:,\d*)?\}|\(\?P?<\w+>")
BOUNDED_REPEAT_RE = re.compile(r"\{(\d+),\d+\}")
# read_metrics: a line says iterations were skipped; SKIPPED_DIGIT_RE finds where that count
# stands on any line (the digit test is then made on each line, the rest is digit-blind)
SKIPPED_RE = re.compile(r"number of skipped iterations:\s*[1-9]")
SKIPPED_DIGIT_RE = re.compile(r"number of skipped iterations:\s*[0-9]")
# what tells digits apart without writing one: named backreferences ("12" and "13" differ, their
# zeroed texts do not) and named characters (\N{DIGIT ONE})
DIGIT_TELLING_RE = re.compile(r"\(\?P=|\\[gk]<|\\N\{")
# an iteration number of at most this many ASCII digits is exact as a float: int() reads it as int(float())
EXACT_INT_DIGITS = 15
# the metrics Context._read_iteration stores, in the order of its compiled reads (see compile_reads)
READ_METRICS = ("loss", "grad_norm", "loss_scale", "iter_time")


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
    pattern = "|".join(loosen_bounds(_alternative(rule.pattern.pattern)) for rule in rules)
    try:
        import pyarrow as pa
        import pyarrow.compute as pc

        pc.match_substring_regex(pa.array(["probe"]), pattern=pattern)
    except Exception:
        return None
    return pattern


def loosen_bounds(src: str) -> str:
    """``{m,n}`` repeats (outside character classes) made ``{m,}``: matches a superset of lines.

    For the candidate scan only (every candidate is then observed with the exact rules): large
    bounded repeats such as ``[^}]{0,400}`` blow up RE2's DFA, the unbounded ones cost nothing.
    """
    out = []
    i, n = 0, len(src)
    in_class = False
    while i < n:
        c = src[i]
        if c == "\\":
            out.append(src[i:i + 2])
            i += 2
            continue
        if in_class:
            if c == "]" and not (out and out[-1] in ("[", "[^")):
                in_class = False
        elif c == "[":
            in_class = True
            if src.startswith("[^", i):
                out.append("[^")
                i += 2
                continue
        elif c == "{":
            m = BOUNDED_REPEAT_RE.match(src, i)
            if m:
                out.append("{" + m.group(1) + ",}")
                i = m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


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


def digit_blind(rules: list) -> bool:
    """Whether every rule matches a line exactly as it matches the line with its digits all ``0``.

    True when the patterns mention digits only through classes that hold all of them (``\\d``,
    ``0-9``, ``.``, ``\\w``, negated classes without digits): then whether a rule matches, and
    where its groups are, is a function of the zeroed line. Conservative: any other digit in a
    pattern (a literal, ``[1-9]``, an escape such as ``\\x31``, a backreference) says False.
    """
    for rule in rules:
        src = rule.pattern.pattern
        if DIGIT_TELLING_RE.search(src) or re.search(r"\d", DIGIT_NEUTRAL_RE.sub("", src)):
            return False
    return True


@dataclass(frozen=True)
class LinePlan:
    """What observing a marker line does, as a function of its digit-zeroed text.

    ``kind``: "iteration" (``iter_span`` is where the ``iter`` group is -- for a stage marker, the
    iteration it names, if any; ``metric_steps`` is
    ``(metric, value span)`` of each metric rule that matches, in rule order; ``skip_digits`` where
    the count of a "number of skipped iterations:" stands), "stage" (enters ``stage``) or "none".
    The numbers themselves are read from each line. ``reads``: the same, compiled for an iteration
    line (see ``compile_reads``); None when such lines take the general way.
    """

    kind: str
    iter_span: tuple = (-1, -1)
    metric_steps: tuple = ()
    skip_digits: tuple = ()
    stage: str = ""
    reads: tuple | None = field(default=None, compare=False, repr=False)


def plan_line(text: str, markers: Markers) -> LinePlan:
    """Observe a line the slow way once, recording where the rules matched instead of what they read."""
    if markers.iteration_any is None or markers.iteration_any.search(text):
        for rule in markers.iteration_rules:
            m = rule.search(text)
            if m:
                steps = tuple((r.category, v.span("value")) for r in markers.metric_rules if (v := r.search(text)))
                skips = tuple(d.end() - 1 for d in SKIPPED_DIGIT_RE.finditer(text))
                span = m.span("iter")
                return LinePlan("iteration", span, steps, skips, reads=compile_reads(text, span, steps, skips))
    if markers.stage_any is None or markers.stage_any.search(text):
        for rule in markers.stage_rules:
            m = rule.search(text)
            if m:
                return LinePlan("stage", iter_span=_iter_span(m), stage=rule.category)
    return LinePlan("none")


def compile_reads(text: str, iter_span: tuple, steps: tuple, skips: tuple) -> tuple | None:
    """What ``_apply_iteration`` reads from the lines of an iteration plan, decided once for all of them.

    ``(iter slice, iter is 1-15 ASCII digits, then per metric of READ_METRICS the slice its first rule
    whose text ``float()`` takes reads it from (None: no rule's does), skip-count positions)``. This
    holds for every line of the plan: they differ from ``text`` only in ASCII digits, and replacing
    a digit by another keeps a text ``float()`` takes (or refuses) so. None when the lines must take
    the general way: no ``iter`` group (the iteration is the context's), a ``value`` group that took
    no part in the match (``float(None)`` raises there), or a metric outside READ_METRICS.
    """
    if iter_span[0] < 0:
        return None
    spans: dict = {}
    for metric, (a, b) in steps:
        if metric not in READ_METRICS:
            return None
        if metric in spans:  # an earlier rule read this metric: later ones are not looked at
            continue
        if a < 0:
            return None
        if _as_float(text[a:b]) is not None:
            spans[metric] = slice(a, b)
    value = text[iter_span[0]:iter_span[1]]
    digits = value.isascii() and value.isdigit() and len(value) <= EXACT_INT_DIGITS
    return (slice(*iter_span), digits, *(spans.get(metric) for metric in READ_METRICS), skips)


def _iter_span(m) -> tuple:
    """Where a stage marker's optional ``iter`` group (the iteration it names) is, or (-1, -1)."""
    return m.span("iter") if "iter" in m.re.groupindex else (-1, -1)


def _span_text(text: str, span: tuple) -> str | None:
    """A group's text from its span (None for a group that took no part in the match, like ``group``)."""
    return None if span[0] < 0 else text[span[0]:span[1]]


@dataclass
class Markers:
    """Compiled marker rules, shared by every stream of a run."""

    iteration_rules: list
    stage_rules: list
    metric_rules: list
    iteration_any: object = None
    stage_any: object = None
    # zeroed marker text -> what observing it does (see ``plan_line``); None: observe line by line
    plans: dict | None = None

    @classmethod
    def from_rules(cls, rules: RuleSet) -> Markers:
        return cls(
            iteration_rules=rules.iterations,
            stage_rules=rules.stages,
            metric_rules=rules.metrics,
            iteration_any=_prefilter(rules.iterations),
            stage_any=_prefilter(rules.stages),
        )

    def plan_of(self, text: str) -> LinePlan:
        """The plan of a line (``plans`` must be on): cached by its digit-zeroed text."""
        key = text.encode("utf-8", "surrogatepass").translate(ZERO_DIGITS)
        plan = self.plans.get(key)
        if plan is None:
            plan = plan_line(text, self)
            if len(self.plans) >= MAX_PLANS:
                self.plans.clear()
            self.plans[key] = plan
        return plan

    def planned(self) -> Markers:
        """A copy that observes lines through cached plans when the rules allow it (else self)."""
        if not digit_blind([*self.iteration_rules, *self.stage_rules, *self.metric_rules]):
            return self
        return dataclasses.replace(self, plans={})


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
    change_time: float | None = None  # the time of the line being observed, when it is the line's own

    def observe(self, text: str, time: float | None, seq: int, markers: Markers, where: tuple = ("", 0),
                exact: bool = True) -> None:
        """Update iteration and stage from one line (``exact``: ``time`` is the line's own, not carried)."""
        self.change_time = time if exact else None  # a stage change takes only the line's own time
        if markers.plans is not None:  # through the plan of the line's zeroed text (made on first sight)
            self._apply_plan(text, markers.plan_of(text), time, seq, markers, where)
            return
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
                    self._enter(rule.category, seq, where[0], said)
                    return

    def _enter(self, stage: str, seq: int, file: str, iteration: int | None = None) -> None:
        if stage != self.stage:
            self.stage = stage
            at = iteration if iteration is not None else self.iteration
            # A time carried from an earlier line is only a lower bound: timeline.py places the change.
            self.stage_changes.append(StageChange(self.change_time, seq, stage, at, file))

    def observe_rows(self, rows: list, bodies: list, plans: list | None, times: list, exact: list, base_seq: int,
                     file: str, linenos, markers: Markers) -> tuple[list, list]:
        """``observe`` of the lines ``rows`` of a batch, in order: ``bodies`` (after ``line_body``),
        ``plans`` (each line's ``markers.plan_of(body)``; None, or a list without them: observed the
        usual way), ``times`` (nan: none) and ``exact`` are per row, ``linenos`` and the line's seq
        ``base_seq + row + 1`` per batch index. Returns the rows that changed the iteration or the
        stage, and ``(iteration, stage)`` after each.

        One call per batch instead of one per line: the marker lines of a training log are mostly
        iteration lines, tens of thousands of them in a large run."""
        changed, states = [], []
        per_row = zip(rows, bodies, plans if plans is not None else repeat(None), times, exact)
        for row, body, plan, t, line_exact in per_row:
            if t != t:
                t = None
            iteration, stage = self.iteration, self.stage
            if plan is None:
                self.observe(body, t, base_seq + row + 1, markers, (file, linenos[row]), line_exact)
            else:
                self.change_time = t if line_exact else None
                reads = plan.reads
                if reads is None or not self._read_iteration(body, reads, t, base_seq + row + 1, file, linenos[row]):
                    if plan.kind != "none":  # a line that changes nothing has no body to read (it may be None)
                        self._apply_plan(body, plan, t, base_seq + row + 1, markers, (file, linenos[row]))
            if self.iteration != iteration or self.stage != stage:
                changed.append(row)
                states.append((self.iteration, self.stage))
        return changed, states

    def _apply_plan(self, text: str, plan: LinePlan, time: float | None, seq: int, markers: Markers,
                    where: tuple) -> None:
        if plan.kind == "iteration":
            if plan.reads is None or not self._read_iteration(text, plan.reads, time, seq, where[0], where[1]):
                self._apply_iteration(text, _span_text(text, plan.iter_span), time, seq, markers, where, plan)
        elif plan.kind == "stage":
            self.has_stage_markers = True
            self._enter(plan.stage, seq, where[0], _as_int(_span_text(text, plan.iter_span)))

    def _observe_iteration(self, text: str, time: float | None, seq: int, markers: Markers, where: tuple) -> bool:
        for rule in markers.iteration_rules:
            m = rule.search(text)
            if not m:
                continue
            self._apply_iteration(text, m.group("iter"), time, seq, markers, where)
            return True
        return False

    def _apply_iteration(self, text: str, value: str | None, time: float | None, seq: int, markers: Markers,
                         where: tuple, plan: LinePlan | None = None) -> None:
        """What an iteration line whose ``iter`` group reads ``value`` does to the context."""
        iteration = _as_int(value)
        if iteration is None:
            self._enter("train", seq, where[0])
            point = _metrics(text, self.iteration, time, seq, markers, plan)
            point.file, point.line, point.text = where[0], where[1], text
            self.metrics.append(point)
            return
        self._advance(iteration)
        self._enter("train", seq, where[0])
        self.iterations_seen.append(IterationMark(iteration, time, where[0], seq))
        point = _metrics(text, iteration, time, seq, markers, plan)
        point.file, point.line, point.text = where[0], where[1], text
        self.metrics.append(point)

    def _advance(self, iteration: int) -> None:
        """Go to a logged iteration; the step from the one before counts towards ``log_interval``
        (no step from an unknown one: see chunks.py)."""
        if self.iteration is not None and iteration > self.iteration:
            step = iteration - self.iteration
            if self.log_interval is None or step < self.log_interval:
                self.log_interval = step
        self.iteration = iteration
        self.has_stage_markers = True

    def _read_iteration(self, text: str, reads: tuple, time: float | None, seq: int, file: str, line: int) -> bool:
        """``_apply_iteration`` of a line with a compiled plan (``compile_reads``), False (having done
        nothing) when its ``iter`` group reads no number: the same marks and point, built directly."""
        iter_at, digits, loss, grad_norm, loss_scale, iter_time, skips = reads
        iteration = int(text[iter_at]) if digits else _as_int(text[iter_at])
        if iteration is None:
            return False
        self._advance(iteration)
        if self.stage != "train":
            self._enter("train", seq, file)
        # tuple.__new__: IterationMark(iteration, time, file, seq) without its Python-level __new__
        self.iterations_seen.append(_new_tuple(IterationMark, (iteration, time, file, seq, False)))
        # MetricPoint's fields stored in declaration order, as its __init__ would: calling that __init__
        # (a Python function of eleven arguments) costs more than the stores themselves
        point = _new_object(MetricPoint)
        point.iteration = iteration
        point.time = time
        point.seq = seq
        point.loss = None if loss is None else float(text[loss])
        point.grad_norm = None if grad_norm is None else float(text[grad_norm])
        point.loss_scale = None if loss_scale is None else float(text[loss_scale])
        point.iter_time = None if iter_time is None else float(text[iter_time])
        point.skipped = False
        for at in skips:
            if text[at] != "0":  # the plan found a digit there: 1-9 means iterations were skipped
                point.skipped = True
                break
        point.file = file
        point.line = line
        point.text = text
        self.metrics.append(point)
        return True


_new_tuple = tuple.__new__
_new_object = object.__new__


def _as_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except (ValueError, OverflowError):
        return None


def _metrics(text: str, iteration: int | None, time: float | None, seq: int, markers: Markers,
             plan: LinePlan | None) -> MetricPoint:
    if plan is None:
        return read_metrics(text, iteration, time, seq, markers.metric_rules)
    return read_planned_metrics(text, iteration, time, seq, plan)


def read_metrics(text: str, iteration: int | None, time: float | None, seq: int, rules: list) -> MetricPoint:
    """Read loss, grad norm, loss scale and iteration time as numbers from an iteration line."""
    point = MetricPoint(iteration=iteration, time=time, seq=seq)
    for rule in rules:
        if getattr(point, rule.category) is not None:
            continue
        m = rule.search(text)
        if m:
            setattr(point, rule.category, _as_float(m.group("value")))
    if "skipped" in text.lower() and SKIPPED_RE.search(text):
        point.skipped = True
    return point


def read_planned_metrics(text: str, iteration: int | None, time: float | None, seq: int, plan: LinePlan) -> MetricPoint:
    """``read_metrics`` with the rule searches done by the plan: the same point."""
    point = MetricPoint(iteration=iteration, time=time, seq=seq)
    for metric, span in plan.metric_steps:
        if getattr(point, metric) is None:  # the first rule of a metric that reads a number wins
            setattr(point, metric, _as_float(_span_text(text, span)))
    for at in plan.skip_digits:
        if text[at] != "0":  # the plan found a digit there: 1-9 means iterations were skipped
            point.skipped = True
            break
    return point


def _as_float(value: str) -> float | None:
    try:
        v = float(value)
    except ValueError:
        return None
    return v
