"""Fold one large plain file as chunks in parallel, and join their Partials into exactly the
Partial of one sequential fold (``mask.SlowFolder``, ``fastmap.Folder``).

A chunk starts at a line start (``plan_chunks``). The first chunk folds as usual. Every later one
folds without knowing what came before it (``Folder.fold_range`` with ``chunk_year``): each node
starts at ``UNKNOWN_ITERATION`` and ``UNKNOWN_STAGE``, with no time to carry, at seq 0 and line 0,
and reads yearless timestamps in a guessed year (that of the last full date before the cut).
``join_chunks`` then walks the chunks in order, knows where each node was at each chunk's start,
and puts it in (``_settle``):

* iteration and stage: replaced where the unknown ones were recorded (occurrences, per-stage
  counts, metric points, stage changes); the chunk's first stage change is dropped when the node
  was in that stage already; the step from the last iteration before the chunk to its first one
  joins ``log_interval``;
* times: an untimed line within ``CARRY_TIME_LINES`` of the last timed line before the chunk takes
  that node's latest time, as in one fold;
* seq and line numbers: shifted by the node's lines and the stream's lines before the chunk.

Two things are not put in afterwards; a stream where either matters is folded again as a whole
(rare: ``join_chunks`` returns None): a yearless timestamp (glog, syslog) read in a guessed year
that was not the node's, and a node whose first time in the chunk is earlier than its latest time
before (then the times it carries within the chunk could have been larger).

Only plain files on disk are cut (not stdin, compressed files or archive members), in plain
UTF-8, and only at a line break followed by a printable ASCII byte; in a combined file, only before
a prefixed line (so the chunk's first line names its node).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass

from .lines import (
    LineStats,
    TimestampParser,
    account_stream,
    detect_prefix_kind,
    iter_text_lines,
    split_prefix,
)
from .mask import CARRY_TIME_LINES, SNIFF_LINES, MapOptions, stream_name
from .model import UNKNOWN_ITERATION, UNKNOWN_STAGE, IterationMark, Partial, StreamSpec, append_stats
from .rules import TIMED_OUT, RuleSet, timeout_warnings
from .sources import STDIN

CHUNK_BYTES = 8 << 20  # a stream is cut when it holds at least two of these
MAX_CHUNKS = 256
CHUNKS_PER_JOB = 16  # enough to balance the processes; fewer chunk Partials held until the join
CUT_SEARCH_BYTES = 1 << 20  # how far past a cut point to look for a line to start a chunk at
CUT_READ = 1 << 16
YEAR_SEARCH_BYTES = 4 << 20  # how far before a cut to look for a full date
FULL_DATE_RE = re.compile(rb"\d{4}-\d\d-\d\d[T _]\d\d:\d\d:\d\d")  # what lines.TS_RE takes a year from
DEFAULT_YEAR = TimestampParser().year  # of a stream's yearless timestamps before its first full date


@dataclass
class ChunkSpec:
    """Bytes ``start:end`` of a plain file, to fold as lines of ``node`` or as a combined file
    with prefixes of ``kind``."""

    spec: StreamSpec
    node: str | None
    kind: str | None
    start: int
    end: int
    index: int  # 0 for the stream's first chunk
    year: int | None = None  # a later chunk's guess of the year its yearless timestamps are in

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass
class ChunkResult:
    partial: Partial | None  # None: the chunk could not be read (the stream is folded whole, which reports why)
    stats: LineStats  # the chunk's reading counts, accounted once for the whole stream
    ends: dict  # node -> NodeEnd
    year: int | None  # the chunk's guessed year


def plan_chunks(spec: StreamSpec, chunk_bytes: int = CHUNK_BYTES, max_line_bytes: int = 1 << 20,
                max_chunks: int = MAX_CHUNKS) -> list | None:
    """The chunks to fold ``spec`` as (at most ``max_chunks``, larger than ``chunk_bytes`` when
    the file is large), or None to fold it whole (too small, not a plain file on disk, not plain
    UTF-8, or no place to cut)."""
    if spec.path == STDIN or spec.archive or spec.compression or spec.member:
        return None
    try:
        size = os.path.getsize(spec.path)
        if size < 2 * chunk_bytes:
            return None
        with open(spec.path, "rb") as fh:
            return _cut(fh, spec, size, min(max_chunks, size // chunk_bytes), max_line_bytes)
    except OSError:
        return None  # the whole-stream fold reports it


def _cut(fh, spec: StreamSpec, size: int, pieces: int, max_line_bytes: int) -> list | None:
    head = _head(fh, max_line_bytes)
    if head is None:
        return None
    kind = detect_prefix_kind(head) if spec.node is None else None
    node = None if kind is not None else (spec.node or stream_name(spec.display))
    starts = [0]
    for i in range(1, pieces):
        cut = _line_start_after(fh, max(i * size // pieces, starts[-1] + 1), kind)
        if cut is not None and cut < size:
            starts.append(cut)
    if len(starts) < 2:
        return None
    years = _guessed_years(fh, starts, kind)
    ends = starts[1:] + [size]
    return [ChunkSpec(spec, node, kind, a, b, i, y) for i, (a, b, y) in enumerate(zip(starts, ends, years))]


def _head(fh, max_line_bytes: int) -> list | None:
    """The first lines of a file, as the fold sniffs them; None unless it reads as plain UTF-8."""
    stats = LineStats()
    lines = []
    for _, text in iter_text_lines(fh, stats, max_line_bytes):
        lines.append(text)
        if len(lines) >= SNIFF_LINES:
            break
    fh.seek(0)
    return lines if stats.encoding == "utf-8" else None


def _line_start_after(fh, at: int, kind: str | None) -> int | None:
    """The first offset from ``at`` on where a chunk may start: just after a ``\\n``, before a
    printable ASCII byte (no NUL run, ``\\r`` or BOM straddles the cut) -- and before a prefixed
    line in a combined file. None when there is none within CUT_SEARCH_BYTES."""
    fh.seek(at - 1)
    window = fh.read(CUT_SEARCH_BYTES + CUT_READ)
    pos = 0
    while True:
        nl = window.find(b"\n", pos)
        if nl < 0 or nl >= CUT_SEARCH_BYTES:
            return None
        pos = nl + 1
        nxt = window[pos:pos + 1]
        if not nxt or not 0x20 <= nxt[0] < 0x7F:
            continue
        if kind is not None:
            line = window[pos:window.find(b"\n", pos)].decode("utf-8", "replace")
            if split_prefix(line, kind)[1] is None:
                continue
        return at - 1 + pos


def _guessed_years(fh, starts: list, kind: str | None) -> list:
    """Per chunk start after the first, the year a chunk starting there takes its yearless
    timestamps to be in (checked when the chunks join): the year of the last full date before it,
    looked for back to the cut before and at most YEAR_SEARCH_BYTES; failing that, the guess of
    the cut before (the year carries on), and at first the parser's default."""
    years, guess = [None], DEFAULT_YEAR
    for before, cut in zip(starts, starts[1:]):
        found = _last_full_date_year(fh, max(before, cut - YEAR_SEARCH_BYTES), cut, kind)
        guess = found if found is not None else guess
        years.append(guess)
    return years


