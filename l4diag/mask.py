"""The map step: mask variable tokens and fold a stream into a mergeable ``Partial``.

Each line is reduced to a masked key (numbers, hex, IPs, UUIDs, timestamps and the node's own
name replaced by tokens from ``patterns/masks.toml``); keys are counted per node with their
first and last occurrence and the stages they were seen in.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from .context import Context, Markers
from .lines import (
    DEFAULT_MAX_LINE_BYTES,
    LineStats,
    TimestampParser,
    account_stream,
    detect_prefix_kind,
    iter_text_lines,
    split_prefix,
)
from .model import UNKNOWN_ITERATION, UNKNOWN_STAGE, KeyNodeStats, NodeStats, Occurrence, Partial, StreamSpec
from .rules import TIMED_OUT, RuleSet, timeout_warnings
from .sources import STDIN, iter_archive, open_stream, strip_suffixes, wrap_decompressor

WHITESPACE_RE = re.compile(r"\s+")
MAX_KEY_CHARS = 2000
SNIFF_LINES = 400
CARRY_TIME_LINES = 20


class Masker:
    """Apply the mask rules in order; ``re`` is used where the pattern allows, for speed."""

    def __init__(self, rules: RuleSet) -> None:
        self.steps = []
        for rule in rules.masks:
            try:
                compiled = re.compile(rule.pattern.pattern, re.MULTILINE)
            except re.error:
                compiled = rule.pattern
            self.steps.append((compiled, rule.replacement))

    def key(self, text: str, node: str | None = None) -> str:
        if node and len(node) >= 3 and node in text:
            text = text.replace(node, "<NODE>")
        for pattern, replacement in self.steps:
            text = pattern.sub(replacement, text)
        text = WHITESPACE_RE.sub(" ", text).strip()
        return text[:MAX_KEY_CHARS]


@dataclass
class MapOptions:
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    node_regex: str | None = None


class _NodeFold:
    """Per-node state while folding one stream."""

    __slots__ = ("node", "ctx", "ts", "seq", "stats", "timed_seq")

    def __init__(self, node: str, file: str, chunk_year: int | None = None) -> None:
        self.node = node
        self.ctx = Context()
        self.ts = TimestampParser()
        if chunk_year is not None:  # a chunk after a stream's first: what came before is not known yet
            self.ctx.iteration, self.ctx.stage = UNKNOWN_ITERATION, UNKNOWN_STAGE
            self.ts = TimestampParser(chunk_year, guessed=True)
        self.seq = 0
        self.timed_seq = -(10**9)
        self.stats = NodeStats(node=node, streams={file})


class SlowFolder:
    """The reference map step: every line goes through timestamp, context and mask one by one.

    Kept as the specification the fast ``Folder`` is tested against (and as its fallback).
    """

    def __init__(self, rules: RuleSet, options: MapOptions) -> None:
        self.masker = Masker(rules)
        self.markers = Markers.from_rules(rules)
        self.options = options
        self.partial = Partial()

    def fold_spec(self, spec: StreamSpec) -> Partial:
        """Fold one stream spec (a file, a compressed file, an archive or stdin)."""
        acct = self.partial.accounting
        try:
            if spec.archive:
                self._fold_archive(spec)
            else:
                fh = open_stream(spec)
                try:
                    self._fold_binary(fh, spec.display, spec.node)
                finally:
                    if spec.path != STDIN:
                        fh.close()
        except Exception as exc:  # noqa: BLE001 - one bad input must not end the run
            acct.warnings.append(f"{spec.display}: cannot read: {type(exc).__name__}: {exc}")
            acct.inputs_skipped["unreadable"] += 1
        return self.partial

    def _fold_archive(self, spec: StreamSpec) -> None:
        import tarfile
        import zipfile

        try:
            for member in iter_archive(spec):
                if member.fileobj is None:
                    self.partial.accounting.warnings.append(f"{member.display}: {member.note}")
                    self.partial.accounting.inputs_skipped[member.reason] += 1
                    continue
                fh = wrap_decompressor(member.fileobj, member.compression)
                self._fold_binary(fh, member.display, member.node)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
            self.partial.accounting.inputs_skipped["broken_archive"] += 1
            self.partial.accounting.warnings.append(
                f"{spec.display}: broken archive ({type(exc).__name__}: {exc}); kept what was read"
            )

    def _fold_binary(self, fh, display: str, node: str | None) -> None:
        stats = LineStats()
        acct = self.partial.accounting
        acct.streams += 1
        lines = iter_text_lines(fh, stats, self.options.max_line_bytes)
        if node is None:
            head, lines = _peek(lines, SNIFF_LINES)
            kind = detect_prefix_kind([t for _, t in head])
            if kind is None:
                self._fold_lines(_chain(head, lines), display, stream_name(display))
            else:
                self._fold_demux(_chain(head, lines), display, kind)
        else:
            self._fold_lines(lines, display, node)
        account_stream(acct, stats, display, self.options.max_line_bytes)

    def _fold_lines(self, lines, display: str, node: str) -> None:
        fold = _NodeFold(node, display)
        for lineno, text in lines:
            self._fold_one(fold, display, lineno, text)
        self._finish(fold, display)

    def _fold_demux(self, lines, display: str, kind: str) -> None:
        folds: dict = {}
        demux = Demuxer(kind, display)
        for lineno, text in lines:
            node, rest = demux.split(text)
            fold = folds.get(node)
            if fold is None:
                fold = folds[node] = _NodeFold(node, display)
            self._fold_one(fold, display, lineno, rest)
        for fold in folds.values():
            self._finish(fold, display)

    def _fold_one(self, fold: _NodeFold, display: str, lineno: int, text: str) -> None:
        fold.seq += 1
        # A line without its own timestamp (NCCL, tracebacks) happened just after the last one that had
        # one -- when that one is close; far from any timestamp, the time is unknown.
        time = fold.ts.parse(text)
        exact = time is not None
        if exact:
            fold.timed_seq = fold.seq
        elif fold.seq - fold.timed_seq <= CARRY_TIME_LINES:
            time = fold.stats.last_time
        ctx = fold.ctx
        body = text[fold.ts.end:].lstrip(" ]") if fold.ts.end else text
        ctx.observe(body, time, fold.seq, self.markers, (display, lineno), exact)
        stats = fold.stats
        if time is not None:
            if stats.first_time is None:
                stats.first_time = time
            if stats.last_time is None or time >= stats.last_time:
                stats.last_time = time
        key = self.masker.key(text, fold.node)
        per_node = self.partial.keys.get(key)
        if per_node is None:
            per_node = self.partial.keys[key] = {}
        occ = Occurrence(display, lineno, text, fold.seq, ctx.iteration, ctx.stage, time, exact or time is None)
        ks = per_node.get(fold.node)
        if ks is None:
            per_node[fold.node] = KeyNodeStats(1, occ, occ, Counter({ctx.stage: 1}))
        else:
            ks.count += 1
            ks.last = occ
            ks.stages[ctx.stage] += 1

    def _finish(self, fold: _NodeFold, display: str) -> None:
        stats = fold.stats
        ctx = fold.ctx
        stats.lines = fold.seq
        stats.stream_lines[display] = fold.seq
        stats.last_stage = ctx.stage
        stats.iteration_times = list(ctx.iterations_seen)
        stats.metrics = list(ctx.metrics)
        stats.log_interval = ctx.log_interval
        stats.stage_changes = list(ctx.stage_changes)
        stats.has_stage_markers = ctx.has_stage_markers
        if ctx.iterations_seen:
            last = ctx.iterations_seen[-1]
            stats.last_iteration, stats.last_iteration_time = last.iteration, last.time
        existing = self.partial.nodes.get(fold.node)
        if existing is None:
            self.partial.nodes[fold.node] = stats
        else:
            existing.merge(stats)


def stream_name(display: str) -> str:
    """The node id of a stream that names no nodes itself: its file name without extensions."""
    return strip_suffixes(display.rsplit("/", 1)[-1]) or "stdin"


class Demuxer:
    """Names the node of each line of a combined file: its prefix, else the node of the line before."""

    def __init__(self, kind: str, display: str) -> None:
        self.kind = kind
        self.fallback = stream_name(display)
        self.last: str | None = None

    def split(self, text: str) -> tuple:
        """``(node, text without the prefix)``."""
        _, node, rest = split_prefix(text, self.kind)
        if node is None:
            node, rest = (self.last or self.fallback), text
        self.last = node
        return node, rest


def _peek(iterator, n: int) -> tuple:
    head = []
    for item in iterator:
        head.append(item)
        if len(head) >= n:
            break
    return head, iterator


def _chain(head: list, rest):
    yield from head
    yield from rest


def __getattr__(name: str):
    if name == "Folder":  # the fast map step (fastmap.py) builds on the pieces above
        from .fastmap import Folder

        return Folder
    raise AttributeError(name)


def map_stream(spec: StreamSpec, rules: RuleSet, options: MapOptions, slow: bool = False) -> Partial:
    """The map step for one stream spec, suitable for a process pool."""
    before = Counter(TIMED_OUT)
    if slow:
        partial = SlowFolder(rules, options).fold_spec(spec)
    else:
        from .fastmap import Folder

        partial = Folder(rules, options).fold_spec(spec)
    partial.accounting.warnings.extend(timeout_warnings(TIMED_OUT - before))
    return partial


__all__ = ["MapOptions", "Masker", "SlowFolder", "map_stream"]
