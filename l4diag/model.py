"""The records that flow between pipeline stages.

Every stage imports only earlier stages and this module. Records produced by the
map step (``Partial`` and what it holds) are plain picklable dataclasses so the
map can run in a process pool and its results can be merged in any order.
"""

from __future__ import annotations

import dataclasses
import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

STAGES = ("init", "checkpoint_load", "train", "checkpoint_save", "shutdown")
CATEGORIES = (
    "hardware",
    "network",
    "storage",
    "checkpoint_load",
    "oom",
    "software",
    "hang",
    "divergence",
    "unknown",
)
ROLES = ("culprit", "suspect", "collateral", "normal")


def pickled_by_position(cls):
    """Pickle a dataclass as its class and field values in order, without a per-object dict: the
    map's Partials cross process boundaries tens of thousands of records at a time, and this
    makes that 2-3x cheaper. The class must take its fields positionally (every dataclass does)."""
    values = operator.attrgetter(*(f.name for f in dataclasses.fields(cls)))

    def __reduce__(self):
        return cls, values(self)

    cls.__reduce__ = __reduce__
    return cls


@dataclass(frozen=True)
class StreamSpec:
    """One input stream: a file, a member of an archive, or stdin.

    ``node`` is None when the node ids come from per-line prefixes (a combined file).
    """

    path: str
    display: str
    node: str | None
    member: str | None = None
    compression: str | None = None
    archive: str | None = None
    max_member_bytes: int | None = None  # cap on decompressed bytes of one stream or archive member
    max_total_bytes: int | None = None  # cap on decompressed bytes of one archive as a whole


class InputCap(OSError):
    """A size cap was reached while reading a stream; ``reason`` names it for the accounting."""

    def __init__(self, message: str, reason: str = "decompression_cap") -> None:
        super().__init__(message)
        self.reason = reason


@pickled_by_position
@dataclass
class Occurrence:
    """Where a line was seen: enough to quote it as evidence."""

    file: str
    line: int
    text: str
    seq: int
    iteration: int | None
    stage: str
    time: float | None
    time_exact: bool = True  # False: the line had no timestamp and took the one just before it


@pickled_by_position
@dataclass
class KeyNodeStats:
    """How one node printed one masked key."""

    count: int
    first: Occurrence
    last: Occurrence
    stages: Counter = field(default_factory=Counter)

    def merge(self, other: KeyNodeStats) -> None:
        self.count += other.count
        self.stages.update(other.stages)
        if _occurrence_order(other.first) < _occurrence_order(self.first):
            self.first = other.first
        if _occurrence_order(other.last) > _occurrence_order(self.last):
            self.last = other.last


def _occurrence_order(occ: Occurrence) -> tuple:
    """Order occurrences of one node: by time when both have one, else stream order."""
    return (occ.file, occ.seq)


@pickled_by_position
@dataclass
class MetricPoint:
    """Training metrics read from one iteration line (iteration None: a metrics line without a step)."""

    iteration: int | None
    time: float | None
    seq: int
    loss: float | None = None
    grad_norm: float | None = None
    loss_scale: float | None = None
    iter_time: float | None = None
    skipped: bool = False
    file: str = ""
    line: int = 0
    text: str = ""


class _UnknownIteration:
    """The iteration a chunk of a stream starts at while the chunks before it are being folded
    (chunks.py replaces it): no iteration compares greater or smaller, so no step is measured from it."""

    _the = None

    def __new__(cls):
        if cls._the is None:
            cls._the = super().__new__(cls)
        return cls._the

    def __reduce__(self):
        return (_UnknownIteration, ())

    def __repr__(self) -> str:
        return "UNKNOWN_ITERATION"

    def __lt__(self, other) -> bool:
        return False

    __gt__ = __le__ = __ge__ = __lt__


UNKNOWN_ITERATION = _UnknownIteration()
UNKNOWN_STAGE = "(chunk start)"  # the stage a chunk starts in, likewise