def _last_full_date_year(fh, lo: int, hi: int, kind: str | None) -> int | None:
    """The year of the last line in bytes ``lo:hi`` whose timestamp has a full date, or None.
    Read backwards in growing windows; a line is parsed only where the date pattern occurs."""
    end, size = hi, 1 << 16
    while end > lo:
        start = max(lo, end - size)
        fh.seek(start)
        data = fh.read(end - start)
        for m in reversed(list(FULL_DATE_RE.finditer(data))):
            begin = data.rfind(b"\n", 0, m.start()) + 1
            if begin == 0 and start > lo:
                continue  # the line may begin before this window: the next one reads it whole
            stop = data.find(b"\n", m.end())
            year = _year_set_by(data[begin:stop if stop >= 0 else len(data)].decode("utf-8", "replace"), kind)
            if year is not None:
                return year
        first = data.find(b"\n")
        end = start + first + 1 if start > lo and 0 <= first < len(data) - 1 else start
        size *= 4
    return None


def _year_set_by(text: str, kind: str | None) -> int | None:
    """The year the timestamp parser takes from this line, or None when it takes none."""
    if kind is not None:
        text = split_prefix(text, kind)[2]
    parser = TimestampParser(0, guessed=True)
    parser.parse(text)
    return None if parser.year_guessed else parser.year


