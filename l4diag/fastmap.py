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
  finds the few candidate lines; only they go through ``Context.observe`` (in order, with their
  times), and the iteration/stage of any other line is looked up from the changes they made.
* **occurrences** — only the first and the last line of each key per stage run of a block is
  materialised; everything else is a count.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter

import numpy as np

from .context import block_marker_pattern, candidate_lines, marker_re2
from .lines import (
    CONTROL_RE,
    READ_BLOCK,
    TS_RE,
    LineStats,
    TimestampParser,
    _choose_decoder,
    _describe,
    _emit,
    _emit_text,
    _first_line_end,
    _last_line_end,
    _split_long,
    detect_prefix_kind,
    split_prefix,
)
from .mask import MAX_KEY_CHARS, SNIFF_LINES, SlowFolder, _NodeFold
from .model import KeyNodeStats, Occurrence
from .sources import strip_suffixes

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
MAX_SKELETON_CACHE = 1 << 20


def digit_invariant(rules) -> bool:
    """True when no mask rule can tell one ASCII digit from another (so skeletons are safe)."""
    for rule in rules.masks:
        src = rule.pattern.pattern
        src = re.sub(r"\\[dD]|0-9|\{\d+(?:,\d*)?\}|\\\\", "", src)
        if re.search(r"\d", src) or re.search(r"\d", rule.replacement):
            return False
    return True


class _Batch:
    """Lines of one node from one block: texts, their skeletons and line numbers."""

    __slots__ = ("texts", "skels", "linenos", "block")

    def __init__(self, texts, skels, linenos, block) -> None:
        self.texts, self.skels, self.linenos, self.block = texts, skels, linenos, block


