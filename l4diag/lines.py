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
CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
BINARY_THRESHOLD = 0.3


@dataclass
class LineStats:
    """Counts for one stream: ``read = parsed + sum(skipped)``."""

    read: int = 0
    parsed: int = 0
    bytes: int = 0
    skipped: Counter = field(default_factory=Counter)
    invalid_utf8_lines: int = 0
    truncated_lines: int = 0
    warnings: list = field(default_factory=list)


def iter_text_lines(fh: BinaryIO, stats: LineStats, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator:
    """Yield ``(line_number, text)`` for every non-skipped line of a binary stream."""
    decoder = _choose_decoder
    lineno = 0
    encoding = None
    pending = b""
    discarding = False  # inside an over-long line whose head was already emitted
    while True:
        try:
            block = fh.read(READ_BLOCK)
        except (OSError, EOFError, ValueError) as exc:  # truncated or corrupt compressed stream
            stats.warnings.append(f"stream ended early: {_describe(exc)}; kept what was read")
            block = b""
        stats.bytes += len(block)
        if encoding is None and (block or pending):
            encoding = decoder(pending + block)
        if not block:
            if pending and not discarding:
                lineno += 1
                yield from _emit(pending, lineno, stats, encoding)
            break
        data = pending + block if pending else block
        cut = _last_line_end(data, encoding)
        if cut < 0:
            if len(data) > max_line_bytes:
                if not discarding:
                    lineno += 1
                    stats.truncated_lines += 1
                    yield from _emit(data[:max_line_bytes], lineno, stats, encoding, truncated=True)
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
        for chunk in _split_long(complete, max_line_bytes, encoding):
            for text_line, truncated in chunk:
                lineno += 1
                if truncated:
                    stats.truncated_lines += 1
                yield from _emit_text(text_line, lineno, stats, truncated)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _choose_decoder(head: bytes) -> str:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    return "utf-8"


def _last_line_end(data: bytes, encoding: str) -> int:
    if encoding == "utf-16":
        # Cut on an even boundary after a newline code unit.
        idx = max(data.rfind(b"\n\x00"), data.rfind(b"\x00\n"))
        return idx + 1 if idx >= 0 and (idx + 2) % 2 == 0 else (idx + 1 if idx >= 0 else -1)
    return max(data.rfind(b"\n"), data.rfind(b"\r"))


def _first_line_end(data: bytes, encoding: str) -> int:
    ends = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
    return min(ends) if ends else len(data) - 1


def _split_long(complete: bytes, max_line_bytes: int, encoding: str) -> Iterator:
    """Decode a block of complete lines; truncate any line over the cap."""
    text = _decode(complete, encoding)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    parts = text.split("\n")
    if parts and parts[-1] == "":
        parts.pop()
    out = []
    for part in parts:
        if len(part) > max_line_bytes:
            out.append((part[:max_line_bytes], True))
        else:
            out.append((part, False))
    yield out


def _decode(data: bytes, encoding: str) -> str:
    if encoding == "utf-16":
        return data.decode("utf-16", "replace")
    return data.decode("utf-8", "replace")


def _emit(data: bytes, lineno: int, stats: LineStats, encoding: str, truncated: bool = False) -> Iterator:
    text = _decode(data, encoding).replace("\r", " ").replace("\n", " ")
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


def clean_text(text: str) -> str:
    """Remove ANSI escapes and control characters (tabs kept)."""
    if "\x1b" in text:
        text = ANSI_RE.sub("", text)
    if CONTROL_RE.search(text):
        text = CONTROL_RE.sub("", text)
    return text


def _looks_binary(cleaned: str, original: str) -> bool:
    removed = len(original) - len(cleaned)
    return removed > 8 and removed > BINARY_THRESHOLD * len(original)


# --- timestamps -------------------------------------------------------------------------------

TS_RE = re.compile(
    r"^[\[(]?(?:\w+\]:\[)?(?:"
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})[T _](?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})(?:[.,](?P<f>\d+))?"
    r"|[IWEF](?P<gmo>\d{2})(?P<gd>\d{2}) (?P<gh>\d{2}):(?P<gmi>\d{2}):(?P<gs>\d{2})\.(?P<gf>\d+)"
    r"|(?P<smon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +(?P<sd>\d{1,2}) (?P<sh>\d{2}):(?P<smi>\d{2}):(?P<ss>\d{2})"
    r")"
)
MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}


class TimestampParser:
    """Parse a leading timestamp; years missing from glog/syslog come from the stream's last full one."""

    def __init__(self) -> None:
        self.year = 2000
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
            return self._epoch(
                (self.year, g["mo"], g["d"], g["h"], g["mi"], g["s"]), self.year, g["mo"], g["d"], g["h"], g["mi"], g["s"], g["f"]
            )
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
            if not (1 <= int(mo) <= 12 and 1 <= int(d) <= 31 and int(h) < 24):
                return None
            self._cache_key, self._cache_val = key, float(base)
        return self._cache_val + (float("0." + frac[:6]) if frac else 0.0)


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
