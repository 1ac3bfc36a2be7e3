"""Turn bytes into clean text lines, with every line accounted for.

Bytes are decoded as UTF-8 with replacement (UTF-16 with a BOM is recognised), ANSI escapes and
control characters are removed, lone ``\\r`` (progress bars) ends a line, and lines longer than a
cap are truncated without ever being held whole in memory. Also here: leading timestamps and the
per-line node prefixes of combined files (pdsh ``host: ``, ``srun -l`` ``N: ``, ``[rankN]:``).
"""

from __future__ import annotations

import calendar
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

DEFAULT_MAX_LINE_BYTES = 1 << 20
READ_BLOCK = 1 << 22

ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
# C0 and C1 controls (tab kept), DEL, and the Unicode bidi overrides/isolates that can reorder what a reader sees.
CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
BINARY_THRESHOLD = 0.3
NUL_RUN_RE = re.compile(rb"\x00+")


@dataclass
class LineStats:
    """Counts for one stream: ``read = parsed + sum(skipped)``.

    Lines longer than the cap are parsed (their head) and also counted in ``truncated_lines``.
    ``incomplete`` names why the stream was not read to its end (``truncated_stream``,
    ``decompression_cap``), or is None.
    """

    read: int = 0
    parsed: int = 0
    bytes: int = 0
    skipped: Counter = field(default_factory=Counter)
    invalid_utf8_lines: int = 0
    truncated_lines: int = 0
    nul_bytes: int = 0
    encoding: str | None = None
    incomplete: str | None = None
    warnings: list = field(default_factory=list)

    def add(self, more: LineStats) -> None:
        """Count ``more``, the next part of the same stream (a chunk: see chunks.py), in."""
        self.read += more.read
        self.parsed += more.parsed
        self.bytes += more.bytes
        self.skipped.update(more.skipped)
        self.invalid_utf8_lines += more.invalid_utf8_lines
        self.truncated_lines += more.truncated_lines
        self.nul_bytes += more.nul_bytes
        self.encoding = self.encoding or more.encoding
        self.incomplete = more.incomplete or self.incomplete
        self.warnings.extend(more.warnings)