class Folder(SlowFolder):
    """Fold streams into a Partial a block at a time (see the module docstring)."""

    def __init__(self, rules, options) -> None:
        super().__init__(rules, options)
        self.skeletons = digit_invariant(rules)
        self.key_cache: dict = {}
        self.marker_re = block_marker_pattern(self.markers)
        self.times = BulkTimes()
        self.bulk_masker = BulkMasker(self.masker)
        self.marker_re2 = marker_re2(self.markers) if pa is not None else None

    # --- reading -------------------------------------------------------------------------------

    def _fold_binary(self, fh, display: str, node: str | None) -> None:
        stats = LineStats()
        acct = self.partial.accounting
        acct.streams += 1
        blocks = iter_blocks(fh, stats, self.options.max_line_bytes)
        if node is None:
            head = []
            n = 0
            for item in blocks:
                head.append(item)
                n += len(item[1])
                if n >= SNIFF_LINES:
                    break
            sample = []
            for item in head:
                sample.extend(item[1] if item[0] == "clean" else [t for _, t in item[1]])
                if len(sample) >= SNIFF_LINES:
                    break
            kind = detect_prefix_kind(sample[:SNIFF_LINES])
            items = _chain(head, blocks)
            if kind is None:
                self._fold_node_blocks(items, display, strip_suffixes(display.rsplit("/", 1)[-1]) or "stdin")
            else:
                self._fold_demux_blocks(items, display, kind)
        else:
            self._fold_node_blocks(blocks, display, node)
        self._account(stats, display)

    def _account(self, stats: LineStats, display: str) -> None:
        acct = self.partial.accounting
        acct.lines_read += stats.read
        acct.lines_parsed += stats.parsed
        acct.bytes_read += stats.bytes
        acct.skipped.update(stats.skipped)
        for w in stats.warnings:
            acct.warnings.append(f"{display}: {w}")
        if stats.invalid_utf8_lines:
            acct.warnings.append(f"{display}: {stats.invalid_utf8_lines} lines had invalid UTF-8 (replaced)")
        if stats.truncated_lines:
            acct.warnings.append(
                f"{display}: {stats.truncated_lines} lines longer than {self.options.max_line_bytes} bytes truncated"
            )
        if stats.read == 0:
            acct.warnings.append(f"{display}: empty")

    def _fold_node_blocks(self, items, display: str, node: str) -> None:
        fold = _NodeFold(node, display)
        local: dict = {}
        nb = node.encode("utf-8") if len(node) >= 3 else None
        for item in items:
            if item[0] == "clean":
                _, texts, first_lineno, raw = item
                if self.skeletons:
                    b = raw.replace(nb, b"<NODE>") if nb is not None and nb in raw else raw
                    skels = b.translate(DIGITS_BYTES).decode("utf-8").split("\n")
                    if len(skels) > len(texts):
                        skels.pop()
                else:
                    skels = self._skeletons(texts, node)
                linenos = range(first_lineno, first_lineno + len(texts))
                self._fold_batch(fold, local, display, _Batch(texts, skels, linenos, None))
            else:
                pairs = item[1]
                texts = [t for _, t in pairs]
                self._fold_batch(
                    fold, local, display, _Batch(texts, self._skeletons(texts, node), [n for n, _ in pairs], None)
                )
        self._finish_local(fold, local, display)

    def _fold_demux_blocks(self, items, display: str, kind: str) -> None:
        folds: dict = {}
        fallback = strip_suffixes(display.rsplit("/", 1)[-1]) or "stdin"
        last = None
        for item in items:
            pairs = zip(range(item[2], item[2] + len(item[1])), item[1]) if item[0] == "clean" else item[1]
            per_node: dict = {}
            for lineno, text in pairs:
                _, node, rest = split_prefix(text, kind)
                if node is None:
                    node, rest = (last or fallback), text
                last = node
                entry = per_node.get(node)
                if entry is None:
                    entry = per_node[node] = ([], [])
                entry[0].append(rest)
                entry[1].append(lineno)
            for node, (texts, linenos) in per_node.items():
                state = folds.get(node)
                if state is None:
                    state = folds[node] = (_NodeFold(node, display), {})
                self._fold_batch(state[0], state[1], display, _Batch(texts, self._skeletons(texts, node), linenos, None))
        for fold, local in folds.values():
            self._finish_local(fold, local, display)

    def _skeletons(self, texts: list, node: str) -> list:
        out = []
        check = len(node) >= 3
        for t in texts:
            if check and node in t:
                t = t.replace(node, "<NODE>")
            out.append(t.translate(DIGITS_STR) if self.skeletons else t)
        return out

    # --- one batch of one node -----------------------------------------------------------------

    def _fold_batch(self, fold: _NodeFold, local: dict, display: str, batch: _Batch) -> None:
        texts, skels, linenos = batch.texts, batch.skels, batch.linenos
        n = len(texts)
        if n == 0:
            return
        base_seq = fold.seq
        fold.seq += n
        arr = pa.array(texts, pa.string()) if pa is not None and n >= 64 else None
        times = self.times.compute(texts, fold.ts, arr)
        stats = fold.stats
        valid = ~np.isnan(times)
        if valid.any():
            if stats.first_time is None:
                stats.first_time = float(times[int(np.argmax(valid))])
            mx = float(np.nanmax(times))
            if stats.last_time is None or mx >= stats.last_time:
                stats.last_time = mx

        # context: only candidate lines are observed; record where iteration/stage changed
        ctx = fold.ctx
        markers = self.markers
        change_at = [-1]
        change_state = [(ctx.iteration, ctx.stage)]
        if arr is not None and self.marker_re2 is not None:
            hit = pc.match_substring_regex(arr, pattern=self.marker_re2).to_numpy(zero_copy_only=False)
            if self.times.last_all_ascii is False:  # RE2 is ASCII-only: non-ASCII lines are candidates
                hit |= ~pc.string_is_ascii(arr).to_numpy(zero_copy_only=False)
            cands = np.nonzero(hit)[0].tolist()
        elif self.marker_re is None:
            cands = range(n)
        else:
            cands = candidate_lines(self.marker_re, "\n".join(texts))
        for i in cands:
            t = times[i]
            before = (ctx.iteration, ctx.stage)
            ctx.observe(texts[i], None if t != t else float(t), base_seq + i + 1, markers, (display, linenos[i]))
            after = (ctx.iteration, ctx.stage)
            if after != before:
                change_at.append(i)
                change_state.append(after)

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
            t = times[i]
            return Occurrence(display, linenos[i], texts[i], base_seq + i + 1, state[0], state[1], None if t != t else float(t))

        key_cache = self.key_cache
        segs = []
        missing = set()
        for a, b, stage in runs:
            seg = skels[a:b] if (a, b) != (0, n) else skels
            counts = Counter(seg)
            missing.update(sk for sk in counts if sk not in key_cache)
            segs.append((a, b, stage, seg, counts))
        if missing:
            if len(key_cache) + len(missing) > MAX_SKELETON_CACHE:
                key_cache.clear()
                missing = {sk for *_, counts in segs for sk in counts}
            missing = list(missing)
            key_cache.update(zip(missing, self.bulk_masker.keys(missing)))
        for a, b, stage, seg, counts in segs:
            last = dict(zip(seg, range(a, b)))
            first = dict(zip(reversed(seg), range(b - 1, a - 1, -1))) if len(counts) < b - a else last
            for sk, c in counts.items():
                key = key_cache[sk]
                e = local.get(key)
                li = last[sk]
                if e is None:
                    fi = first[sk]
                    first_occ = occ(fi)
                    local[key] = [c, first_occ, first_occ if fi == li else occ(li), {stage: c}]
                else:
                    e[0] += c
                    st = e[3]
                    st[stage] = st.get(stage, 0) + c
                    seq = base_seq + li + 1
                    if seq > e[2].seq:
                        e[2] = occ(li)
                    fi = first[sk]
                    if base_seq + fi + 1 < e[1].seq:
                        e[1] = occ(fi)

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
        self._finish(fold, display)


