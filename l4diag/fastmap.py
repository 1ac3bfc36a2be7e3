"""The fast map step: the same Partial as ``mask.SlowFolder``, computed a block at a time.

The per-line work of the reference folder (timestamp, seven regex substitutions, context
markers, one ``Occurrence`` per line) is replaced by work per block of lines (~4 MB):

* **reading** — a block of complete lines that is plain UTF-8 (no ``\\r``, no control or escape
  bytes, no invalid or replacement characters, no blank or over-long line) is split in one go;
  any other block goes line by line through ``lines._emit_text``, exactly as ``iter_text_lines``.
* **masking** — every mask rule treats all ASCII digits alike (checked when the rules load), so
  a line's masked key is a function of its *skeleton*: the line with its node name replaced and
  every digit turned into ``0`` (one ``bytes.translate`` per block). Lines are counted per
  skeleton with C-level ``Counter``/``dict(zip())``, and the mask regexes run once per distinct
  skeleton (cached across blocks and nodes).
* **timestamps** — the leading timestamps of a block are parsed at once with Arrow (RE2 over the
  same ``lines.TS_RE``) and numpy (epoch arithmetic, year carried forward from the last full
  date like ``TimestampParser``); blocks with non-ASCII lines use ``TimestampParser`` per line.
* **context** — one search per block with an alternation of the iteration and stage markers
  finds the few candidate lines; only they go through ``Context.observe_rows`` (in order, with their
  times), and the iteration/stage of any other line is looked up from the changes they made.
* **occurrences** — only the first and the last line of each key per stage run of a block is
  materialised; everything else is a count.

Where the native scanner is built (``l4diag/native.py``), a plain ASCII block skips the Python
split: one C pass checks it, finds its lines, parses ISO timestamps and gives each line a skeleton
id (with uuid and hex ids already masked, when the first two mask rules are the built-in ones).
Marker candidacy and the marker plan are then looked up per skeleton (``_scanned_batch``); lines
whose ids the scanner masked are decided by their skeleton too when no marker rule's required text
can overlap an id (``piece_may_overlap_id``), else one by one. A line holding none of what the
marker rules need (``MarkerNeeds``) is never searched. A combined stream's plain block is split by
node first (``_fold_demux_scanned``), each node's part scanned as a block of its own.
"""

from __future__ import annotations

import dataclasses
import re
from bisect import bisect_right
from collections import Counter

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .context import block_marker_pattern, candidate_lines, marker_re2
from .lines import (
    CONTROL_RE,
    TS_RE,
    LineStats,
    TimestampParser,
    _emit,
    _emit_text,
    _split_long,
    account_stream,
    iter_line_chunks,
    detect_prefix_kind,
    line_body,
    split_prefix,
)
from .context import Markers, digit_blind
from . import native
from .mask import CARRY_TIME_LINES, MAX_KEY_CHARS, SNIFF_LINES, Demuxer, Masker, SlowFolder, _chain, _NodeFold, stream_name
from .model import KeyNodeStats, NodeEnd, Occurrence, Partial

try:  # pragma: no cover - pyarrow is a dependency, but keep a pure-Python way
    import pyarrow as pa
    import pyarrow.compute as pc
except ImportError:  # pragma: no cover
    pa = pc = None

DIGITS_BYTES = bytes.maketrans(b"123456789", b"000000000")
DIGITS_STR = str.maketrans("123456789", "000000000")
# bytes that force the line-by-line path: C0 controls except \t and \n (this includes \r and ESC), DEL
SLOW_BYTES = bytes(list(range(0, 9)) + list(range(11, 32)) + [127])
REPLACEMENT_CHAR_UTF8 = "\ufffd".encode()
NUMPY_MIN_LINES = 512  # batches at least this long count keys with numpy
# entries; cleared when full (memory stays bounded on unique hex ids). 16k, not 64k: 5M lines on
# 2 cores peak at 479-488 instead of 509-514 MB RSS summed over the processes, ~5% more map CPU
MAX_SKELETON_CACHE = 1 << 14
# marker candidacy of a skeleton not decided yet (native.KeyIds.candidate): by its first line, for
# the run; or per stream, for a skeleton with <NODE>
UNDECIDED, PER_STREAM = -1, -2
FEW_MARKER_TEXTS = 4  # up to this many texts are marker-searched with ``regex``, not RE2
FEW_LINES_BY_PIECES = 64  # up to this many lines of a block are first tested for marker pieces
_KEY_CACHES: dict = {}


def digit_invariant(rules):
    """Whether the mask rules treat all ASCII digits alike, so a line may be masked via its skeleton.

    Returns a regex of the lines that must be masked as they are (not via the skeleton), or None
    when skeletons cannot be used at all. The only literal digit the rules may contain is the
    ``0`` of ``0x``: then a line with ``[1-9]x`` keeps its digits.
    """
    literal_zero_x = False
    for rule in rules.masks:
        src = rule.pattern.pattern
        src = re.sub(r"\\[dD]|0-9|\{\d+(?:,\d*)?\}|\\\\", "", src)
        if re.search(r"\d", rule.replacement):
            return None
        rest = src.replace("0x", "")
        if re.search(r"\d", rest):
            return None
        literal_zero_x = literal_zero_x or "0x" in src
    return re.compile(r"[1-9][xX]") if literal_zero_x else re.compile(r"(?!)")


# id(rules) -> what _compile made of them; the most recent few only: a process that diagnoses
# many runs (eval, the API) loads the rules anew each time, and each entry holds caches
_SHARED: dict = {}
MAX_SHARED = 4


def _compile(rules) -> dict:
    """Everything a Folder needs from the rules, compiled once per process and rule set."""
    masker = Masker(rules)
    markers = Markers.from_rules(rules)
    skeletons = digit_invariant(rules)
    sig = (tuple((c.pattern, r) for c, r in masker.steps), skeletons is None)
    return {
        "rules": rules,
        "masker": masker,
        "markers": markers,
        "skeletons": skeletons,
        # skeleton -> masked key, shared by the Folders of a process that use the same mask rules
        "key_cache": _KEY_CACHES.setdefault(sig, {}),
        # candidates are already known to match some marker: skip the per-line prefilters
        # and lines that zero to the same digits are observed through one cached plan
        "observe_markers": dataclasses.replace(markers, iteration_any=None, stage_any=None).planned(),
        "marker_re": block_marker_pattern(markers),
        "marker_re2": marker_re2(markers) if pa is not None else None,
        "bulk_masker": BulkMasker(masker),
        # the native scanner's skeleton table and key ids, shared like key_cache
        "native_table": None,
        "native_keys": None,
        "native_generation": 0,  # how often the table was cleared
        "zero_digit_x": skeletons is not None and skeletons.pattern == "(?!)",
        "pre_mask": [(c.pattern, r) for c, r in masker.steps[:2]] == NATIVE_PRE_MASKS,
        "marker_needs": MarkerNeeds.of(markers),
    }


def _native_for(shared: dict):
    """The native scanner when it can stand in for the numpy path under these rules, else None.

    It needs skeletons (digit-invariant masks), marker rules that are digit-blind (a skeleton's
    lines are marker candidates together) and Arrow (the masks and the marker prefilter are RE2)."""
    mod = native.module()
    markers = shared["markers"]
    if mod is None or pa is None or shared["skeletons"] is None:
        return None
    if not digit_blind([*markers.iteration_rules, *markers.stage_rules]):
        return None
    if shared["native_table"] is None:
        shared["native_table"] = mod.SkeletonTable()
        shared["native_keys"] = native.KeyIds()
    return mod