@dataclass
class NodeEnd:
    """Where a node's fold of a stream (or of a chunk of one) ended, beyond its NodeStats."""

    timed_seq: int  # seq of its last timed line (<= 0: none)
    year: int  # the timestamp parser's year
    year_known: bool  # False: a chunk saw no full date, ``year`` is still its guess
    needs_year: bool  # a chunk read a yearless timestamp with its guessed year


class StageChange(NamedTuple):
    """A stream entered ``stage`` at line ``seq`` of ``file`` (``time`` None when the line had no timestamp)."""

    time: float | None
    seq: int
    stage: str
    iteration: int | None
    file: str = ""
    estimated: bool = False  # the time was placed between timed neighbours (see timeline.py)
    earliest: float | None = None  # when estimated: the time of the timed line before it, a sure lower bound
    until: int | None = None  # the last iteration the stream logged before its next change (see timeline.py)


class IterationMark(NamedTuple):
    """An iteration line: which iteration, when, where."""

    iteration: int
    time: float | None
    file: str = ""
    seq: int = 0
    estimated: bool = False


@dataclass
class NodeStats:
    """What one node's streams looked like as a whole."""

    node: str
    lines: int = 0
    streams: set = field(default_factory=set)
    first_time: float | None = None
    last_time: float | None = None
    last_iteration: int | None = None
    last_iteration_time: float | None = None
    last_stage: str = "init"
    iteration_times: list = field(default_factory=list)  # [IterationMark]
    metrics: list = field(default_factory=list)  # [MetricPoint]
    log_interval: int | None = None
    stream_lines: dict = field(default_factory=dict)  # file -> lines of this node in it
    stage_changes: list = field(default_factory=list)  # [StageChange]
    has_stage_markers: bool = False

    def merge(self, other: NodeStats) -> None:
        self.lines += other.lines
        for name, count in other.stream_lines.items():
            self.stream_lines[name] = self.stream_lines.get(name, 0) + count
        self.streams |= other.streams
        self.first_time = _min_opt(self.first_time, other.first_time)
        if other.last_time is not None and (self.last_time is None or other.last_time >= self.last_time):
            self.last_stage = other.last_stage
        elif self.last_time is None and other.last_time is None:
            self.last_stage = max(self.last_stage, other.last_stage, key=STAGES.index)
        self.last_time = _max_opt(self.last_time, other.last_time)
        if other.last_iteration is not None and (
            self.last_iteration is None or other.last_iteration > self.last_iteration
        ):
            self.last_iteration = other.last_iteration
            self.last_iteration_time = other.last_iteration_time
        self.iteration_times.extend(other.iteration_times)
        self.iteration_times.sort(key=lambda p: (p.iteration, p.time or 0.0, p.file, p.seq))
        self.stage_changes.extend(other.stage_changes)
        self.stage_changes.sort(key=lambda c: (c.time is None, c.time or 0.0, c.seq, c.file))
        self.has_stage_markers = self.has_stage_markers or other.has_stage_markers
        self.metrics.extend(other.metrics)
        self.metrics.sort(key=metric_order)
        if other.log_interval and (not self.log_interval or other.log_interval < self.log_interval):
            self.log_interval = other.log_interval


def append_stats(first: NodeStats, then: NodeStats) -> None:
    """Extend ``first`` with ``then``, the same node's next lines of the same stream (not another
    stream: see ``NodeStats.merge``): lists keep stream order, the last values are ``then``'s."""
    first.lines += then.lines
    for name, count in then.stream_lines.items():
        first.stream_lines[name] = first.stream_lines.get(name, 0) + count
    first.streams |= then.streams
    if first.first_time is None:
        first.first_time = then.first_time
    first.last_time = _max_opt(first.last_time, then.last_time)
    first.last_stage = then.last_stage
    if then.iteration_times:
        first.last_iteration, first.last_iteration_time = then.last_iteration, then.last_iteration_time
    first.iteration_times.extend(then.iteration_times)
    first.stage_changes.extend(then.stage_changes)
    first.metrics.extend(then.metrics)
    first.has_stage_markers = first.has_stage_markers or then.has_stage_markers
    if then.log_interval and (not first.log_interval or then.log_interval < first.log_interval):
        first.log_interval = then.log_interval