def _chain(head: list, rest):
    yield from head
    yield from rest


# --- reading blocks ------------------------------------------------------------------------------


def iter_blocks(fh, stats: LineStats, max_line_bytes: int):
    """Like ``lines.iter_text_lines``, but a block at a time.

    Yields ``("clean", texts, first_lineno, raw_bytes)`` for a block of plain lines (all parsed)
    and ``("lines", [(lineno, text), ...])`` for anything else (line by line, as the reference).
    """
    lineno = 0
    encoding = None
    pending = b""
    discarding = False
    while True:
        try:
            block = fh.read(READ_BLOCK)
        except (OSError, EOFError, ValueError) as exc:
            stats.warnings.append(f"stream ended early: {_describe(exc)}; kept what was read")
            block = b""
        stats.bytes += len(block)
        if encoding is None and (block or pending):
            encoding = _choose_decoder(pending + block)
        if not block:
            if pending and not discarding:
                lineno += 1
                out = list(_emit(pending, lineno, stats, encoding))
                if out:
                    yield ("lines", out)
            break
        data = pending + block if pending else block
        cut = _last_line_end(data, encoding)
        if cut < 0:
            if len(data) > max_line_bytes:
                if not discarding:
                    lineno += 1
                    stats.truncated_lines += 1
                    out = list(_emit(data[:max_line_bytes], lineno, stats, encoding, truncated=True))
                    if out:
                        yield ("lines", out)
                    discarding = True
                pending = b""
            else:
                pending = data
            continue
        complete, pending = data[: cut + 1], data[cut + 1 :]
        if discarding:
            first_end = _first_line_end(complete, encoding)
            complete = complete[first_end + 1 :]
            discarding = False
        if encoding == "utf-8" and len(complete.translate(None, SLOW_BYTES)) == len(complete) \
                and REPLACEMENT_CHAR_UTF8 not in complete:
            try:
                text = complete.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            if text is not None:
                parts = text.split("\n")
                if parts and parts[-1] == "":
                    parts.pop()
                if parts and "" not in parts and max(map(len, parts)) <= max_line_bytes \
                        and not any(map(str.isspace, parts)):
                    stats.read += len(parts)
                    stats.parsed += len(parts)
                    yield ("clean", parts, lineno + 1, complete)
                    lineno += len(parts)
                    continue
        out = []
        for chunk in _split_long(complete, max_line_bytes, encoding):
            for text_line, truncated in chunk:
                lineno += 1
                if truncated:
                    stats.truncated_lines += 1
                out.extend(_emit_text(text_line, lineno, stats, truncated))
        if out:
            yield ("lines", out)



# --- masking distinct skeletons in bulk ------------------------------------------------------------

HEX_RULE_PY = r"\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"


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


class BulkMasker:
    """``Masker.key(text, None)`` over many texts at once: RE2 (Arrow) for ASCII texts and rules it
    can take (or has an equivalent rewrite for), Python ``re`` for the rest."""

    def __init__(self, masker) -> None:
        self.masker = masker
        self.steps = []
        self.arrow = pa is not None
        if not self.arrow:
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

    def keys(self, texts: list) -> list:
        key = self.masker.key
        if not self.arrow or len(texts) < 32:
            return [key(t, None) for t in texts]
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


# --- timestamps in bulk --------------------------------------------------------------------------

FIRST_CHAR_OK = r"^[0-9\[(IWEFJMASOND]"
MONTH_NAMES = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