class _Batch:
    """Lines of one node from one block: texts, their skeletons and line numbers."""

    __slots__ = ("texts", "skels", "linenos", "block", "coded", "times", "cands", "line_key", "plan_for")

    def __init__(self, texts, skels, linenos, block, coded=None) -> None:
        self.texts, self.skels, self.linenos, self.block = texts, skels, linenos, block
        # instead of skels: (distinct skeletons in order of first appearance, per-line index into them)
        self.coded = coded
        # from the native scanner: the lines' times, marker candidates and key ids (see Folder._scanned_batch)
        self.times = self.cands = self.line_key = self.plan_for = None


class _ScannedStream:
    """What the native path remembers within one stream: which skeletons are marker candidates.

    The marker rules are digit-blind, so a skeleton without ``<NODE>`` decides for its lines
    (``native.KeyIds.candidate``, for the whole run). One with ``<NODE>`` is decided per stream:
    lines of one stream with the same skeleton differ only in their digits (the node is the same),
    so one line decides for all. Indexed by skeleton id (-1 not seen yet); ``generation`` follows
    the table, whose ids restart when it is cleared."""

    __slots__ = ("candidate", "generation", "plans", "node", "node_bytes", "id_needs", "id_lines")

    def __init__(self, node: str, needs: MarkerNeeds | None = None) -> None:
        self.candidate = np.zeros(0, dtype=np.int8)
        self.generation = -1
        self.plans: dict = {}  # skeleton id -> (where the line body starts, its marker LinePlan)
        # the node name as the scanner replaces it with "<NODE>" (None: it does not, as
        # ``Folder._skeletons`` leaves names shorter than 3 characters)
        self.node = node if len(node) >= 3 else None
        self.node_bytes = self.node.encode("utf-8") if self.node else None
        # lines whose ids the scanner masked: their skeleton shows whether they may hold a marker
        # when every marker rule needs a clause whose pieces cannot overlap an id; else None
        self.id_needs = None if needs is None else needs.id_blind(self.node)
        self.id_lines: dict = {}  # skeleton id -> whether its id lines may hold a marker

    def follow(self, generation: int, size: int) -> None:
        """Keep up with the table: start again when it was cleared, make room for new skeletons."""
        if self.generation != generation:
            self.candidate, self.plans, self.generation = np.zeros(0, dtype=np.int8), {}, generation
            self.id_lines = {}
        if len(self.candidate) < size:
            self.candidate = np.concatenate([self.candidate, np.full(size - len(self.candidate), -1, dtype=np.int8)])