def iter_text_lines(fh: BinaryIO, stats: LineStats, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator:
    """Yield ``(line_number, text)`` for every non-skipped line of a binary stream.

    Never raises on bad data: a read error (truncated or corrupt compressed stream, a size cap)
    ends the stream with a warning and everything read before it is kept. Memory is bounded by
    ``max_line_bytes`` plus one read block, however long a line is.
    """
    lineno = 0
    for kind, data in iter_line_chunks(fh, stats, max_line_bytes):
        if kind == "lines":
            for text_line, truncated in _split_long(data, max_line_bytes):
                lineno += 1
                if truncated:
                    stats.truncated_lines += 1
                yield from _emit_text(text_line, lineno, stats, truncated)
        else:
            lineno += 1
            if kind == "long":
                stats.truncated_lines += 1
            yield from _emit(data, lineno, stats, truncated=kind == "long")


def iter_line_chunks(fh: BinaryIO, stats: LineStats, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator:
    """The line structure of a stream, a block at a time, for readers that split lines themselves.

    Yields ``("lines", bytes)`` for a run of complete lines (each ending in ``\n`` or ``\r``),
    ``("long", head)`` for the first ``max_line_bytes`` of an over-long line (the rest is skipped),
    and ``("tail", bytes)`` for a last line without a line end.
    """
    max_line_bytes = max(int(max_line_bytes), 1)
    pending = bytearray()
    discarding = False  # inside an over-long line whose head was already emitted
    after_cr = False  # the previous block ended with \r: a leading \n belongs to it
    for block in _utf8_blocks(fh, stats):
        if after_cr and block[:1] == b"\n":
            block = block[1:]
        after_cr = block[-1:] == b"\r"
        if not block:
            continue
        if discarding:
            end = _first_line_end(block)
            if end < 0:
                continue
            if block[end : end + 2] == b"\r\n":
                end += 1
            block = block[end + 1 :]
            discarding = False
            if not block:
                continue
        cut = max(block.rfind(b"\n"), block.rfind(b"\r"))
        if cut < 0:
            if len(pending) + len(block) > max_line_bytes:
                pending += block[: max_line_bytes - len(pending) + 1]
                yield "long", bytes(pending[:max_line_bytes])
                pending = bytearray()
                discarding = True
            else:
                pending += block
            continue
        if pending:
            complete = b"".join((pending, memoryview(block)[: cut + 1]))  # one copy of the block, not three
        else:
            complete = block[: cut + 1]
        rest = block[cut + 1 :]
        yield "lines", complete
        if len(rest) > max_line_bytes:
            yield "long", rest[:max_line_bytes]
            pending = bytearray()
            discarding = True
        else:
            pending = bytearray(rest)
    if pending and not discarding:
        yield "tail", bytes(pending)


def _read_blocks(fh: BinaryIO, stats: LineStats) -> Iterator:
    """Raw blocks of a stream; any read error ends it with a warning (what was read is kept)."""
    # read1 returns what one underlying read produced, so a truncated compressed stream loses
    # at most one decompressor chunk, not a whole block.
    read = getattr(fh, "read1", None) or fh.read
    while True:
        try:
            block = read(READ_BLOCK)
        except Exception as exc:  # noqa: BLE001 - any decompressor or I/O error: keep what was read
            reason = getattr(exc, "reason", None)
            if reason:
                stats.incomplete = reason
                stats.warnings.append(f"{exc}")
            else:
                stats.incomplete = "truncated_stream"
                stats.warnings.append(f"stream ended early: {_describe(exc)}; kept what was read")
            return
        if not block:
            return
        stats.bytes += len(block)
        yield bytes(block)


def _utf8_blocks(fh: BinaryIO, stats: LineStats) -> Iterator:
    """UTF-8-ish blocks: UTF-16 is transcoded, runs of NUL bytes (disk-full padding) become line breaks."""
    blocks = _read_blocks(fh, stats)
    first = next(blocks, b"")
    encoding = _choose_decoder(first)
    stats.encoding = encoding
    if encoding != "utf-8":
        blocks = _transcode(first, blocks, encoding)
    else:
        blocks = _chain_one(first, blocks)
    for block in blocks:
        if b"\x00" in block:
            stats.nul_bytes += block.count(b"\x00")
            block = NUL_RUN_RE.sub(b"\n", block)
        yield block


def _chain_one(first: bytes, rest: Iterator) -> Iterator:
    if first:
        yield first
    yield from rest


def _transcode(first: bytes, rest: Iterator, encoding: str) -> Iterator:
    import codecs

    decoder = codecs.getincrementaldecoder(encoding)("replace")
    if first[:2] in (b"\xff\xfe", b"\xfe\xff"):
        first = first[2:]
    for block in _chain_one(first, rest):
        yield decoder.decode(block).encode("utf-8", "replace")
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail.encode("utf-8", "replace")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _choose_decoder(head: bytes) -> str:
    sample = head[:4096]
    # A BOM counts when the text after it looks like UTF-16 (logs are mostly ASCII: many NULs);
    # binary garbage that happens to start with \xff\xfe stays UTF-8 and is skipped as binary.
    bom_ok = len(sample) < 16 or sample.count(0) > 0.2 * len(sample)
    if head.startswith(b"\xff\xfe") and bom_ok:
        return "utf-16-le"
    if head.startswith(b"\xfe\xff") and bom_ok:
        return "utf-16-be"
    if len(sample) >= 16:
        # UTF-16 without a BOM: ASCII text has a NUL in every other byte, on one side only.
        even, odd = sample[0::2], sample[1::2]
        zeros_even, zeros_odd = even.count(0), odd.count(0)
        if zeros_odd > 0.7 * len(odd) and zeros_even < 0.1 * len(even):
            return "utf-16-le"
        if zeros_even > 0.7 * len(even) and zeros_odd < 0.1 * len(odd):
            return "utf-16-be"
    return "utf-8"


def _first_line_end(data: bytes) -> int:
    ends = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
    return min(ends) if ends else -1


def _split_long(complete: bytes, max_line_bytes: int) -> list:
    """Decode a block of complete lines; truncate any line over the cap."""
    text = complete.decode("utf-8", "replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    parts = text.split("\n")
    if parts and parts[-1] == "":
        parts.pop()
    quarter = max_line_bytes // 4  # a line of fewer characters cannot exceed the cap in UTF-8 bytes
    if max(map(len, parts), default=0) <= quarter:
        return [(part, False) for part in parts]
    return [_cap_text(part, max_line_bytes) if len(part) > quarter else (part, False) for part in parts]


def _cap_text(part: str, max_line_bytes: int) -> tuple:
    """Cut a decoded line to at most ``max_line_bytes`` UTF-8 bytes, on a character boundary."""
    raw = part.encode("utf-8", "surrogatepass")
    if len(raw) <= max_line_bytes:
        return part, False
    return raw[:max_line_bytes].decode("utf-8", "ignore"), True


def _emit(data: bytes, lineno: int, stats: LineStats, truncated: bool = False) -> Iterator:
    text = data.decode("utf-8", "replace").replace("\r", " ").replace("\n", " ")
    if truncated and text.endswith("\ufffd") and len(text) > 1:
        text = text[:-1]  # the cut fell inside a multi-byte character
    yield from _emit_text(text, lineno, stats, truncated)


def _emit_text(text: str, lineno: int, stats: LineStats, truncated: bool) -> Iterator:
    stats.read += 1
    if "\ufffd" in text:
        stats.invalid_utf8_lines += 1
        if text.count("\ufffd") > BINARY_THRESHOLD * max(len(text), 1):
            stats.skipped["binary"] += 1
            return
    if "\x1b" in text:
        text = ANSI_RE.sub("", text)
    cleaned = CONTROL_RE.sub("", text) if CONTROL_RE.search(text) else text
    if not cleaned.strip():
        stats.skipped["blank" if len(cleaned) == len(text) else "binary"] += 1
        return
    if _looks_binary(cleaned, text):
        stats.skipped["binary"] += 1
        return
    stats.parsed += 1
    yield lineno, cleaned


def account_stream(acct, stats: LineStats, display: str, max_line_bytes: int) -> None:
    """Add one stream's LineStats to the run's Accounting, with its warnings."""
    acct.lines_read += stats.read
    acct.lines_parsed += stats.parsed
    acct.bytes_read += stats.bytes
    acct.skipped.update(stats.skipped)
    acct.lines_truncated += stats.truncated_lines
    for w in stats.warnings:
        acct.warnings.append(f"{display}: {w}")
    if stats.incomplete:
        acct.streams_incomplete[stats.incomplete] += 1
    if stats.invalid_utf8_lines:
        acct.warnings.append(f"{display}: {stats.invalid_utf8_lines} lines had invalid UTF-8 (replaced)")
    if stats.nul_bytes:
        acct.warnings.append(f"{display}: {stats.nul_bytes} NUL bytes (disk-full padding?) read as line breaks")
    if stats.truncated_lines:
        acct.warnings.append(
            f"{display}: {stats.truncated_lines} lines longer than {max_line_bytes} bytes truncated"
        )
    if stats.read == 0 and stats.incomplete:
        pass  # nothing came out before the stream broke: counted in streams_incomplete, warned above
    elif stats.read == 0:
        if stats.bytes == 0:
            acct.warnings.append(f"{display}: empty")
            acct.inputs_skipped["empty"] += 1
        else:
            acct.warnings.append(f"{display}: no lines ({stats.bytes} bytes of NULs or line breaks)")
            acct.inputs_skipped["no_lines"] += 1
    elif stats.parsed == 0:
        acct.warnings.append(f"{display}: no usable lines ({stats.read} read, all skipped)")
        acct.inputs_skipped["unusable"] += 1


COLLAPSE_MIN = 3
COLLAPSE_SHOW = 5


def collapse_warnings(warnings: list) -> list:
    """Merge warnings that say the same thing about different streams into one.

    ``"<stream>: <message>"`` warnings whose message repeats at least ``COLLAPSE_MIN`` times
    become ``"<message> (128 streams: a, b, c, d, e, … and 123 more)"``, at the place of the first.
    """
    # Warnings quote names and exception texts from the input: never let them carry control characters.
    warnings = [w if w.isprintable() else "".join(ch if ch.isprintable() else "?" for ch in w) for w in warnings]
    groups: dict = {}
    for index, w in enumerate(warnings):
        where, sep, message = w.partition(": ")
        if sep and where:
            groups.setdefault(message, []).append(index)
    out = []
    done = set()
    for index, w in enumerate(warnings):
        if index in done:
            continue
        where, sep, message = w.partition(": ")
        members = groups.get(message, []) if sep and where else []
        if len(members) < COLLAPSE_MIN:
            out.append(w)
            continue
        names = [warnings[i].partition(": ")[0] for i in members]
        shown = ", ".join(names[:COLLAPSE_SHOW])
        more = f", … and {len(names) - COLLAPSE_SHOW} more" if len(names) > COLLAPSE_SHOW else ""
        out.append(f"{message} ({len(names)} streams: {shown}{more})")
        done.update(members)
    return out


def no_usable_input_message(acct) -> str:
    """One line saying why nothing could be used."""
    reasons = dict(acct.inputs_skipped)
    reasons.update({f"{k} (read in part)": v for k, v in acct.streams_incomplete.items()})
    if acct.lines_read:
        reasons.update({f"lines {k}": v for k, v in acct.skipped.items()})
    why = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())) or "no input lines"
    first = acct.warnings[0] if acct.warnings else ""
    text = f"no usable log lines in the input ({why})" + (f"; first problem: {first}" if first else "")
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:1000]