class BulkTimes:
    """``TimestampParser.parse`` over a list of lines at once; the parser carries the year."""

    def __init__(self) -> None:
        self.arrow = pa is not None
        if self.arrow:
            try:
                pc.extract_regex(pa.array(["2024-01-01 00:00:00"]), pattern=TS_RE.pattern)
            except Exception:  # pragma: no cover - a TS_RE RE2 cannot take: per line
                self.arrow = False

    last_all_ascii: bool | None = None

    def compute(self, texts: list, parser: TimestampParser, arr=None) -> np.ndarray:
        self.last_all_ascii = None
        if not self.arrow or arr is None:
            return self._python(texts, parser)
        self.last_all_ascii = bool(pc.all(pc.string_is_ascii(arr)).as_py())
        if not self.last_all_ascii:
            return self._python(texts, parser)
        m = pc.extract_regex(arr, pattern=TS_RE.pattern)
        ok = pc.and_(pc.is_valid(m), pc.match_substring_regex(arr, FIRST_CHAR_OK))
        ok = pc.fill_null(ok, False).to_numpy(zero_copy_only=False)
        n = len(texts)
        if not ok.any():
            return np.full(n, np.nan)

        def field(name: str) -> np.ndarray:
            f = pc.fill_null(pc.struct_field(m, name), "")
            return pc.cast(pc.binary_join_element_wise("0", f, ""), pa.int64()).to_numpy()

        def text_field(name: str):
            return pc.fill_null(pc.struct_field(m, name), "")

        y = field("y")
        iso = ok & (pc.not_equal(text_field("y"), "").to_numpy(zero_copy_only=False))
        glog = ok & ~iso & (pc.not_equal(text_field("gmo"), "").to_numpy(zero_copy_only=False))
        sysl = ok & ~iso & ~glog
        # the year in force at each line: its own for a full date, else the last full date's
        idx = np.where(iso, np.arange(n), -1)
        np.maximum.accumulate(idx, out=idx)
        year = np.where(idx >= 0, y[np.maximum(idx, 0)], parser.year)
        if iso.any():
            parser.year = int(y[np.nonzero(iso)[0][-1]])
        mo = np.where(iso, field("mo"), np.where(glog, field("gmo"), 0))
        if sysl.any():
            names = text_field("smon")
            smo = np.zeros(n, dtype=np.int64)
            for i, name in enumerate(MONTH_NAMES, 1):
                smo[pc.equal(names, name).to_numpy(zero_copy_only=False)] = i
            mo = np.where(sysl, smo, mo)
        d = np.where(iso, field("d"), np.where(glog, field("gd"), field("sd")))
        h = np.where(iso, field("h"), np.where(glog, field("gh"), field("sh")))
        mi = np.where(iso, field("mi"), np.where(glog, field("gmi"), field("smi")))
        s = np.where(iso, field("s"), np.where(glog, field("gs"), field("ss")))
        valid = ok & (year >= 1) & (year <= 9999) & (mo >= 1) & (mo <= 12) & (d >= 1) & (d <= 31) & (h < 24)
        days = _days_from_civil(year, np.clip(mo, 1, 12)) + d - 1
        base = ((days * 24 + h) * 60 + mi) * 60 + s
        # fraction: float("0." + frac[:6])
        ftext = pc.if_else(pa.array(iso), text_field("f"), text_field("gf"))
        ftext = pc.if_else(pa.array(sysl), "", ftext)
        f6 = pc.utf8_slice_codeunits(ftext, 0, 6)
        flen = pc.utf8_length(f6).to_numpy(zero_copy_only=False)
        fint = pc.cast(pc.binary_join_element_wise("0", f6, ""), pa.int64()).to_numpy()
        frac = fint / np.power(10.0, flen)
        out = base.astype(np.float64) + np.where(flen > 0, frac, 0.0)
        out[~valid] = np.nan
        return out

    @staticmethod
    def _python(texts: list, parser: TimestampParser) -> np.ndarray:
        parse = parser.parse
        return np.array([np.nan if (t := parse(x)) is None else t for x in texts], dtype=np.float64)


def _days_from_civil(y: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of the first of month ``m`` of year ``y`` (proleptic Gregorian)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * np.where(m > 2, m - 3, m + 9) + 2) // 5
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


__all__ = ["BulkTimes", "Folder", "digit_invariant", "iter_blocks"]