class Folder(SlowFolder):
    """Fold streams into a Partial a block at a time (see the module docstring)."""

    def __init__(self, rules, options) -> None:
        shared = _SHARED.get(id(rules))
        if shared is None or shared["rules"] is not rules:
            while len(_SHARED) >= MAX_SHARED:
                del _SHARED[next(iter(_SHARED))]  # the oldest
            shared = _SHARED[id(rules)] = _compile(rules)
        self.rules = rules
        self.options = options
        self.partial = Partial()
        self.masker = shared["masker"]
        self.markers = shared["markers"]
        self.skeletons = shared["skeletons"]
        self.key_cache = shared["key_cache"]
        self.observe_markers = shared["observe_markers"]
        self.marker_re = shared["marker_re"]
        self.marker_re2 = shared["marker_re2"]
        self.bulk_masker = shared["bulk_masker"]
        self.times = BulkTimes()
        self.native = _native_for(shared)
        self.shared = shared
        self.chunk_year: int | None = None  # folding a chunk after a stream's first (see fold_range)
        self.node_ends: dict | None = None  # node -> NodeEnd, recorded by fold_range

    def fold_range(self, path: str, display: str, node: str | None, kind: str | None, start: int, end: int,
                   chunk_year: int | None) -> LineStats:
        """Fold bytes ``start:end`` of a plain file (a chunk, cut at a line start: see chunks.py)
        as lines of ``node`` (``kind`` None) or as a combined file of that prefix kind, into
        ``self.partial``; line numbers count from the chunk's start. With ``chunk_year``, every
        node starts at an unknown iteration and stage, that guessed year, and no time to carry.
        Returns the chunk's LineStats, not yet accounted; ``self.node_ends`` says where each
        node ended."""
        stats = LineStats()
        self.chunk_year, self.node_ends = chunk_year, {}
        with open(path, "rb") as raw:
            raw.seek(start)
            blocks = iter_blocks(_Bounded(raw, end - start), stats, self.options.max_line_bytes, self.native)
            if kind is None:
                self._fold_node_blocks(blocks, display, node)
            else:
                self._fold_demux_blocks(blocks, display, kind)
        return stats

    # --- reading -------------------------------------------------------------------------------

    def _fold_binary(self, fh, display: str, node: str | None) -> None:
        stats = LineStats()
        acct = self.partial.accounting
        acct.streams += 1
        blocks = iter_blocks(fh, stats, self.options.max_line_bytes, self.native)
        if node is None:
            head = []
            n = 0
            for item in blocks:
                head.append(item)
                n += item[4] if item[0] == "clean" else len(item[1])
                if n >= SNIFF_LINES:
                    break
            sample = []
            for item in head:
                sample.extend(_clean_texts(item, SNIFF_LINES) if item[0] == "clean" else [t for _, t in item[1]])
                if len(sample) >= SNIFF_LINES:
                    break
            kind = detect_prefix_kind(sample[:SNIFF_LINES])
            items = _chain(head, blocks)
            if kind is None:
                self._fold_node_blocks(items, display, stream_name(display))
            else:
                self._fold_demux_blocks(items, display, kind)
        else:
            self._fold_node_blocks(blocks, display, node)
        account_stream(self.partial.accounting, stats, display, self.options.max_line_bytes)

    def _fold_node_blocks(self, items, display: str, node: str) -> None:
        fold = _NodeFold(node, display, self.chunk_year)
        local: dict = {}
        scanned = _ScannedStream(node, self.shared["marker_needs"])
        nb = scanned.node_bytes
        native_node = nb if nb is None or b"\n" not in nb else False  # a node name never spans lines
        for item in items:
            if item[0] == "clean" and item[1] is None and native_node is not False:  # vouched for by self.native
                self._fold_batch(fold, local, display, self._scanned_batch(item, native_node, fold, scanned))
            elif item[0] == "clean":
                self._fold_batch(fold, local, display, self._clean_batch(item, node, nb))
            else:
                pairs = item[1]
                texts = [t for _, t in pairs]
                self._fold_batch(
                    fold, local, display, _Batch(texts, self._skeletons(texts, node), [n for n, _ in pairs], None)
                )
        self._finish_local(fold, local, display)

    def _clean_batch(self, item: tuple, node: str, nb: bytes | None) -> _Batch:
        """The batch of a plain block (numpy path): its skeletons from one translate of the block,
        or Arrow's encoding of them when the block is large and no line keeps its digits."""
        _, _, first_lineno, raw, _ = item
        texts = _clean_texts(item)
        linenos = range(first_lineno, first_lineno + len(texts))
        if self.skeletons is None:
            return _Batch(texts, self._skeletons(texts, node), linenos, raw)
        zeroed = (raw.replace(nb, b"<NODE>") if nb is not None and nb in raw else raw).translate(DIGITS_BYTES)
        digit_x = _has_digit_x(raw)
        if len(texts) >= NUMPY_MIN_LINES and pa is not None and not digit_x:
            coded = _encode_lines(zeroed, len(texts))
            if coded is not None:
                return _Batch(texts, None, linenos, raw, coded)
        skels = zeroed.decode("utf-8").split("\n")
        if len(skels) > len(texts):
            skels.pop()
        if digit_x:  # lines that keep their digits: masked as they are, with only the node replaced
            exc = self.skeletons.search
            for i, t in enumerate(texts):
                if exc(t):
                    skels[i] = t.replace(node, "<NODE>") if nb is not None else t
        return _Batch(texts, skels, linenos, raw)

    def _fold_demux_blocks(self, items, display: str, kind: str) -> None:
        folds: dict = {}
        demux = Demuxer(kind, display)
        prefixes: dict = {}
        for item in items:
            if item[0] == "clean" and item[1] is None and self._fold_demux_scanned(item, folds, demux, prefixes, display):
                continue
            pairs = zip(range(item[2], item[2] + item[4]), _clean_texts(item)) if item[0] == "clean" else item[1]
            per_node: dict = {}
            for lineno, text in pairs:
                node, rest = demux.split(text)
                entry = per_node.get(node)
                if entry is None:
                    entry = per_node[node] = ([], [])
                entry[0].append(rest)
                entry[1].append(lineno)
            for node, (texts, linenos) in per_node.items():
                fold, local, _ = self._demux_state(folds, node, display)
                self._fold_batch(fold, local, display, _Batch(texts, self._skeletons(texts, node), linenos, None))
        for fold, local, _ in folds.values():
            self._finish_local(fold, local, display)

    def _demux_state(self, folds: dict, node: str, display: str) -> tuple:
        """``(fold, local keys, scanned-stream state)`` of one node of a combined stream."""
        state = folds.get(node)
        if state is None:
            state = folds[node] = (_NodeFold(node, display, self.chunk_year), {},
                                   _ScannedStream(node, self.shared["marker_needs"]))
        return state

    def _fold_demux_scanned(self, item: tuple, folds: dict, demux: Demuxer, prefixes: dict, display: str) -> bool:
        """Fold a plain ASCII block of a combined stream: its lines split by node, each node's
        part through the native scanner as a block of its own. False (nothing folded) when a
        node's part is not a plain block (a blank line once its prefix is cut, say).

        A line's prefix is decided by ``Demuxer.split`` on the line up to its first ": " and one
        character more (the whole line if it has none), cached in ``prefixes``: every prefix the
        pattern knows ends at that ": " or before it, and whether and where it matches, and
        whether one space after it is cut, depends on nothing further."""
        _, _, first_lineno, raw, _ = item
        lines = raw.split(b"\n")
        lines.pop()  # the block ends with a line end
        keys = [line[: j + 3] if (j := line.find(b": ")) >= 0 else line for line in lines]
        missing = set(keys).difference(prefixes)
        if len(prefixes) + len(missing) > MAX_SKELETON_CACHE:  # bounded, as the skeleton caches
            prefixes.clear()
            missing = set(keys)
        for key in missing:
            _, node, rest = split_prefix(key.decode("ascii"), demux.kind)
            prefixes[key] = (node, len(key) - len(rest))
        decided = [prefixes[key] for key in keys]
        nodes = [node for node, _ in decided]
        before = demux.last or demux.fallback
        for i in [i for i, node in enumerate(nodes) if node is None]:  # no prefix: the node of the line before
            nodes[i] = nodes[i - 1] if i else before
        rows: dict = {}
        for i, node in enumerate(nodes):
            at = rows.get(node)
            if at is None:
                rows[node] = [i]
            else:
                at.append(i)
        per_node = {node: ([lines[i][decided[i][1]:] for i in at], [first_lineno + i for i in at])
                    for node, at in rows.items()}
        last = nodes[-1] if nodes else demux.last
        blocks = {node: b"\n".join(parts) + b"\n" for node, (parts, _) in per_node.items()}
        if any(self.native.count_clean_lines(b, self.options.max_line_bytes) < 0 for b in blocks.values()):
            return False
        demux.last = last
        for node, (parts, linenos) in per_node.items():
            fold, local, scanned = self._demux_state(folds, node, display)
            batch = self._scanned_batch(("clean", None, 0, blocks[node], len(parts)), scanned.node_bytes, fold, scanned,
                                        linenos)
            self._fold_batch(fold, local, display, batch)
        return True

    def _skeletons(self, texts: list, node: str) -> list:
        out = []
        check = len(node) >= 3
        for t in texts:
            if check and node in t:
                t = t.replace(node, "<NODE>")
            out.append(t if self.skeletons is None or self.skeletons.search(t) else t.translate(DIGITS_STR))
        return out

    # --- one batch of one node -----------------------------------------------------------------

    def _fold_batch(self, fold: _NodeFold, local: dict, display: str, batch: _Batch) -> None:
        texts, linenos = batch.texts, batch.linenos
        n = len(texts)
        if n == 0:
            return
        base_seq = fold.seq
        fold.seq += n
        if batch.times is not None:
            arr, times = None, batch.times
        else:
            arr = pa.array(texts, pa.string()) if pa is not None and n >= 64 else None
            times = self.times.compute(texts, fold.ts, batch.block)
        stats = fold.stats
        exact = ~np.isnan(times)
        _carry_times(times, fold, base_seq)
        valid = ~np.isnan(times)
        if valid.any():
            if stats.first_time is None:
                stats.first_time = float(times[int(np.argmax(valid))])
            mx = float(np.nanmax(times))
            if stats.last_time is None or mx >= stats.last_time:
                stats.last_time = mx

        # context: only candidate lines are observed; record where iteration/stage changed
        ctx = fold.ctx
        prefiltered = arr is not None or batch.cands is not None
        markers = self.observe_markers if prefiltered and self.marker_re2 is not None else self.markers
        change_at = [-1]
        change_state = [(ctx.iteration, ctx.stage)]
        if batch.cands is not None:
            cands = batch.cands
        elif arr is not None and self.marker_re2 is not None:
            hit = pc.match_substring_regex(arr, pattern=self.marker_re2).to_numpy(zero_copy_only=False)
            all_ascii = batch.block.isascii() if batch.block is not None else pc.all(pc.string_is_ascii(arr)).as_py()
            if not all_ascii:  # RE2 is ASCII-only: non-ASCII lines are candidates
                hit |= ~pc.string_is_ascii(arr).to_numpy(zero_copy_only=False)
            cands = np.nonzero(hit)[0].tolist()
        elif self.marker_re is None:
            cands = range(n)
        else:
            cands = candidate_lines(self.marker_re, "\n".join(texts))
        if len(cands):
            at = np.asarray(cands, dtype=np.intp)
            rows = at.tolist()  # Python ints whatever cands holds: rows make the seqs of the Partial
            if batch.plan_for is not None and markers.plans is not None:
                bodies, plans = batch.plan_for(at)
            else:
                bodies = [line_body(texts[i]) for i in rows]
                plans = None if markers.plans is None else list(map(markers.plan_of, bodies))
            changed, states = ctx.observe_rows(rows, bodies, plans, times[at].tolist(), exact[at].tolist(), base_seq,
                                               display, linenos, markers)
            change_at += changed
            change_state += states

        # stage runs: [start, end, stage]
        runs = []
        start, stage = 0, change_state[0][1]
        for idx, (_, st) in zip(change_at[1:], change_state[1:]):
            if st != stage:
                if idx > start:
                    runs.append((start, idx, stage))
                start, stage = idx, st
        runs.append((start, n, stage))

        def occ(i: int) -> Occurrence:
            state = change_state[bisect_right(change_at, i) - 1]
            t = float(times[i])
            # plain float and bool, as SlowFolder's: numpy scalars compare equal but pickle and print apart
            return Occurrence(display, linenos[i], texts[i], base_seq + i + 1, state[0], state[1],
                              None if t != t else t, bool(exact[i]) or t != t)

        for stage, key_stats in self._batch_keys(batch, runs):
            for key, c, fi, li in key_stats:
                e = local.get(key)
                if e is None:
                    first_occ = occ(fi)
                    local[key] = [c, first_occ, first_occ if fi == li else occ(li), {stage: c}]
                else:
                    e[0] += c
                    st = e[3]
                    st[stage] = st.get(stage, 0) + c
                    e[2] = occ(li)  # later segments and batches come later in the stream
                    if base_seq + fi + 1 < e[1].seq:  # pragma: no cover - cannot happen, kept as a guard
                        e[1] = occ(fi)

    def _batch_keys(self, batch: _Batch, runs: list):
        """``_stage_run_keys`` of a batch: per stage run, its keys with counts and first/last lines."""
        if batch.line_key is not None:
            names = self.shared["native_keys"].names
            for a, b, stage in runs:
                yield stage, _run_key_stats(batch.line_key[a:b], a, names)
            return
        key_cache = self.key_cache
        skels = batch.skels
        # in order of first appearance
        distinct = dict.fromkeys(skels if batch.coded is None else batch.coded[0])
        missing = [sk for sk in distinct if sk not in key_cache]
        if missing:
            if len(key_cache) + len(missing) > MAX_SKELETON_CACHE:
                key_cache.clear()
                missing = list(distinct)
            key_cache.update(zip(missing, self.bulk_masker.keys(missing)))
        yield from _stage_run_keys(skels, distinct, key_cache, runs, batch.coded)

    def _scanned_batch(self, item: tuple, nb: bytes | None, fold: _NodeFold, scanned: _ScannedStream,
                       linenos: list | None = None) -> _Batch:
        """A plain ASCII block through the native scanner: the batch the numpy path would fold, with
        its times, marker candidates and key ids already worked out (``linenos``: the lines'
        numbers, when they do not follow each other from the item's first)."""
        _, _, first_lineno, raw, count = item
        shared = self.shared
        table, keys = shared["native_table"], shared["native_keys"]
        if len(table) > MAX_SKELETON_CACHE:  # bounded memory on unique lines, as key_cache
            table.clear()
            shared["native_keys"] = keys = native.KeyIds()  # key ids live only within a batch
            shared["native_generation"] += 1
        starts, ids, times, years, flags = self.native.scan(raw, nb, table, shared["zero_digit_x"], shared["pre_mask"])
        starts = np.frombuffer(starts, dtype=np.int64)
        ids = np.frombuffer(ids, dtype=np.int32)
        flags = np.frombuffer(flags, dtype=np.uint8)
        if len(ids) != count:  # pragma: no cover - count_clean_lines and scan split alike
            raise AssertionError(f"native scan split {len(ids)} lines, expected {count}")
        if keys.skeletons_done < len(table):
            new = table.skeletons[keys.skeletons_done:]
            keys.add_skeletons(self.bulk_masker.keys(new), self._skeleton_candidacy(new))
        scanned.follow(shared["native_generation"], len(table))
        texts = native.ScannedLines(raw, starts)
        iso = (flags & self.native.FLAG_ISO) != 0
        y = np.frombuffer(years, dtype=np.int32) if iso.any() else None
        out = np.frombuffer(times, dtype=np.float64).copy()
        batch = _Batch(texts, None, linenos if linenos is not None else range(first_lineno, first_lineno + count), raw)
        batch.times = BulkTimes.resolve(out, iso, (flags & self.native.FLAG_HARD) != 0, y, texts, fold.ts)
        batch.cands = self._scanned_candidates(ids, flags, texts, scanned)
        batch.line_key = keys.of_skeleton[ids]
        batch.plan_for = self._plan_lookup(ids, flags, texts, scanned)
        return batch

    def _plan_lookup(self, ids: np.ndarray, flags: np.ndarray, texts: native.ScannedLines, scanned: _ScannedStream):
        """``rows -> (bodies, plans)`` for lines of a scanned block: each line's body (``line_body``)
        and LinePlan. Where the body starts and the plan are functions of the line's zeroed text
        (``line_body`` cuts a digit-blind timestamp; plans are keyed by zeroed text), which within a
        stream is a function of its skeleton: worked out once per skeleton and stream, except for a
        line whose skeleton does not tell (a literal ``<NODE>``, or ids the scanner masked)."""
        cache = scanned.plans
        markers = self.observe_markers
        own_way = self.native.FLAG_LITERAL_NODE | self.native.FLAG_PRE_MASKED
        raw, starts = texts.raw, texts.starts

        def plan_for(rows: np.ndarray) -> tuple:
            # ScannedLines[i] is raw[starts[i]:starts[i + 1] - 1] (ASCII): bodies are read from raw directly
            begins, ends = starts[rows].tolist(), (starts[rows + 1] - 1).tolist()
            sids, own = ids[rows].tolist(), (flags[rows] & own_way).tolist()
            known = [None if o else cache.get(sid) for sid, o in zip(sids, own)]
            for k in [k for k, kn in enumerate(known) if kn is None]:  # in row order, as line by line
                kn = None if own[k] else cache.get(sids[k])  # an earlier row may have had this skeleton
                if kn is None:
                    text = raw[begins[k]:ends[k]].decode("ascii")
                    body = line_body(text)
                    kn = (len(text) - len(body), markers.plan_of(body))
                    if not own[k]:
                        cache[sids[k]] = kn
                known[k] = kn
            bodies = [raw[begin + kn[0]:end].decode("ascii") for begin, end, kn in zip(begins, ends, known)]
            return bodies, [kn[1] for kn in known]

        return plan_for

    def _scanned_candidates(self, ids: np.ndarray, flags: np.ndarray, texts, scanned: _ScannedStream) -> list:
        """Indices of the marker candidates of a scanned block: decided once per skeleton and stream.

        What is not known yet (skeletons seen for the first time, lines whose ids the scanner
        masked) is decided in one marker search for the block: Arrow compiles the RE2 pattern
        anew on every call (~1 ms), which is more than the search of a few thousand lines."""
        keys = self.shared["native_keys"]
        state = keys.candidate[ids]
        # a line whose ids the scanner masked shares its skeleton with lines whose ids differ, and
        # the marker rules see ids: such lines are decided each on its own
        own = np.flatnonzero(flags & self.native.FLAG_PRE_MASKED)
        state[own] = 0
        if len(own) and scanned.id_needs is not None:
            own = own[self._id_skeletons_may_hold_markers(ids[own], scanned)]
        per_stream = np.flatnonzero(state == PER_STREAM)
        if len(per_stream):
            state[per_stream] = scanned.candidate[ids[per_stream]]
        unknown = np.flatnonzero(state < 0)
        skeleton_ids, first = np.unique(ids[unknown], return_index=True)
        if len(skeleton_ids) or len(own):
            hit = self._marker_candidates_in_block(texts, np.concatenate([unknown[first], own]))
            decided = hit[: len(skeleton_ids)].astype(np.int8)
            scanned.candidate[skeleton_ids] = decided
            run_wide = keys.candidate[skeleton_ids] == UNDECIDED  # no <NODE>: the same in every stream
            keys.candidate[skeleton_ids[run_wide]] = decided[run_wide]
            state[unknown] = scanned.candidate[ids[unknown]]
            state[own] = hit[len(skeleton_ids):]
        # a literal "<NODE>" in a line could make it share a skeleton with a line naming the node
        hit = (state > 0) | ((flags & self.native.FLAG_LITERAL_NODE) != 0)
        return np.flatnonzero(hit).tolist()

    def _id_skeletons_may_hold_markers(self, skeleton_ids: np.ndarray, scanned: _ScannedStream) -> np.ndarray:
        """Per id line (by its skeleton id): whether its skeleton, with the node put back, holds what
        a marker rule needs. Where it does not, neither does the line (the pieces cannot overlap
        its ids, and the rules are digit-blind), so no marker can match it."""
        known = scanned.id_lines
        table = self.shared["native_table"].skeletons
        node = scanned.node.translate(DIGITS_STR) if scanned.node else None
        out = np.empty(len(skeleton_ids), dtype=bool)
        for i, sid in enumerate(skeleton_ids.tolist()):
            may = known.get(sid)
            if may is None:
                text = table[sid].replace("<NODE>", node) if node else table[sid]
                may = known[sid] = scanned.id_needs.may_match(text, zeroed=True)
            out[i] = may
        return out

    @staticmethod
    def _skeleton_candidacy(skeletons: list) -> np.ndarray:
        """Per new skeleton: PER_STREAM when it holds ``<NODE>`` (the node name or a literal one, so
        each stream decides from one of its lines), else UNDECIDED (the first line seen decides for
        the run: marker rules are digit-blind)."""
        return np.array([PER_STREAM if "<NODE>" in sk else UNDECIDED for sk in skeletons], dtype=np.int8)

    def _marker_candidates_in_block(self, lines: native.ScannedLines, rows: np.ndarray) -> np.ndarray:
        """``_marker_candidates`` of some lines of a scanned block; many are read from the block
        in Arrow (no Python string per line)."""
        if self.marker_re2 is None or len(rows) <= FEW_LINES_BY_PIECES:
            return self._marker_candidates([lines[int(i)] for i in rows])
        # each value runs to its line's "\n" (the next line's start), which is then trimmed off
        block = pa.LargeStringArray.from_buffers(len(lines), pa.py_buffer(lines.starts), pa.py_buffer(lines.raw))
        picked = pc.ascii_rtrim(block.take(pa.array(rows)), characters="\n")
        return pc.match_substring_regex(picked, pattern=self.marker_re2).to_numpy(zero_copy_only=False)

    def _marker_candidates(self, texts: list) -> np.ndarray:
        """Whether each text could match a marker (the prefilter ``_fold_batch`` applies to a block).

        Texts without what every rule needs (``MarkerNeeds``) cannot; the others are searched. Any of
        these searches finds a superset of the lines the marker rules match (RE2's also takes every
        non-ASCII line), and candidates are then observed exactly: which one decides does not
        change the result, only the time (RE2 costs ~1 ms to compile, ``regex`` ~0.1 ms a line)."""
        out = np.zeros(len(texts), dtype=bool)
        needs = self.shared["marker_needs"]
        rows = range(len(texts)) if needs is None else [i for i, t in enumerate(texts) if needs.may_match(t)]
        if not rows:
            return out
        texts = [texts[i] for i in rows]
        if self.marker_re2 is not None and len(texts) > FEW_MARKER_TEXTS:
            out[rows] = pc.match_substring_regex(pa.array(texts, pa.string()), pattern=self.marker_re2).to_numpy(
                zero_copy_only=False)
        elif self.marker_re is None:
            out[rows] = True
        else:
            found = set(candidate_lines(self.marker_re, "\n".join(texts)))
            out[rows] = [i in found for i in range(len(texts))]
        return out

    def _finish_local(self, fold: _NodeFold, local: dict, display: str) -> None:
        keys = self.partial.keys
        node = fold.node
        for key, (count, first, last, stages) in local.items():
            per_node = keys.get(key)
            if per_node is None:
                per_node = keys[key] = {}
            ks = per_node.get(node)
            if ks is None:
                per_node[node] = KeyNodeStats(count, first, last, Counter(stages))
            else:  # the same node from an earlier stream of this Folder: as the reference does
                ks.count += count
                ks.last = last
                ks.stages.update(stages)
        if self.node_ends is not None:
            ts = fold.ts
            self.node_ends[node] = NodeEnd(fold.timed_seq, ts.year, not ts.year_guessed, ts.needs_year)
        self._finish(fold, display)