def map_chunk(chunk: ChunkSpec, rules: RuleSet, options: MapOptions) -> ChunkResult:
    """Fold one chunk (in a worker process)."""
    from .fastmap import Folder

    before = Counter(TIMED_OUT)
    folder = Folder(rules, options)
    try:
        stats = folder.fold_range(chunk.spec.path, chunk.spec.display, chunk.node, chunk.kind, chunk.start, chunk.end,
                                  chunk.year)
    except Exception:  # noqa: BLE001 - e.g. the file changed since it was cut: fold_spec will say what is wrong
        return ChunkResult(None, LineStats(), {}, chunk.year)
    folder.partial.accounting.warnings.extend(timeout_warnings(TIMED_OUT - before))
    return ChunkResult(folder.partial, stats, folder.node_ends, chunk.year)


@dataclass
class _Before:
    """Where a node was when a chunk started: its stats so far, the seq of its last timed line
    (<= 0: none) and its timestamp parser's year."""

    stats: object  # NodeStats
    timed_seq: int
    year: int


def join_chunks(results: list, display: str, max_line_bytes: int) -> Partial | None:
    """The Partial of the whole stream from its chunks' results, in order; None when the stream
    must be folded whole (see the module docstring)."""
    if any(r.partial is None for r in results):
        return None
    out = Partial()
    nodes: dict = {}  # node -> _Before
    stats = LineStats()
    lines_before = 0
    for k, result in enumerate(results):
        part = result.partial
        if k > 0 and not _settle(part, result.ends, nodes, lines_before, result.year):
            return None
        for node, ns in part.nodes.items():
            end = result.ends[node]
            before = nodes.get(node)
            if before is None:  # the node's first lines: its year is the parser's default unless it saw one
                nodes[node] = _Before(ns, end.timed_seq, end.year if end.year_known else DEFAULT_YEAR)
                out.nodes[node] = ns
                continue
            if end.timed_seq > 0:
                before.timed_seq = before.stats.lines + end.timed_seq
            if end.year_known:
                before.year = end.year
            append_stats(before.stats, ns)
        out.merge_keys(part)
        out.accounting.merge(part.accounting)
        stats.add(result.stats)
        lines_before += result.stats.read
    out.accounting.streams += 1
    account_stream(out.accounting, stats, display, max_line_bytes)
    return out


def _settle(part: Partial, ends: dict, nodes: dict, lines_before: int, year: int | None) -> bool:
    """Put into a later chunk's Partial what it could not know: where each node was at its start
    (``nodes``) and how many lines of the stream came before. False when that cannot be done."""
    fixes = {}
    for node, ns in part.nodes.items():
        before = nodes.get(node)
        start = _start_of(before)
        if ends[node].needs_year and year != (before.year if before else DEFAULT_YEAR):
            return False
        if start.last_time is not None and ns.first_time is not None and ns.first_time < start.last_time:
            return False
        fixes[node] = start
        _settle_node(ns, start, lines_before)
    for per_node in part.keys.values():
        for node, ks in per_node.items():
            start = fixes[node]
            if UNKNOWN_STAGE in ks.stages:
                ks.stages = _renamed_stage(ks.stages, start.stage)
            _settle_occurrence(ks.first, start, lines_before)
            if ks.last is not ks.first:
                _settle_occurrence(ks.last, start, lines_before)
    return True