def metric_order(m: MetricPoint) -> tuple:
    """Order metric points by time when known, then by iteration and stream order."""
    return (m.time is None, m.time or 0.0, m.iteration if m.iteration is not None else -1, m.seq)


def _min_opt(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _max_opt(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


@dataclass
class Accounting:
    """Every line read is either parsed or skipped for a named reason."""

    lines_read: int = 0
    lines_parsed: int = 0
    bytes_read: int = 0
    skipped: Counter = field(default_factory=Counter)
    warnings: list = field(default_factory=list)
    streams: int = 0
    inputs_skipped: Counter = field(default_factory=Counter)  # whole inputs that could not be used, by reason
    lines_truncated: int = 0  # parsed lines cut at --max-line-bytes (also counted in lines_parsed)
    streams_incomplete: Counter = field(default_factory=Counter)  # streams read only in part, by reason

    def merge(self, other: Accounting) -> None:
        self.inputs_skipped.update(other.inputs_skipped)
        self.lines_truncated += other.lines_truncated
        self.streams_incomplete.update(other.streams_incomplete)
        self.lines_read += other.lines_read
        self.lines_parsed += other.lines_parsed
        self.bytes_read += other.bytes_read
        self.skipped.update(other.skipped)
        self.warnings.extend(other.warnings)
        self.streams += other.streams


@dataclass
class Partial:
    """The mergeable result of the map step over one or more streams."""

    keys: dict = field(default_factory=dict)  # masked key -> {node: KeyNodeStats}
    nodes: dict = field(default_factory=dict)  # node -> NodeStats
    accounting: Accounting = field(default_factory=Accounting)

    def merge(self, other: Partial) -> Partial:
        self.merge_keys(other)
        for node, stats in other.nodes.items():
            if node in self.nodes:
                self.nodes[node].merge(stats)
            else:
                self.nodes[node] = stats
        self.accounting.merge(other.accounting)
        return self

    def merge_keys(self, other: Partial) -> None:
        """``other``'s key counts and occurrences (the part of ``merge`` that chunks.py shares)."""
        for key, per_node in other.keys.items():
            mine = self.keys.setdefault(key, {})
            for node, stats in per_node.items():
                if node in mine:
                    mine[node].merge(stats)
                else:
                    mine[node] = stats


@dataclass
class Template:
    """A Drain template over masked keys, with its per-node counts."""

    id: str
    text: str
    keys: list
    counts: dict  # node -> count
    first: dict  # node -> Occurrence (earliest on that node)

    @property
    def count(self) -> int:
        return sum(self.counts.values())


@dataclass
class TemplateScore:
    """How suspicious one template is, and why."""

    template: Template
    score: float
    scores: dict  # scorer name -> value in [0, 1]
    category: str | None = None
    subcategory: str | None = None
    rule: str | None = None
    collateral: bool = False
    benign: bool = False
    reasons: list = field(default_factory=list)


@dataclass
class NodeScore:
    node: str
    score: float
    role: str = "normal"
    reasons: list = field(default_factory=list)
    scores: dict = field(default_factory=dict)


@dataclass
class EvidenceLine:
    node: str
    file: str
    line: int
    text: str
    template_id: str | None
    iteration: int | None
    stage: str | None
    time: float | None
    score: float


@dataclass
class Finding:
    """The located failure: what, where, when, and the lines that prove it."""

    category: str
    subcategory: str | None
    confidence: float
    summary: str
    node: str | None
    ranks: list
    stage: str | None
    iteration: int | None
    time: float | None
    evidence: list  # [EvidenceLine]


@dataclass
class Diagnosis:
    """Everything the report renderers need, and nothing they must recompute."""

    verdict: str  # failure | healthy | inconclusive
    finding: Finding | None
    nodes: list  # [NodeScore + NodeStats info]
    node_stats: dict  # node -> NodeStats
    templates: list  # [TemplateScore]
    accounting: Accounting
    paths: list
    baseline: str | None = None
    metrics: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    explanations: dict = field(default_factory=dict)