class _Bounded:
    """The next ``size`` bytes of a binary file, as a file."""

    def __init__(self, raw, size: int) -> None:
        self.raw, self.left = raw, size

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(self.left if n < 0 else min(n, self.left))
        self.left -= len(data)
        return data

    read1 = read


def _stage_run_keys(skels: list | None, distinct: dict, key_cache: dict, runs: list, coded: tuple | None = None):
    """Per stage run ``(a, b, stage)`` of a batch: ``(stage, [(key, count, first, last), ...])``,
    keys in order of first appearance in the run, first/last as indices into the batch.

    Large batches count with numpy (a stable argsort of per-line key ids); small ones (many nodes of
    a combined file in one block) with dicts, where numpy's per-call cost would dominate. ``coded``
    (see ``_encode_lines``) stands for ``skels`` when the block was encoded by Arrow.
    """
    if coded is None and len(skels) < NUMPY_MIN_LINES:
        line_keys = list(map(key_cache.__getitem__, skels))
        for a, b, stage in runs:
            seg = line_keys[a:b]
            last = dict(zip(seg, range(a, b)))
            first = dict(zip(reversed(seg), range(b - 1, a - 1, -1)))
            yield stage, [(key, c, first[key], last[key]) for key, c in Counter(seg).items()]
        return
    key_ids: dict = {}
    skel_key = np.array([key_ids.setdefault(key_cache[sk], len(key_ids)) for sk in distinct], dtype=np.int64)
    if coded is not None:  # distinct is coded[0] in the same order
        line_key = skel_key[coded[1]]
    else:
        position = dict(zip(distinct, range(len(distinct))))
        line_key = skel_key[np.fromiter(map(position.__getitem__, skels), dtype=np.int64, count=len(skels))]
    names = list(key_ids)
    for a, b, stage in runs:
        yield stage, _run_key_stats(line_key[a:b], a, names)