@dataclass
class _Start:
    """A node's state at a chunk's start."""

    iteration: object = None
    stage: str = "init"
    last_time: float | None = None
    seq: int = 0  # lines of the node before the chunk
    gap: int = 10**9  # lines since its last timed one


def _start_of(before: _Before | None) -> _Start:
    if before is None:
        return _Start()
    ns = before.stats
    return _Start(ns.last_iteration, ns.last_stage, ns.last_time, ns.lines,
                  ns.lines - before.timed_seq if before.timed_seq > 0 else 10**9)


def _carries(seq: int, start: _Start) -> bool:
    """Whether an untimed line at ``seq`` of the chunk takes the time from before it."""
    return start.last_time is not None and seq + start.gap <= CARRY_TIME_LINES


def _settle_node(ns, start: _Start, lines_before: int) -> None:
    """The node's stats of the chunk, settled (its occurrences are in the keys: see ``_settle``)."""
    changes = list(ns.stage_changes)
    if changes and changes[0].stage == start.stage:
        changes.pop(0)  # one fold would have been in that stage already
    ns.stage_changes = [
        c._replace(seq=c.seq + start.seq, iteration=start.iteration if c.iteration is UNKNOWN_ITERATION else c.iteration)
        for c in changes
    ]
    if ns.last_stage == UNKNOWN_STAGE:
        ns.last_stage = start.stage
    if ns.iteration_times and start.iteration is not None:
        step = ns.iteration_times[0].iteration - start.iteration
        if step > 0 and (ns.log_interval is None or step < ns.log_interval):
            ns.log_interval = step
    for point in ns.metrics:
        _settle_point(point, start, lines_before)
    if start.seq or start.last_time is not None:
        ns.iteration_times = [_shift_mark(m, start) for m in ns.iteration_times]
    if ns.iteration_times:  # its time may have been carried in from before the chunk
        ns.last_iteration_time = ns.iteration_times[-1].time


def _renamed_stage(stages: Counter, stage: str) -> Counter:
    """``stages`` with the unknown stage called ``stage``, in its place (first seen, first listed)."""
    out = Counter()
    for name, count in stages.items():
        out[stage if name == UNKNOWN_STAGE else name] += count
    return out


def _settle_occurrence(occ, start: _Start, lines_before: int) -> None:
    """An Occurrence of a later chunk, settled in place (the chunk's Partial is the join's own)."""
    if occ.time is None and _carries(occ.seq, start):
        occ.time, occ.time_exact = start.last_time, False
    occ.line += lines_before
    occ.seq += start.seq
    if occ.iteration is UNKNOWN_ITERATION:
        occ.iteration = start.iteration
    if occ.stage == UNKNOWN_STAGE:
        occ.stage = start.stage


def _settle_point(m, start: _Start, lines_before: int) -> None:
    """A MetricPoint of a later chunk, settled in place."""
    if m.time is None and _carries(m.seq, start):
        m.time = start.last_time
    m.line += lines_before
    m.seq += start.seq
    if m.iteration is UNKNOWN_ITERATION:
        m.iteration = start.iteration


def _shift_mark(m: IterationMark, start: _Start) -> IterationMark:
    time = start.last_time if m.time is None and _carries(m.seq, start) else m.time
    # tuple.__new__: the NamedTuple's own __new__ and _replace cost ~4 us a mark, and there is one per iteration line
    return tuple.__new__(IterationMark, (m.iteration, time, m.file, m.seq + start.seq, m.estimated))


__all__ = ["CHUNK_BYTES", "CHUNKS_PER_JOB", "ChunkResult", "ChunkSpec", "join_chunks", "map_chunk", "plan_chunks"]