def _looks_binary(cleaned: str, original: str) -> bool:
    removed = len(original) - len(cleaned)
    return removed > 8 and removed > BINARY_THRESHOLD * len(original)


# --- timestamps -------------------------------------------------------------------------------

TS_RE = re.compile(
    r"^[\[(]?(?:\w+\]:\[)?(?:[A-Za-z_]\w{0,15}\] |[A-Z]{4,8}\|[\w./-]{1,80}:\d{1,6}\] )?(?:"  # [rank0]:[titan] 2025-..., [INFO|trainer.py:3410] 2025-...
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})[T _](?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})(?:[.,](?P<f>\d+))?(?:Z|[+-]\d{2}:?\d{2}\b)?"
    r"|[IWEF](?P<gmo>\d{2})(?P<gd>\d{2}) (?P<gh>\d{2}):(?P<gmi>\d{2}):(?P<gs>\d{2})\.(?P<gf>\d+)"
    r"|(?P<smon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +(?P<sd>\d{1,2}) (?P<sh>\d{2}):(?P<smi>\d{2}):(?P<ss>\d{2})"
    r")"
)
MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}


class TimestampParser:
    """Parse a leading timestamp; years missing from glog/syslog come from the stream's last full one.

    ``guessed``: ``year`` is a guess (a chunk of a stream, chunks.py) until the first full date;
    ``needs_year`` tells whether a yearless timestamp was read with the guess."""

    def __init__(self, year: int = 2000, guessed: bool = False) -> None:
        self.year = year
        self.year_guessed = guessed
        self.needs_year = False
        self.end = 0  # length of the timestamp prefix of the last line parsed (0 when none)
        self._cache_key: tuple = ()  # the whole date and time to the second: a prefix before it cannot alias
        self._cache_val = 0.0

    def parse(self, text: str) -> float | None:
        self.end = 0
        if not text or not (text[0].isdigit() or text[0] in "[(IWEFJMASOND"):
            return None
        m = TS_RE.match(text)
        if m is None:
            return None
        self.end = m.end()
        g = m.groupdict()
        if g["y"]:
            self.year = int(g["y"])
            self.year_guessed = False
            return self._epoch(
                (self.year, g["mo"], g["d"], g["h"], g["mi"], g["s"]), self.year, g["mo"], g["d"], g["h"], g["mi"], g["s"], g["f"]
            )
        if self.year_guessed:
            self.needs_year = True
        if g["gmo"]:
            key = (self.year, g["gmo"], g["gd"], g["gh"], g["gmi"], g["gs"])
            return self._epoch(key, self.year, g["gmo"], g["gd"], g["gh"], g["gmi"], g["gs"], g["gf"])
        key = (self.year, g["smon"], g["sd"], g["sh"], g["smi"], g["ss"])
        return self._epoch(key, self.year, MONTHS[g["smon"]], g["sd"], g["sh"], g["smi"], g["ss"], None)

    def _epoch(self, key, year, mo, d, h, mi, s, frac) -> float | None:
        if key != self._cache_key:
            try:
                base = calendar.timegm((int(year), int(mo), int(d), int(h), int(mi), int(s), 0, 0, 0))
            except (ValueError, OverflowError):
                return None
            if not (1 <= int(mo) <= 12 and 1 <= int(d) <= 31 and int(h) < 24 and 1970 <= int(year) <= 2200):
                return None  # also years no real log has: they would break time arithmetic and rendering
            self._cache_key, self._cache_val = key, float(base)
        return self._cache_val + (float("0." + frac[:6]) if frac else 0.0)