def _run_key_stats(line_key: np.ndarray, offset: int, names: list) -> list:
    """``[(key, count, first, last)]`` of one run's per-line key ids, in order of first appearance."""
    if not len(line_key):
        return []
    order = np.argsort(line_key, kind="stable")  # stable: within a key, lines stay in order
    ordered = line_key[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    ends = np.append(starts[1:], len(ordered))
    firsts = order[starts] + offset
    lasts = order[ends - 1] + offset
    by_first = np.argsort(firsts)
    return [(names[k], c, f, la) for k, c, f, la in zip(ordered[starts][by_first].tolist(), (ends - starts)[by_first].tolist(),
                                                         firsts[by_first].tolist(), lasts[by_first].tolist())]


def _encode_lines(block: bytes, n: int) -> tuple | None:
    """``(distinct lines in order of first appearance, per-line index into them)`` of a block of
    ``n`` newline-terminated lines, hashed by Arrow: no Python string per line (None if the block
    does not have exactly ``n`` lines)."""
    if not block.endswith(b"\n"):  # the last line of a stream may lack its newline
        block += b"\n"
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)
    if len(ends) != n or len(block) >= 1 << 31:
        return None
    offsets = np.empty(n + 1, dtype=np.int32)
    offsets[0] = 0
    offsets[1:] = ends + 1  # each value keeps its "\n": the same for every line, cut off below
    lines = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(block))
    coded = pc.dictionary_encode(lines)
    distinct = [line[:-1] for line in coded.dictionary.to_pylist()]
    return distinct, coded.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _carry_times(times: np.ndarray, fold: _NodeFold, base_seq: int) -> None:
    """As ``SlowFolder``: an untimed line within CARRY_TIME_LINES of a timed one takes the latest time so far."""
    n = len(times)
    valid = ~np.isnan(times)
    seqs = base_seq + 1 + np.arange(n)
    timed_seq = np.where(valid, seqs, -(10**9))
    last_timed = np.maximum.accumulate(np.maximum(timed_seq, fold.timed_seq))
    prior = fold.stats.last_time
    running = np.fmax.accumulate(np.concatenate([[np.nan if prior is None else prior], times]))[:-1]
    fill = ~valid & (seqs - last_timed <= CARRY_TIME_LINES) & ~np.isnan(running)
    times[fill] = running[fill]
    if valid.any():
        fold.timed_seq = int(seqs[valid][-1])


def _has_digit_x(raw: bytes) -> bool:
    """Whether ``[1-9][xX]`` occurs in the bytes (numpy: much faster than a regex scan)."""
    buf = np.frombuffer(raw, dtype=np.uint8)
    pos = np.flatnonzero((buf[1:] | 0x20) == ord("x"))
    if not len(pos):
        return False
    before = buf[pos]
    return bool(((before >= ord("1")) & (before <= ord("9"))).any())


# --- reading blocks ------------------------------------------------------------------------------


def iter_blocks(fh, stats: LineStats, max_line_bytes: int, native_module=None):
    """Like ``lines.iter_text_lines``, but a block at a time.

    Yields ``("clean", texts, first_lineno, raw_bytes, line_count)`` for a block of plain lines (all
    parsed; ``texts`` is None for a plain ASCII block that ``native_module`` vouched for: see
    ``_clean_texts``) and ``("lines", [(lineno, text), ...])`` for anything else (line by line, as
    the reference). The line structure, decoding and every hostile-input guard come from
    ``lines.iter_line_chunks``.
    """
    lineno = 0
    for kind, data in iter_line_chunks(fh, stats, max_line_bytes):
        if kind == "lines":
            count = native_module.count_clean_lines(data, max_line_bytes) if native_module is not None else -1
            parts = _clean_parts(data, max_line_bytes) if count < 0 else None
            if count >= 0 or parts is not None:
                count = len(parts) if count < 0 else count
                stats.read += count
                stats.parsed += count
                yield ("clean", parts, lineno + 1, data, count)
                lineno += count
                continue
            out = []
            for text_line, truncated in _split_long(data, max_line_bytes):
                lineno += 1
                if truncated:
                    stats.truncated_lines += 1
                out.extend(_emit_text(text_line, lineno, stats, truncated))
        else:
            lineno += 1
            if kind == "long":
                stats.truncated_lines += 1
            out = list(_emit(data, lineno, stats, truncated=kind == "long"))
        if out:
            yield ("lines", out)


def _clean_texts(item: tuple, limit: int | None = None) -> list:
    """The texts of a ``"clean"`` block, or its first ``limit`` (split here if the native check left
    them unsplit)."""
    if item[1] is not None:
        return item[1] if limit is None else item[1][:limit]
    count = item[4] if limit is None else min(limit, item[4])
    return [line.decode("ascii") for line in item[3].split(b"\n", count)[:count]]


def _clean_parts(complete: bytes, max_line_bytes: int) -> list | None:
    """The lines of a block when every one is plain (no control bytes, valid UTF-8, not blank, short)."""
    if len(complete.translate(None, SLOW_BYTES)) != len(complete):
        return None
    if complete.isascii():
        # SLOW_BYTES covers every ASCII control (ESC too): the C1 controls, bidi marks and
        # replacement characters that CONTROL_RE and the UTF-8 check look for are all non-ASCII.
        text = complete.decode("ascii")
    else:
        if REPLACEMENT_CHAR_UTF8 in complete:
            return None
        try:
            text = complete.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if CONTROL_RE.search(text):
            return None
    parts = text.split("\n")
    if parts and parts[-1] == "":
        parts.pop()
    if not parts or "" in parts or max(map(len, parts)) * 4 > max_line_bytes or any(map(str.isspace, parts)):
        return None
    return parts


# --- masking distinct skeletons in bulk ------------------------------------------------------------

HEX_RULE_PY = r"\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"
UUID_RULE_PY = r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
# the first two mask steps the native scanner can apply itself (see native/_l4diag_native.c)
NATIVE_PRE_MASKS = [(UUID_RULE_PY, "<UUID>"), (HEX_RULE_PY, "<HEX>")]
ID_CHAR_STR = "0123456789abcdefABCDEFxX-"  # what a uuid or hex id the scanner masks is made of
ID_INSIDE_RE = re.compile(r"0[xX]|[0-9a-fA-F]{8}")  # every such id holds one of these


class MarkerNeeds:
    """What a line must hold to match some marker rule (``Rule.required_all``): per rule,
    ``(clauses, casefolded)``, each clause's pieces as ``(piece, piece with digits zeroed)``.

    ``may_match`` first looks for any rule's first-clause piece with one regex: most lines hold
    none, and then no rule's clauses can all hold."""

    def __init__(self, rules: tuple) -> None:
        self.rules = rules
        self.first = tuple(_any_piece_re(rules, zeroed) for zeroed in (0, 1))

    @classmethod
    def of(cls, markers: Markers) -> MarkerNeeds | None:
        """The needs of the iteration and stage rules; None when a rule has none."""
        rules = []
        for rule in [*markers.iteration_rules, *markers.stage_rules]:
            if not rule.required_all:
                return None
            clauses = tuple(tuple((p, p.translate(DIGITS_STR)) for p in clause) for clause in rule.required_all)
            rules.append((clauses, rule.required_folded))
        return cls(tuple(rules))

    def id_blind(self, node: str | None) -> MarkerNeeds | None:
        """Only the clauses none of whose pieces may overlap an id (``piece_may_overlap_id``), so
        that a line's skeleton, with the node put back, holds them when the line does; None when
        a rule is left with none."""
        rules = []
        for clauses, folded in self.rules:
            kept = tuple(c for c in clauses if not any(piece_may_overlap_id(p, node) for p, _ in c))
            if not kept:
                return None
            rules.append((kept, folded))
        return MarkerNeeds(tuple(rules))

    def may_match(self, text: str, zeroed: bool = False) -> bool:
        """Whether ``text`` holds what some rule needs (its digit-zeroed pieces when ``zeroed``);
        casefolded pieces count on ASCII text only: any other text may match."""
        if not text.isascii():
            return True
        if self.first[zeroed].search(text) is None:
            return False
        lower = text.lower()
        for clauses, folded in self.rules:
            seen = lower if folded else text
            if all(any(piece[zeroed] in seen for piece in clause) for clause in clauses):
                return True
        return False


def _any_piece_re(rules: tuple, zeroed: int):
    """One regex for every rule's first-clause pieces (case-insensitive where the rule is)."""
    alternatives = {f"(?i:{re.escape(p[zeroed])})" if folded else re.escape(p[zeroed])
                    for clauses, folded in rules for p in clauses[0]}
    return re.compile("|".join(sorted(alternatives)) or "(?!)")


def piece_may_overlap_id(piece: str, node: str | None) -> bool:
    """Whether an occurrence of ``piece`` in a line could overlap a uuid or hex id that the scanner
    masks (then the line's skeleton may lack the piece although the line has it).

    An id is a word (``\b`` on both sides) of id characters. A piece that overlaps one without
    holding it whole starts with the id's end: a run of id characters, then a non-word character
    or the node name (which the scanner replaces with "<NODE>" before it looks for ids) -- or ends
    with the id's start, likewise. A whole id holds ``0x`` or 8 hex digits in a row.
    Conservative: True when unsure."""
    if ID_INSIDE_RE.search(piece):
        return True
    n = len(piece)
    lead = n - len(piece.lstrip(ID_CHAR_STR))
    trail = n - len(piece.rstrip(ID_CHAR_STR))
    if lead == n:
        return True
    # an id may end after any character of the leading run: "-" (a non-word character) or the
    # node name may follow it there; after the whole run, any non-word character may
    if lead and ("-" in piece[:lead] or not _is_word_char(piece[lead])
                 or any(_node_at_start(piece[k:], node) for k in range(1, lead + 1))):
        return True
    if trail and ("-" in piece[n - trail:] or not _is_word_char(piece[n - trail - 1])
                  or any(_node_at_end(piece[:k], node) for k in range(n - trail, n))):
        return True
    return False