def line_body(text: str) -> str:
    """The line after its leading timestamp (and the ``[rankN]:`` tag glued to it), as markers and rules
    that anchor on where the message starts see it (``SlowFolder`` cuts at ``TimestampParser.end``)."""
    m = TS_RE.match(text) if text and (text[0].isdigit() or text[0] in "[(IWEFJMASOND") else None
    return text[m.end():].lstrip(" ]") if m else text


# --- combined files: per-line node prefixes ---------------------------------------------------

PREFIX_RE = re.compile(
    r"^(?:"
    r"\[(?P<tag>default|rank)(?P<tagn>\d+)\]:"  # torchrun --tee / PyTorch >= 2.2
    r"|\[(?P<hostr>[A-Za-z][\w.-]*):(?P<hostrn>\d+)\]:"  # torchrun --role $(hostname -s):
    r"|\[(?P<bn>\d+)\]:"  # NeMo/SLURM task label
    r"|\s*(?P<srun>\d+): "  # srun --label
    r"|(?P<host>(?=[\w.-]*[\d.-])[A-Za-z0-9][\w.-]*[A-Za-z0-9]): "  # pdsh / DeepSpeed launcher
    r")"
)
NOT_HOSTS = re.compile(r"(?i).*(?:error|exception|warning|warn|info|debug|fatal|critical|traceback|note|http|https)$")
DEMUX_MIN_SHARE = 0.6