def _node_at_start(text: str, node: str | None) -> bool:
    """Whether ``text`` could begin where the node name begins (it is in it, or it starts with it)."""
    return bool(node) and (node.startswith(text) or text.startswith(node))


def _node_at_end(text: str, node: str | None) -> bool:
    return bool(node) and (node.endswith(text) or text.endswith(node))


def _is_word_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "_")


def _hex_re2() -> str:
    """``HEX_RULE_PY`` without lookaheads: a whole hex word of 8+ chars with a digit and a letter,
    spelled out by the length k of its leading run of one kind (RE2 has no lookahead)."""
    d, a, h = "[0-9]", "[a-fA-F]", "[0-9a-fA-F]"
    branches = []
    for k in range(1, 8):
        branches.append(f"{d}{{{k}}}{a}{h}{{{7 - k},}}")
        branches.append(f"{a}{{{k}}}{d}{h}{{{7 - k},}}")
    branches += [f"{d}{{8,}}{a}{h}*", f"{a}{{8,}}{d}{h}*"]
    return r"\b0x[0-9a-fA-F]+\b|\b(?:" + "|".join(branches) + r")\b"


RE2_REWRITES = {HEX_RULE_PY: _hex_re2()}
ASCII_SPACE_RUN = r"[\t\n\x0b\x0c\r\x1c-\x1f ]+"
ASCII_SPACE_RUN_NOT_NL = r"[\t\x0b\x0c\r\x1c-\x1f ]+"


# Escapes a pattern may use and still never match a line end nor look past one: then running it
# over many lines joined by "\n" (multi-line mode) masks each line exactly as on its own.
LINE_LOCAL_ESCAPES_RE = re.compile(r"\\[dbBwS.\[\](){}+*?|^$\-/:<>_#%&=!,;@~'\"` \\]")
NOT_LINE_LOCAL_RE = re.compile(r"\\|\[\^|\[:|\(\?[a-zA-Z]*s|\(\?<?[=!]|[\x00-\x1f]")


def line_local(pattern: str, replacement: str) -> bool:
    """Whether a mask step can run over lines joined by ``\n`` (see LINE_LOCAL_ESCAPES_RE).

    Conservative: whitespace, negated and POSIX classes, other escapes, DOTALL, lookarounds (they
    would see the neighbouring line's ``\n`` instead of the text's edge) and control characters
    all say no.
    """
    if "\n" in replacement:
        return False
    return not NOT_LINE_LOCAL_RE.search(LINE_LOCAL_ESCAPES_RE.sub("", pattern))


class BulkMasker:
    """``Masker.key(text, None)`` over many texts at once: RE2 (Arrow) for ASCII texts and rules it
    can take (or has an equivalent rewrite for), Python ``re`` for the rest.

    When every step is line-local the texts are masked as one ``\n``-joined string (one RE2 pass
    per rule instead of one per rule and text: most of the cost was per text)."""

    def __init__(self, masker) -> None:
        self.masker = masker
        self.steps = []
        self.arrow = pa is not None
        if not self.arrow:
            self.joined = False
            return
        for compiled, replacement in masker.steps:
            src = compiled.pattern
            re2 = RE2_REWRITES.get(src, src)
            try:
                if "\\" in replacement:
                    raise ValueError("replacement with escapes")
                pc.replace_substring_regex(pa.array(["probe 1"]), pattern=re2, replacement=replacement)
                self.steps.append(("re2", re2, replacement))
            except Exception:
                self.steps.append(("py", compiled, replacement))
        self.joined = all(line_local(p if k == "re2" else p.pattern, r) for k, p, r in self.steps)

    def keys(self, texts: list) -> list:
        key = self.masker.key
        if not self.arrow or len(texts) < 32:
            return [key(t, None) for t in texts]
        if self.joined:
            blob = "\n".join(texts)
            if blob.isascii() and blob.count("\n") == len(texts) - 1:
                return self._joined_keys(blob)
        arr = pa.array(texts, pa.string())
        ascii_ = pc.string_is_ascii(arr).to_numpy(zero_copy_only=False)
        if not ascii_.all():
            out = [None] * len(texts)
            idx = np.nonzero(ascii_)[0]
            done = self.keys([texts[i] for i in idx]) if len(idx) else []
            for i, k in zip(idx, done):
                out[i] = k
            for i in np.nonzero(~ascii_)[0]:
                out[i] = key(texts[i], None)
            return out
        for kind, pattern, replacement in self.steps:
            if kind == "re2":
                arr = pc.replace_substring_regex(arr, pattern=pattern, replacement=replacement)
            else:
                arr = pa.array([pattern.sub(replacement, t) for t in arr.to_pylist()], pa.string())
        arr = pc.replace_substring_regex(arr, pattern=ASCII_SPACE_RUN, replacement=" ")
        arr = pc.utf8_trim(arr, characters=" ")
        arr = pc.utf8_slice_codeunits(arr, 0, MAX_KEY_CHARS)
        return arr.to_pylist()

    def _joined_keys(self, blob: str) -> list:
        """Keys of the ASCII lines of ``blob``, masked together (each step line-local, multi-line mode)."""
        for kind, pattern, replacement in self.steps:
            if kind == "re2":
                arr = pc.replace_substring_regex(pa.array([blob], pa.large_string()), pattern="(?m)" + pattern,
                                                 replacement=replacement)
                blob = arr[0].as_py()
            else:  # compiled with re.MULTILINE by Masker
                blob = pattern.sub(replacement, blob)
        # Masker's \s+ -> " " and strip, per line: ASCII whitespace but the separating \n
        arr = pc.replace_substring_regex(pa.array([blob], pa.large_string()), pattern=ASCII_SPACE_RUN_NOT_NL,
                                         replacement=" ")
        arr = pc.replace_substring_regex(arr, pattern=r"(?m)^ | $", replacement="")
        keys = arr[0].as_py().split("\n")
        if max(map(len, keys)) > MAX_KEY_CHARS:
            keys = [k[:MAX_KEY_CHARS] for k in keys]
        return keys


# --- timestamps in bulk --------------------------------------------------------------------------

MONTH_NAMES = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
_FIRST_OK = np.zeros(256, dtype=bool)
for _c in b"0123456789[(IWEFJMASOND":
    _FIRST_OK[_c] = True
_FIRST_OK[128:] = True  # non-ASCII first character: str.isdigit may be true, let the parser decide
_IS_DIGIT = np.zeros(256, dtype=bool)
_IS_DIGIT[48:58] = True
_MONTHS3 = np.array([int.from_bytes(m.encode(), "big") for m in MONTH_NAMES], dtype=np.int64)
WIDTH = 28
# ISO layout "YYYY-MM-DD?HH:MM:SS" (? one of "T _"): which columns are digits and which are fixed
_ISO_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
_ISO_FIXED_COLS = [4, 7, 13, 16]
_ISO_FIXED_BYTES = np.frombuffer(b"--::", dtype=np.uint8)
_ISO_SEP = np.zeros(256, dtype=bool)
_ISO_SEP[list(b"T _")] = True
_BRACKET = np.zeros(256, dtype=bool)
_BRACKET[list(b"[(")] = True
_LETTER = np.zeros(256, dtype=bool)
_LETTER[list(b"IWEFJMASOND")] = True
_GLOG = np.zeros(256, dtype=bool)
_GLOG[list(b"IWEF")] = True
_FRAC_WEIGHTS = 10 ** np.arange(5, -1, -1, dtype=np.int64)
_POW10 = 10 ** np.arange(7, dtype=np.int64)


class BulkTimes:
    """``TimestampParser.parse`` over a block of lines at once (numpy over the raw bytes).

    Lines whose leading timestamp has the plain ISO layout (optionally after ``[`` or ``(``) are
    computed column-wise; any other line that ``TS_RE`` could match (glog, syslog, ``name]:[``
    prefixes, non-ASCII starts, odd layouts) goes through the stream's ``TimestampParser`` with the
    year that the parser would have carried to it.
    """

    def compute(self, texts: list, parser: TimestampParser, raw: bytes | None = None) -> np.ndarray:
        n = len(texts)
        if raw is None:
            raw = ("\n".join(texts) + "\n").encode("utf-8")
        buf = np.frombuffer(raw, dtype=np.uint8)
        nl = np.flatnonzero(buf == 10)
        if len(nl) != n:  # pragma: no cover - defensive: the block does not split as expected
            return self._python(texts, parser)
        starts = np.empty(n, dtype=np.int64)
        starts[0] = 0
        starts[1:] = nl[:-1] + 1
        padded = np.concatenate([buf, np.zeros(WIDTH, dtype=np.uint8)])
        # the first WIDTH bytes of every line (bytes past a line's newline are the next line's, but
        # every test below needs a contiguous run of non-newline bytes from the start, so they never
        # count), copied row by row from a sliding-window view of the block
        w = as_strided(padded, shape=(len(buf) + 1, WIDTH), strides=(1, 1), writeable=False)[starts]
        first = w[:, 0]
        bracket = _BRACKET[first]
        shifted = w[:, :-1]
        if bracket.any():
            shifted = shifted.copy()
            shifted[bracket] = w[bracket, 1:]
        first_ok = _FIRST_OK[first]
        digits = shifted[:, :26] - np.uint8(48)  # wraps: any non-digit byte becomes >= 10
        is_digit = digits < 10
        iso = first_ok & is_digit[:, _ISO_DIGITS].all(axis=1)
        iso &= (shifted[:, _ISO_FIXED_COLS] == _ISO_FIXED_BYTES).all(axis=1) & _ISO_SEP[shifted[:, 10]]
        # lines the regex could still match some other way: to the parser
        maybe = first_ok & ~iso
        letter = _LETTER[first]
        if letter.any():
            glog_like = _GLOG[first] & _IS_DIGIT[w[:, 1]]
            head3 = (w[:, 0].astype(np.int64) << 16) | (w[:, 1].astype(np.int64) << 8) | w[:, 2]
            month_like = letter & np.isin(head3, _MONTHS3) & (w[:, 3] == 32)
            maybe &= ~letter | glog_like | month_like
        pos = _colon_brackets(buf)
        if len(pos):
            lines_with = np.unique(np.searchsorted(starts, pos, side="right") - 1)
            flag = np.zeros(n, dtype=bool)
            flag[lines_with] = True
            maybe |= flag & first_ok
            iso &= ~flag  # "x]:[YYYY-..." is not the plain layout
        out = np.full(n, np.nan)
        if iso.any():
            num = digits.astype(np.int64)
            y = num[:, 0] * 1000 + num[:, 1] * 100 + num[:, 2] * 10 + num[:, 3]
            mo, d, h, mi, sec = (num[:, j] * 10 + num[:, j + 1] for j in (5, 8, 11, 14, 17))
            sep = shifted[:, 19]
            has_frac = ((sep == ord(".")) | (sep == ord(","))) & is_digit[:, 20]
            # up to 6 fraction digits: the run of digits after the separator, read as an integer
            run = np.logical_and.accumulate(is_digit[:, 20:26], axis=1) & has_frac[:, None]
            flen = run.sum(axis=1)
            fval = (np.where(run, num[:, 20:26], 0) * _FRAC_WEIGHTS).sum(axis=1) // _POW10[6 - flen]
            # as TimestampParser: impossible dates and years no real log has are no time
            valid = iso & (y >= 1970) & (y <= 2200) & (mo >= 1) & (mo <= 12) & (d >= 1) & (d <= 31) & (h < 24)
            days = _days_from_civil(y, np.clip(mo, 1, 12)) + d - 1
            base = (((days * 24 + h) * 60 + mi) * 60 + sec).astype(np.float64)
            frac = np.where(flen > 0, fval / np.power(10.0, flen), 0.0)
            vals = base + frac
            out[valid] = vals[valid]
        else:
            y = None
        return self.resolve(out, iso, maybe, y, texts, parser)

    @staticmethod
    def resolve(out: np.ndarray, iso: np.ndarray, maybe: np.ndarray, y: np.ndarray | None, texts, parser: TimestampParser) -> np.ndarray:
        """Complete ``out`` (times of the plain ISO lines) with the parser's times of the ``maybe`` lines.

        ``iso`` says which lines have the plain ISO layout and ``y`` their years: the parser takes
        its year from the last full date before each line it parses, and keeps the last one after.
        """
        rows = np.arange(len(out))
        hard = np.flatnonzero(maybe)
        iso_idx = np.flatnonzero(iso)
        if len(hard):
            last_iso = np.where(iso, rows, -1)
            np.maximum.accumulate(last_iso, out=last_iso)
            hard_iso_at, hard_iso_year = -1, parser.year
            carried = parser.year
            parse = parser.parse
            for i in hard.tolist():
                li = int(last_iso[i - 1]) if i > 0 else -1
                if li > hard_iso_at:
                    parser.year, parser.year_guessed = int(y[li]), False
                elif hard_iso_at >= 0:
                    parser.year = hard_iso_year
                else:
                    parser.year = carried
                before = parser.year
                t = parse(texts[i])
                if parser.year != before or _sets_year(texts[i]):
                    hard_iso_at, hard_iso_year = i, parser.year
                if t is not None:
                    out[i] = t
            if hard_iso_at >= 0 and (not len(iso_idx) or hard_iso_at > iso_idx[-1]):
                parser.year = hard_iso_year
            elif len(iso_idx):
                parser.year, parser.year_guessed = int(y[iso_idx[-1]]), False
            else:
                parser.year = carried if hard_iso_at < 0 else hard_iso_year
        elif len(iso_idx):
            parser.year, parser.year_guessed = int(y[iso_idx[-1]]), False
        return out

    @staticmethod
    def _python(texts: list, parser: TimestampParser) -> np.ndarray:
        parse = parser.parse
        return np.array([np.nan if (t := parse(x)) is None else t for x in texts], dtype=np.float64)


def _colon_brackets(buf: np.ndarray) -> np.ndarray:
    """Offsets of every ``]:[`` in a block (numpy: faster than a bytes search on log text)."""
    at = np.flatnonzero(buf[:-2] == ord("]"))
    return at[(buf[at + 1] == ord(":")) & (buf[at + 2] == ord("["))]


def _sets_year(text: str) -> bool:
    """Whether ``TimestampParser.parse`` takes the year from this line."""
    if not text or not (text[0].isdigit() or text[0] in "[(IWEFJMASOND"):
        return False
    m = TS_RE.match(text)
    return bool(m and m.group("y"))


def _days_from_civil(y: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of the first of month ``m`` of year ``y`` (proleptic Gregorian)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * np.where(m > 2, m - 3, m + 9) + 2) // 5
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


__all__ = ["BulkTimes", "Folder", "digit_invariant", "iter_blocks"]