def detect_prefix_kind(sample_lines: list) -> str | None:
    """Decide whether a stream is a combined file, and which prefix family it uses."""
    kinds: Counter = Counter()
    values: dict = {}
    nonblank = 0
    for line in sample_lines:
        if not line.strip():
            continue
        nonblank += 1
        kind, node = split_prefix(line, None)[:2]
        if kind:
            kinds[kind] += 1
            values.setdefault(kind, set()).add(node)
    if not kinds or nonblank == 0:
        return None
    kind, count = kinds.most_common(1)[0]
    if count < DEMUX_MIN_SHARE * nonblank:
        return None
    if kind == "host" and len(values[kind]) < 2:
        return None
    return kind


def split_prefix(line: str, want: str | None) -> tuple:
    """Return ``(kind, node, rest)`` for a prefixed line, or ``(None, None, line)``."""
    m = PREFIX_RE.match(line)
    if m is None:
        return None, None, line
    g = m.groupdict()
    if g["tag"]:
        kind, node = "rank", f"rank{int(g['tagn'])}"
    elif g["hostr"]:
        kind, node = "hostrank", g["hostr"]
    elif g["bn"] is not None:
        kind, node = "rank", f"rank{int(g['bn'])}"
    elif g["srun"] is not None:
        kind, node = "srun", f"rank{int(g['srun'])}"
    else:
        host = g["host"]
        if NOT_HOSTS.match(host) or host.replace(".", "").isdigit() and host.count(".") != 3:
            return None, None, line
        kind, node = "host", host
    if want is not None and kind != want and not (want == "rank" and kind == "srun"):
        return None, None, line
    rest = line[m.end():]
    if rest.startswith(" ") and kind != "host":
        rest = rest[1:]
    return kind, node, rest
